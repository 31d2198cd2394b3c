"""The path most fleets use: a non-root SSH user with `sudo: true` (Ansible's
`ansible_become`), on lab nodes with real accounts, real sudoers rules and the real CLI.

The accounts are made inside the nodes (useradd sees the node's own /etc overlay); their
homes live under /var/lib, which is overlaid too, so nothing reaches the host."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
from pathlib import Path

import pytest
from conftest import skip_or_fail

pytestmark = pytest.mark.integration

PROFILE = "public-vds"
# Per-network-namespace keys public-vds changes on a lab node.
KEYS = ("net.ipv4.tcp_synack_retries", "net.ipv4.tcp_max_syn_backlog", "net.core.somaxconn",
        "net.ipv4.tcp_syncookies", "net.netfilter.nf_conntrack_udp_timeout",
        "net.netfilter.nf_conntrack_tcp_timeout_syn_sent")
SUDO_USER = "nfsudo"  # NOPASSWD: ALL
PASSWORD_USER = "nfpass"  # ALL, password required
HOME_BASE = "/var/lib/netfix-sudo-test"
HOST_FILES = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow")
NODE_OF = {"netfix": "node1", "ansible": "node2"}
PASSWORD_NODE = "node3"


def host_view() -> dict[str, str]:
    """What the accounts must not change on the host."""
    view = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest()
            for p in HOST_FILES if os.path.exists(p)}
    view["/etc/sudoers.d"] = " ".join(sorted(os.listdir("/etc/sudoers.d")))
    # sudo's timestamps: /run is the host's, so the lab gives each node its own /run/sudo.
    view["/run/sudo"] = " ".join(sorted(str(p) for p in Path("/run/sudo").rglob("*")))
    view[HOME_BASE] = str(os.path.exists(HOME_BASE))
    return view


def add_user(lab, node: str, user: str, rule: str, password: str | None = None) -> None:
    home = f"{HOME_BASE}/{user}"
    pub = (lab.dir / "id_ed25519.pub").read_text().strip()
    # The lab's sshd runs without PAM, and then refuses keys for a locked ("!") account,
    # which is how useradd leaves it: "*" (no password) or a real one unlocks it.
    unlock = (f"echo {shlex.quote(f'{user}:{password}')} | chpasswd" if password
              else f"usermod -p '*' {user}")
    q = shlex.quote
    lab.sh(node, f"""set -e
mkdir -p {HOME_BASE}
useradd --home-dir {home} --create-home --shell /bin/sh {user}
{unlock}
install -d -m 700 -o {user} -g {user} {home}/.ssh
printf '%s\\n' {q(pub)} > {home}/.ssh/authorized_keys
chown {user}: {home}/.ssh/authorized_keys
chmod 600 {home}/.ssh/authorized_keys
# sudo skips files with a dot in their name: the rule counts only once checked and moved.
printf '%s\\n' {q(rule)} > /etc/sudoers.d/{user}.new
chmod 440 /etc/sudoers.d/{user}.new
visudo -cqf /etc/sudoers.d/{user}.new
mv /etc/sudoers.d/{user}.new /etc/sudoers.d/{user}
""")


@pytest.fixture(scope="module")
def accounts(lab) -> dict[str, str]:
    """Both users on every node; returns the host's view from before."""
    if not any(os.path.exists(f"{d}/sudo") for d in ("/usr/bin", "/usr/sbin", "/bin")):
        skip_or_fail("sudo is not installed (scripts/setup.sh installs it)", "the sudo lab")
    before = host_view()
    for node in lab.nodes:
        add_user(lab, node, SUDO_USER, f"{SUDO_USER} ALL=(ALL:ALL) NOPASSWD: ALL")
        add_user(lab, node, PASSWORD_USER, f"{PASSWORD_USER} ALL=(ALL:ALL) ALL",
                 password="lab-only-" + os.urandom(6).hex())
    return before


def inventory(lab, tmp_path: Path, fmt: str, hosts: dict[str, str], sudo: bool = True) -> Path:
    """`hosts`: node -> ssh user. Host key checking stays on, with the lab's known_hosts."""
    addr = {n: lab.nodes[n].address for n in hosts}
    common = (f"ssh_known_hosts_file: {lab.dir / 'known_hosts'}\n"
              '    ssh_strict_host_key_checking: "yes"\n')
    if fmt == "ansible":
        rows = "".join(f"    {n}: {{ansible_host: {addr[n]}, ansible_user: {u}}}\n"
                       for n, u in hosts.items())
        text = (f"all:\n  vars:\n    ansible_become: {str(sudo).lower()}\n"
                f"    ansible_ssh_private_key_file: {lab.dir / 'id_ed25519'}\n    {common}"
                f"  hosts:\n{rows}")
    else:
        rows = "".join(f"  {n}: {{ssh_host: {addr[n]}, ssh_user: {u}}}\n"
                       for n, u in hosts.items())
        text = (f"vars:\n    sudo: {str(sudo).lower()}\n    ssh_key: {lab.dir / 'id_ed25519'}\n"
                f"    {common}hosts:\n{rows}")
    path = tmp_path / f"{fmt}-{'-'.join(hosts)}.yaml"
    path.write_text(text)
    return path


def snapshot(lab, node: str) -> tuple[dict[str, str], dict[str, str]]:
    return {k: lab.sysctl(node, k) for k in KEYS}, lab.files(node)


def changes(plan: dict, host: str) -> dict[str, dict]:
    hp = next(h for h in plan["hosts"] if h["host"] == host)
    return {c["target"]: c for c in hp["changes"]}


def test_accounts_exist_only_inside_the_nodes(lab, accounts):
    # useradd and sudo wrote nothing on the host: /etc/passwd, shadow, group, sudoers.d and
    # /run/sudo are as they were (checked again after all runs, at the end of the module).
    assert host_view() == accounts
    for user in (SUDO_USER, PASSWORD_USER):
        with pytest.raises(KeyError):
            pwd.getpwnam(user)
        for node in lab.nodes:
            uid = lab.sh(node, f"id -u {user}").strip()
            assert uid.isdigit() and uid != "0", uid
    assert lab.sh("node1", f"sudo -n -u {SUDO_USER} sudo -n id -u").strip() == "0"
    refused = lab.sh("node1", f"sudo -n -u {PASSWORD_USER} sudo -n true 2>&1", check=False)
    assert "password is required" in refused


def test_without_sudo_the_user_is_refused_as_non_root(lab, accounts, tmp_path):
    # Proves the runs below log in as the user, not as root: without sudo, uid != 0.
    inv = inventory(lab, tmp_path, "netfix", {"node1": SUDO_USER}, sudo=False)
    p = lab.netfix("plan", "-i", str(inv), "--profile", PROFILE, check_rc=1)
    out = p.stdout + p.stderr
    assert "netfix needs root" in out and "sudo: true" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize("fmt", ["netfix", "ansible"])
def test_plan_apply_drift_rollback_through_sudo(lab, accounts, tmp_path, fmt):
    node = NODE_OF[fmt]
    inv = str(inventory(lab, tmp_path, fmt, {node: SUDO_USER}))
    before_vals, before_files = snapshot(lab, node)

    plan = json.loads(lab.netfix("plan", "-i", inv, "--profile", PROFILE, "--json",
                                 check_rc=None).stdout)
    assert plan["hosts"][0].get("error") in (None, ""), plan["hosts"][0]
    ch = changes(plan, node)
    assert ch["net.ipv4.tcp_synack_retries"]["current"] == \
        before_vals["net.ipv4.tcp_synack_retries"]
    assert ch["net.netfilter.nf_conntrack_udp_timeout"]["action"] == "update"
    lab.netfix("plan", "-i", inv, "--profile", PROFILE, "--detailed-exitcode", check_rc=2)

    # The facts script reads SSH_CONNECTION through sudo (which drops it) to know which
    # interface carries the session.
    mgmt = tmp_path / "eth0.yaml"
    mgmt.write_text("nic:\n  interfaces:\n    - match: {name: eth0}\n      mtu: 1400\n")
    row = changes(json.loads(lab.netfix("plan", "-i", inv, "--profile", str(mgmt), "--json",
                                        check_rc=None).stdout), node)["eth0 mtu"]
    assert "management" in row["flags"], row
    assert f"carries this SSH session (to {lab.nodes[node].address})" in " ".join(row["notes"])

    try:
        lab.netfix("apply", "--yes", "-i", inv, "--profile", PROFILE)
        assert lab.sysctl(node, "net.ipv4.tcp_synack_retries") == "3"
        assert lab.sysctl(node, "net.netfilter.nf_conntrack_udp_timeout") == "15"
        # Written by root through sudo, not by the login user.
        owners = lab.sh(node, "stat -c '%U %a' /etc/sysctl.d/90-netfix.conf /var/lib/netfix")
        assert [line.split()[0] for line in owners.splitlines()] == ["root", "root"], owners

        p = lab.netfix("drift", "-i", inv, "--profile", PROFILE)
        assert "no drift" in p.stdout, p.stdout
        history = lab.netfix("history", "-i", inv).stdout
        assert node in history
    finally:
        lab.netfix("rollback", "--yes", "-i", inv)
    assert snapshot(lab, node) == (before_vals, before_files)
    lab.netfix("plan", "-i", inv, "--profile", PROFILE, "--detailed-exitcode", check_rc=2)


@pytest.mark.parametrize("fmt", ["netfix", "ansible"])
def test_sudo_that_wants_a_password_fails_that_host_clearly(lab, accounts, tmp_path, fmt):
    good = NODE_OF[fmt]
    inv = str(inventory(lab, tmp_path, fmt, {good: SUDO_USER, PASSWORD_NODE: PASSWORD_USER}))
    before = snapshot(lab, PASSWORD_NODE)

    p = lab.netfix("plan", "-i", inv, "--profile", PROFILE, check_rc=1)
    out = p.stdout + p.stderr
    assert "Traceback" not in out, out
    # The host's line says that sudo wants a password (sudo's own words follow netfix's).
    i = out.index(f"{PASSWORD_NODE}: ERROR")
    assert "sudo" in out[i:] and "password is required" in out[i:], out
    plan = json.loads(lab.netfix("plan", "-i", inv, "--profile", PROFILE, "--json",
                                 check_rc=None).stdout)
    by_host = {h["host"]: h for h in plan["hosts"]}
    assert "password" in by_host[PASSWORD_NODE]["error"], by_host[PASSWORD_NODE]
    assert not by_host[good].get("error") and by_host[good]["changes"]  # the other host planned

    p = lab.netfix("apply", "--yes", "-i", inv, "--profile", PROFILE, "--limit", PASSWORD_NODE,
                   check_rc=1)
    out = p.stdout + p.stderr
    assert "Traceback" not in out and "password" in out and PASSWORD_NODE in p.stderr, out
    assert snapshot(lab, PASSWORD_NODE) == before  # nothing changed on that node

    p = lab.netfix("drift", "-i", inv, "--profile", PROFILE, "--limit", PASSWORD_NODE,
                   check_rc=1)
    out = p.stdout + p.stderr
    assert "Traceback" not in out and "password" in out, out


def test_plan_names_the_host_sudo_failed_on_on_stderr(lab, accounts, tmp_path):
    # README: "1 error (any host failed; the failed hosts are named on stderr)". apply and
    # rollback do it in cli.finish, drift in its own loop; plan only prints the table.
    inv = str(inventory(lab, tmp_path, "netfix", {PASSWORD_NODE: PASSWORD_USER}))
    p = lab.netfix("plan", "-i", inv, "--profile", PROFILE, check_rc=1)
    assert PASSWORD_NODE in p.stderr, (p.stdout, p.stderr)


def test_host_untouched_after_all_sudo_runs(accounts):
    # Last in the module: the netfix runs through sudo above left nothing on the host either
    # (sudo's timestamps go to /run/sudo/ts, which each node has privately).
    assert host_view() == accounts
