"""Inventories: netfix and Ansible formats, vars precedence, type checks, --limit."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netfix.errors import InputError
from netfix.inventory import Host, Inventory, load_inventory

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "inv.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load_error(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        load_inventory(str(path))
    return info.value


NETFIX_INV = """
    vars:
      ssh_user: admin
      profile: k8s-node
      sudo: true
      custom_knob: 7
    groups:
      workers:
        vars: {profile: public-vds, ssh_user: worker}
        hosts: [node1, node2]
        children: [edge]
      edge:
        vars: {profile: edge-profile}
        hosts:
          node3: {ssh_port: 2222}
      aaa:
        vars: {ssh_user: from-aaa}
        hosts: [node2]
    hosts:
      node1: {ssh_host: 10.251.0.11, profile: node1-own}
      node2: {ssh_host: 10.251.0.12}
      '@local': {profile: base}
"""


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return load_inventory(str(write(tmp_path, NETFIX_INV)))


# --------------------------------------------------------------------------- netfix format


def test_host_order_is_first_appearance(inv: Inventory) -> None:
    assert list(inv.hosts) == ["node1", "node2", "node3", "@local"]
    assert inv.groups["all"] == ["node1", "node2", "node3", "@local"]
    # Child group members are members of the parent too.
    assert inv.groups["workers"] == ["node1", "node2", "node3"]


def test_vars_precedence(inv: Inventory) -> None:
    node1, node2, node3, local = (inv.hosts[n] for n in ("node1", "node2", "node3", "@local"))
    assert node1.profile == "node1-own"  # host vars beat group vars
    assert node2.profile == "public-vds"  # group beats top-level
    assert node3.profile == "edge-profile"  # child group (edge) beats parent (workers)
    assert local.profile == "base"
    # Same depth: alphabetical, so workers (w) is applied after aaa (a) and wins.
    assert node2.groups == ["aaa", "workers"]
    assert node2.user == "worker"
    assert node3.groups == ["workers", "edge"]
    assert node3.user == "worker"  # from workers; edge does not set it
    assert local.user == "admin"  # top-level
    assert all(h.sudo is True for h in inv.hosts.values())
    assert node1.vars["custom_knob"] == 7  # unknown vars are kept


def test_host_properties(inv: Inventory) -> None:
    node1, node3, local = inv.hosts["node1"], inv.hosts["node3"], inv.hosts["@local"]
    assert (node1.address, node1.port) == ("10.251.0.11", 22)
    assert (node3.address, node3.port) == ("node3", 2222)  # name when no ssh_host
    assert local.is_local and not node1.is_local
    assert node1.strict_host_key_checking == "yes"
    assert node1.key is None and node1.known_hosts is None
    assert node1.connect_timeout == 10.0


def test_host_defaults_and_expansion() -> None:
    host = Host("h", [], {"ssh_key": "~/.ssh/id_ed25519", "connection": "local"})
    assert host.key == str(Path.home() / ".ssh/id_ed25519")
    assert host.is_local
    assert (host.user, host.port, host.sudo, host.profile) == ("root", 22, False, None)
    with pytest.raises(InputError, match="accept-new"):
        _ = Host("h", [], {"ssh_strict_host_key_checking": "maybe"}).strict_host_key_checking


def test_unquoted_yes_is_accepted_as_host_key_policy(tmp_path: Path) -> None:
    path = write(tmp_path, "vars: {ssh_strict_host_key_checking: yes}\nhosts: {a: }\n")
    assert load_inventory(str(path)).hosts["a"].strict_host_key_checking == "yes"


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("hosts:\n  node1:\n    ssh_port: 70000\n", 3, "hosts.node1.ssh_port", "1-65535"),
        ("hosts:\n  node1: {ssh_port: '22'}\n", 2, "hosts.node1.ssh_port", "1-65535"),
        ("vars:\n  sudo: 'yes'\n", 2, "vars.sudo", "true or false"),
        (
            "groups:\n  g:\n    vars:\n      ssh_strict_host_key_checking: ask\n",
            4,
            "groups.g.vars.ssh_strict_host_key_checking",
            "accept-new",
        ),
        ("vars:\n  connect_timeout: 0\n", 2, "vars.connect_timeout", "> 0"),
        ("hosts:\n  'bad name': {}\n", 2, 'hosts."bad name"', "invalid host name"),
        ("groups:\n  g:\n    children: [nope]\n", 3, "groups.g.children[0]", "unknown child"),
        ("groups:\n  g:\n    hostz: [a]\n", 3, "groups.g.hostz", "unknown key"),
        ("hostz: {}\n", 1, "hostz", "unknown top-level key"),
    ],
)
def test_type_errors_have_file_line_and_path(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    path = write(tmp_path, text)
    err = load_error(path)
    assert (err.file, err.line, err.path) == (str(path), line, field)
    assert words in err.message


def test_group_cycle_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        groups:
          a: {children: [b]}
          b: {children: [a], hosts: [h]}
    """,
    )
    err = load_error(path)
    assert "group cycle" in err.message
    assert "a -> b -> a" in err.message or "b -> a -> b" in err.message


def test_malformed_yaml_has_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts:\n  node1: {ssh_host: 10.251.0.11\n  node2: {}\n")
    err = load_error(path)
    assert err.file == str(path)
    assert err.line == 3
    assert "invalid YAML" in err.message


def test_empty_inventory_is_an_error(tmp_path: Path) -> None:
    assert "empty" in load_error(write(tmp_path, "# nothing\n")).message


def test_no_inventory_means_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETFIX_INVENTORY", raising=False)
    inv = load_inventory(None)
    assert list(inv.hosts) == ["@local"]
    assert inv.hosts["@local"].is_local
    assert inv.source is None


def test_env_inventory_used_when_no_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "hosts: {envhost: {}}\n")
    monkeypatch.setenv("NETFIX_INVENTORY", str(path))
    inv = load_inventory(None)
    assert list(inv.hosts) == ["envhost"] and inv.source == str(path)


# --------------------------------------------------------------------------- Ansible format


ANSIBLE_INV = """
    all:
      vars:
        ansible_user: deploy
        ansible_ssh_private_key_file: /keys/id
        ansible_python_interpreter: /usr/bin/python3
        netfix_profile: k8s-node
        team: net
      hosts:
        localhost:
          ansible_connection: local
      children:
        workers:
          vars:
            ansible_become: true
            netfix_profile: public-vds
          hosts:
            node1:
              ansible_host: 10.251.0.11
              ansible_port: 2222
          children:
            edge:
              hosts:
                node2: {ansible_host: 10.251.0.12, netfix_profile: edge}
        db:
          hosts:
            node2:
"""


def test_ansible_inventory_mapping(tmp_path: Path) -> None:
    inv = load_inventory(str(write(tmp_path, ANSIBLE_INV)))
    assert list(inv.hosts) == ["localhost", "node1", "node2"]
    local, node1, node2 = inv.hosts.values()
    assert local.is_local and local.vars["connection"] == "local"
    assert (node1.address, node1.port, node1.user, node1.key) == (
        "10.251.0.11",
        2222,
        "deploy",
        "/keys/id",
    )
    assert node1.sudo is True and node1.profile == "public-vds"
    assert node2.profile == "edge" and node2.address == "10.251.0.12"
    assert node2.groups == ["db", "workers", "edge"]
    assert node2.vars["team"] == "net"  # other vars kept
    assert not any(k.startswith("ansible_") for k in node1.vars)  # ansible_* translated/dropped
    assert inv.groups["workers"] == ["node1", "node2"]
    assert not local.sudo


def test_ansible_bad_port_points_at_ansible_key(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  hosts:\n    n1:\n      ansible_port: 0\n")
    err = load_error(path)
    assert (err.line, err.path) == (4, "all.hosts.n1.ansible_port")


def test_ansible_unsupported_connection(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  hosts:\n    n1: {ansible_connection: docker}\n")
    assert "not supported" in load_error(path).message


def test_shipped_example_inventories_agree() -> None:
    netfix = load_inventory(str(REPO / "inventories/example.yaml"))
    ansible = load_inventory(str(REPO / "inventories/ansible-example.yaml"))
    for inv in (netfix, ansible):
        assert inv.hosts["node1"].address == "10.251.0.11"
        assert inv.hosts["node2"].address == "10.251.0.12"
        assert inv.hosts["node1"].profile == "public-vds"
        assert [h.name for h in inv.select("edge")] == ["node2"]
        assert sum(h.is_local for h in inv.hosts.values()) == 1


# --------------------------------------------------------------------------- Ansible ssh args


def ansible_host(tmp_path: Path, all_vars: str, host_vars: str = "{}") -> Host:
    text = f"all:\n  vars: {all_vars}\n  hosts:\n    n1: {host_vars}\n"
    return load_inventory(str(write(tmp_path, text))).hosts["n1"]


def test_kubespray_style_common_args_choose_known_hosts_and_policy(tmp_path: Path) -> None:
    host = ansible_host(tmp_path, "{ansible_ssh_common_args: '-o UserKnownHostsFile=~/kh/known"
                                  " -o StrictHostKeyChecking=accept-new -o ProxyJump=bastion'}")
    assert host.known_hosts == str(Path.home() / "kh/known")
    assert host.strict_host_key_checking == "accept-new"


@pytest.mark.parametrize(
    ("args", "policy"),
    [
        ("-oStrictHostKeyChecking=no", "no"),
        ('-o "StrictHostKeyChecking accept-new"', "accept-new"),
        ("-o StrictHostKeyChecking no", "no"),
        ("-o stricthostkeychecking=Accept-New", "accept-new"),
        ("-o StrictHostKeyChecking=ask", "yes"),  # no terminal to ask on: refuse, as ssh does
        ("-o StrictHostKeyChecking=off", "no"),
        ("-o StrictHostKeyChecking=yes -o StrictHostKeyChecking=no", "yes"),  # ssh: first wins
        ("-F ssh.cfg -o ControlPersist=60s", "yes"),  # no option given: netfix's default
        ("-F -oStrictHostKeyChecking=no", "yes"),  # that is -F's file name, not an option
        ("-o ProxyCommand='ssh -o StrictHostKeyChecking=no -W %h:%p b'", "yes"),
    ],
)
def test_strict_host_key_checking_spellings(tmp_path: Path, args: str, policy: str) -> None:
    quoted = args.replace("'", "''")
    assert ansible_host(tmp_path, f"{{ansible_ssh_common_args: '{quoted}'}}"
                        ).strict_host_key_checking == policy


@pytest.mark.parametrize(
    ("all_vars", "host_vars", "policy"),
    [
        ("{ansible_host_key_checking: false}", "{}", "no"),
        ("{ansible_host_key_checking: 'False'}", "{}", "no"),
        ("{ansible_ssh_host_key_checking: false}", "{}", "no"),
        ("{ansible_host_key_checking: true}", "{}", "yes"),
        # Ansible puts host_key_checking's -o before the args and ssh keeps the first.
        ("{ansible_host_key_checking: false, ansible_ssh_common_args: "
         "'-o StrictHostKeyChecking=accept-new'}", "{}", "no"),
        ("{ansible_ssh_extra_args: '-o StrictHostKeyChecking=accept-new'}", "{}", "accept-new"),
        ("{ansible_ssh_common_args: '-o StrictHostKeyChecking=no', "
         "ansible_ssh_extra_args: '-o StrictHostKeyChecking=accept-new'}", "{}", "no"),
        # netfix's own var is the explicit answer.
        ("{ansible_ssh_common_args: '-o StrictHostKeyChecking=no'}",
         "{ssh_strict_host_key_checking: accept-new}", "accept-new"),
        # A host's args replace its group's whole string, as in Ansible.
        ("{ansible_ssh_common_args: '-o StrictHostKeyChecking=no'}",
         "{ansible_ssh_common_args: '-o ProxyJump=b'}", "yes"),
    ],
)
def test_ansible_host_key_checking_precedence(
    tmp_path: Path, all_vars: str, host_vars: str, policy: str
) -> None:
    assert ansible_host(tmp_path, all_vars, host_vars).strict_host_key_checking == policy


@pytest.mark.parametrize(
    ("all_vars", "host_vars", "known"),
    [
        ("{ansible_ssh_common_args: '-o \"UserKnownHostsFile /a/kh /b/kh\"'}", "{}", "/a/kh"),
        ("{ansible_ssh_common_args: '-o UserKnownHostsFile=none'}", "{}", "/dev/null"),
        ("{ansible_ssh_extra_args: '-o UserKnownHostsFile /x/kh'}", "{}", "/x/kh"),
        ("{ansible_ssh_common_args: '-o UserKnownHostsFile=/a/kh'}",
         "{ssh_known_hosts_file: /n/kh}", "/n/kh"),
        ("{ansible_ssh_common_args: '-o UserKnownHostsFile=/a/kh'}",
         "{ansible_ssh_common_args: '-o ProxyJump=b'}", None),
    ],
)
def test_ansible_user_known_hosts_file(
    tmp_path: Path, all_vars: str, host_vars: str, known: str | None
) -> None:
    assert ansible_host(tmp_path, all_vars, host_vars).known_hosts == known


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("'-o StrictHostKeyChecking=maybe'", "StrictHostKeyChecking must be one of"),
        ("'-o UserKnownHostsFile=\"/a'", "closing quotation"),
        ("'-o \"UserKnownHostsFile \\\"/a\"'", "closing quotation"),
        ("'-o'", "-o without an option"),
        ("'-o StrictHostKeyChecking'", "has no value"),
        ("'-o Strict:no'", "expected -o Key=value"),
        ("[-o, x]", "must be a string"),
    ],
)
def test_bad_ssh_args_have_file_line_and_path(tmp_path: Path, value: str, words: str) -> None:
    path = write(tmp_path, f"all:\n  hosts:\n    n1:\n      ansible_ssh_common_args: {value}\n")
    err = load_error(path)
    assert (err.file, err.line, err.path) == (str(path), 4, "all.hosts.n1.ansible_ssh_common_args")
    assert words in err.message


def test_bad_ansible_host_key_checking_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  vars:\n    ansible_host_key_checking: maybe\n")
    err = load_error(path)
    assert (err.line, err.path) == (3, "all.vars.ansible_host_key_checking")
    assert "true or false" in err.message


# --------------------------------------------------------------------------- --limit


def names(inv: Inventory, limit: str | None) -> list[str]:
    return [h.name for h in inv.select(limit)]


def test_limit_none_is_everything(inv: Inventory) -> None:
    assert names(inv, None) == ["node1", "node2", "node3", "@local"]
    assert names(inv, "all") == names(inv, None)


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("node2", ["node2"]),
        ("node3,node1", ["node1", "node3"]),  # inventory order, not pattern order
        ("node1:node3", ["node1", "node3"]),
        ("edge", ["node3"]),
        ("workers", ["node1", "node2", "node3"]),
        ("node[12]", ["node1", "node2"]),
        ("work*", ["node1", "node2", "node3"]),  # glob over group names
        ("workers:!node2", ["node1", "node3"]),
        ("workers,!edge", ["node1", "node2"]),
        ("workers:&aaa", ["node2"]),
        ("!workers", ["@local"]),  # only exclusions: start from all hosts
        ("@local", ["@local"]),
        ("*:!node*", ["@local"]),
    ],
)
def test_limit_patterns(inv: Inventory, limit: str, expected: list[str]) -> None:
    assert names(inv, limit) == expected


def test_limit_matching_nothing_lists_what_exists(inv: Inventory) -> None:
    with pytest.raises(InputError) as info:
        inv.select("nodeX")
    message = str(info.value)
    assert "'nodeX'" in message and "matches no host" in message
    assert "node1" in message and "workers" in message and "edge" in message


def test_limit_typo_in_exclusion_is_an_error(inv: Inventory) -> None:
    # Silently ignoring it would include the very host the operator meant to protect.
    with pytest.raises(InputError, match="'nod1'"):
        inv.select("workers:!nod1")


def test_limit_empty_result_is_an_error(inv: Inventory) -> None:
    with pytest.raises(InputError, match="matches no host"):
        inv.select("edge:&aaa")


def test_limit_ipv6_host_name(tmp_path: Path) -> None:
    inv = load_inventory(str(write(tmp_path, "hosts: {'fd00::1': {}, other: {}}\n")))
    assert names(inv, "fd00::1") == ["fd00::1"]
    assert names(inv, "!fd00::1") == ["other"]
