"""pyinfra inventory files (*.py) read by pyinfra's own loader into netfix's Inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from netfix.errors import InputError
from netfix.inventory import load_inventory

EXAMPLE = Path(__file__).parents[2] / "examples" / "pyinfra" / "inventory.py"


def write(tmp_path: Path, text: str, name: str = "inventory.py") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_readme_example_gives_groups_data_and_ssh_settings(monkeypatch):
    monkeypatch.setenv("NETFIX_LAB_DIR", "/run/lab-x")
    inv = load_inventory(str(EXAMPLE))
    assert list(inv.hosts) == ["node1", "node2", "node3"]
    node1 = inv.hosts["node1"]
    assert node1.address == "10.251.0.11" and node1.port == 22 and node1.user == "root"
    assert node1.key == "/run/lab-x/id_ed25519"
    assert node1.known_hosts == "/run/lab-x/known_hosts"
    assert node1.strict_host_key_checking == "yes"
    assert node1.profile == "public-vds" and node1.transport == "ssh"
    assert [h.name for h in inv.select("web")] == ["node1", "node2"]
    assert [h.name for h in inv.select("db")] == ["node3"]
    # pyinfra puts every host of inventory.py in the group `inventory` too
    assert [h.name for h in inv.select("inventory:!web")] == ["node3"]


def test_host_data_wins_over_group_data_and_pyinfra_names_map(tmp_path):
    path = write(tmp_path, (
        'web = ([("a", {"ssh_port": 2222, "netfix_profile": "k8s-node"}), "b"],\n'
        '       {"netfix_profile": "public-vds", "ssh_hostname": "10.0.0.9", "_sudo": True,\n'
        '        "ssh_strict_host_key_checking": "accept-new"})\n'))
    inv = load_inventory(path)
    a, b = inv.hosts["a"], inv.hosts["b"]
    assert (a.port, a.profile, b.port, b.profile) == (2222, "k8s-node", 22, "public-vds")
    assert a.address == "10.0.0.9" and a.sudo and a.strict_host_key_checking == "accept-new"


def test_connector_hosts_go_through_pyinfra_and_local_stays_local(tmp_path):
    path = write(tmp_path, 'boxes = ["@docker/web1", "@chroot/srv/root", "@local",\n'
                           '         ("@docker/db", {"transport": "pyinfra"})]\n')
    inv = load_inventory(path)
    assert inv.hosts["@docker/web1"].transport == "pyinfra"
    assert inv.hosts["@chroot/srv/root"].transport == "pyinfra"
    assert inv.hosts["@local"].transport == "local" and inv.hosts["@local"].is_local
    assert [h.name for h in inv.select("boxes:!@local")] == [
        "@docker/web1", "@chroot/srv/root", "@docker/db"]


def test_group_data_directory_is_read_as_pyinfra_does(tmp_path):
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "web.py").write_text('netfix_profile = "k8s-node"\n')
    (tmp_path / "group_data" / "all.py").write_text('ssh_user = "admin"\n')
    inv = load_inventory(write(tmp_path, 'web = ["h1"]\ndb = ["h2"]\n'))
    assert inv.hosts["h1"].profile == "k8s-node" and inv.hosts["h2"].profile is None
    assert inv.hosts["h2"].user == "admin"


@pytest.mark.parametrize(("text", "line", "words"), [
    ('web = ["a"]\n\ndb = [\n', 3, "syntax error"),
    ('web = ["a"]\nx = {}["missing"]\n', 2, "KeyError"),
    ('def f():\n    raise RuntimeError("boom")\n\nweb = ["a"]\nf()\n', 2, "RuntimeError: boom"),
])
def test_bad_inventory_code_names_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_inventory(path)
    assert e.value.file == path and e.value.line == line
    assert words in str(e.value)


def test_bad_known_var_names_host_and_key(tmp_path):
    path = write(tmp_path, 'web = [("a", {"ssh_port": "twenty-two"})]\n')
    with pytest.raises(InputError) as e:
        load_inventory(path)
    assert str(e.value) == f"{path}: a.ssh_port: must be a port number 1-65535, got 'twenty-two'"
    path = write(tmp_path, 'web = [("a", {"transport": "telnet"})]\n', "t.py")
    with pytest.raises(InputError, match="a.transport: must be one of ssh, local, pyinfra"):
        load_inventory(path)


def test_missing_and_empty_inventories_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_inventory(str(tmp_path / "nope.py"))
    with pytest.raises(InputError, match="defines no hosts"):
        load_inventory(write(tmp_path, "x = 1\n_hidden = ['a']\n"))


def test_the_readme_shows_the_example_files_verbatim():
    readme = (EXAMPLE.parents[2] / "README.md").read_text()
    for name in ("deploy.py", "inventory.py"):
        code = (EXAMPLE.parent / name).read_text().split('"""', 2)[2].lstrip("\n")
        assert f"```python\n# {name}\n{code}```" in readme, name


def test_reading_a_pyinfra_inventory_does_not_monkey_patch_netfix():
    # pyinfra_cli/__init__.py patches threads and subprocess for gevent; netfix's engine
    # runs real threads, so the loader is imported without it.
    import subprocess
    import sys

    code = (f"from netfix.inventory import load_inventory; load_inventory({str(EXAMPLE)!r}); "
            "import gevent.monkey as m; "
            "print([x for x in ('socket', 'threading', 'subprocess') if m.is_module_patched(x)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
