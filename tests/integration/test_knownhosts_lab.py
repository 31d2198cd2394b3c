"""Host keys against 50 real lab nodes: accept-new from many threads records every node's
key once, a file that is not known_hosts is never written, a bad line is no traceback, and
an Ansible inventory's ssh args choose the file and the policy."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from conftest import NETFIX, need_lab

pytestmark = pytest.mark.integration

NODES = 50  # more than netfix's 32 worker threads: saves overlap, some threads reconnect


@pytest.fixture(scope="module")
def lab50(lab_lock):
    need_lab()
    from netfix_lab import netns as labmod

    lab_dir = Path(f"/run/netfix-lab-knownhosts-{os.getpid()}")
    labmod.lab_up(NODES, lab_dir)
    try:
        nodes = labmod.lab_nodes(lab_dir)
        assert len(nodes) == NODES
        yield lab_dir, nodes
    finally:
        labmod.lab_down(lab_dir)


def real_keys(lab_dir: Path, nodes) -> dict[str, tuple[str, str]]:
    """address -> (key type, base64) of each node's own host key."""
    out = {}
    for n in nodes:
        pub = lab_dir / "nodes" / n.name / "ssh_host_ed25519_key.pub"
        kind, b64 = pub.read_text().split()[:2]
        out[n.address] = (kind, b64)
    return out


def entries(path: Path) -> list[tuple[str, str, str]]:
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    return [(f[0], f[1], f[2]) for f in lines]


def netfix_inventory(tmp_path: Path, lab_dir: Path, nodes, known: Path, policy: str) -> Path:
    hosts = "\n".join(f"  {n.name}: {{ssh_host: {n.address}}}" for n in nodes)
    inv = tmp_path / f"inv-{policy}.yaml"
    inv.write_text(
        f"vars:\n  ssh_user: root\n  ssh_key: {lab_dir / 'id_ed25519'}\n"
        f"  ssh_known_hosts_file: {known}\n  ssh_strict_host_key_checking: {policy}\n"
        f"hosts:\n{hosts}\n"
    )
    return inv


def ansible_inventory(tmp_path: Path, lab_dir: Path, nodes, args: str, name: str) -> Path:
    hosts = "\n".join(f"        {n.name}: {{ansible_host: {n.address}}}" for n in nodes)
    inv = tmp_path / name
    inv.write_text(textwrap.dedent(f"""\
        all:
          vars:
            ansible_user: root
            ansible_ssh_private_key_file: {lab_dir / 'id_ed25519'}
            ansible_ssh_common_args: '{args}'
          children:
            k8s_cluster:
              hosts:
        """) + hosts + "\n")
    return inv


def plan(inv: Path, *args: str):
    import subprocess

    return subprocess.run([NETFIX, "plan", "-i", str(inv), "--profile", "base", *args],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


def assert_ok(p) -> None:
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr


def assert_all_recorded(known: Path, lab_dir: Path, nodes) -> None:
    got = entries(known)
    keys = real_keys(lab_dir, nodes)
    assert len(got) == NODES, f"{len(got)} entries, want {NODES}:\n{known.read_text()}"
    assert {name for name, _, _ in got} == set(keys)
    for name, kind, b64 in got:
        assert (kind, b64) == keys[name], f"{name}: recorded key is not the node's host key"


def test_accept_new_records_every_node_then_yes_verifies(lab50, tmp_path: Path) -> None:
    lab_dir, nodes = lab50
    known = tmp_path / "ssh" / "known_hosts"
    known.parent.mkdir()
    known.write_text("")
    assert_ok(plan(netfix_inventory(tmp_path, lab_dir, nodes, known, "accept-new")))
    assert_all_recorded(known, lab_dir, nodes)

    before = known.read_bytes()
    # Known now: a second accept-new run adds nothing, and strict checking accepts them all.
    assert_ok(plan(netfix_inventory(tmp_path, lab_dir, nodes, known, "accept-new")))
    assert known.read_bytes() == before
    assert_ok(plan(netfix_inventory(tmp_path, lab_dir, nodes, known, "yes")))
    assert known.read_bytes() == before


def test_yes_rejects_unknown_nodes_with_a_clear_error(lab50, tmp_path: Path) -> None:
    lab_dir, nodes = lab50
    known = tmp_path / "known_hosts"
    known.write_text("")
    p = plan(netfix_inventory(tmp_path, lab_dir, nodes[:3], known, "yes"))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"host key of {nodes[0].address} is not in {known}" in p.stdout + p.stderr
    assert known.read_bytes() == b""


def test_accept_new_never_writes_a_file_that_is_not_known_hosts(lab50, tmp_path: Path) -> None:
    lab_dir, nodes = lab50
    # The easy mistake: the inventory's own path where the known_hosts path should be.
    inv = tmp_path / "inv-accept-new.yaml"
    netfix_inventory(tmp_path, lab_dir, nodes[:5], inv, "accept-new")
    before = inv.read_bytes()
    p = plan(inv)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    out = p.stdout + p.stderr
    assert f"{inv} is not a known_hosts file" in out and "left it untouched" in out
    assert inv.read_bytes() == before
    assert not any(name.startswith(".inv") for name in os.listdir(tmp_path))  # no temp files


def test_a_malformed_line_is_ignored_not_a_traceback(lab50, tmp_path: Path) -> None:
    lab_dir, nodes = lab50
    known = tmp_path / "known_hosts"
    good = "".join(f"{a} {k} {b}\n" for a, (k, b) in real_keys(lab_dir, nodes[:5]).items())
    known.write_text("10.9.9.9 ssh-ed25519 AAAA!!not-base64\n" + good)
    before = known.read_bytes()
    assert_ok(plan(netfix_inventory(tmp_path, lab_dir, nodes[:5], known, "yes")))
    # accept-new with a new node: that node fails clearly, the known ones still plan.
    p = plan(netfix_inventory(tmp_path, lab_dir, nodes[:6], known, "accept-new"))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    out = p.stdout + p.stderr
    assert f"{known} is not a known_hosts file (line 1:" in out
    assert known.read_bytes() == before


def test_ansible_inventory_common_args_choose_file_and_policy(lab50, tmp_path: Path) -> None:
    lab_dir, nodes = lab50
    known = tmp_path / "kubespray_known_hosts"
    known.write_text("")
    args = f"-o UserKnownHostsFile={known} -oStrictHostKeyChecking=accept-new"
    assert_ok(plan(ansible_inventory(tmp_path, lab_dir, nodes, args, "hosts.yaml")))
    assert_all_recorded(known, lab_dir, nodes)

    # Strict now, in the `-o "Key value"` spelling: the recorded keys are what it checks.
    strict = ansible_inventory(tmp_path, lab_dir, nodes,
                               f'-o "UserKnownHostsFile {known}" -o StrictHostKeyChecking=yes',
                               "strict.yaml")
    assert_ok(plan(strict))
    other = tmp_path / "empty_known_hosts"
    other.write_text("")
    strict_other = ansible_inventory(tmp_path, lab_dir, nodes[:2],
                                     f"-o UserKnownHostsFile={other} -o StrictHostKeyChecking=yes",
                                     "other.yaml")
    p = plan(strict_other)
    assert p.returncode == 1 and f"is not in {other}" in p.stdout + p.stderr
