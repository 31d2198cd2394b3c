"""The netns test lab, checked with real namespaces, real sshd and real SSH clients."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
import yaml

from netfix_lab import netns as lab
from netfix_lab.util import pid_alive, which

pytestmark = pytest.mark.integration

LAB_DIR = Path(f"/run/netfix-lab-test-{os.getpid()}")


def _missing_requirement() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    for tool, package in lab.REQUIRED_TOOLS.items():
        if which(tool) is None:
            return f"the lab needs {tool} (Debian package {package})"
    return None


def _skip_or_fail(reason: str) -> None:
    # In CI a missing prerequisite is a broken runner, not a reason to go green.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def _leftovers() -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found = [line.split()[0] for line in netns.splitlines() if line.startswith("netfix-lab-")]
    found += [
        line.split(":")[1].strip().split("@")[0]
        for line in links.splitlines()
        if line.split(":")[1].strip().startswith("nflab")
    ]
    return found


@pytest.fixture(scope="module")
def lab_dir(lab_lock):
    reason = _missing_requirement()
    if reason:
        _skip_or_fail(reason)
    if _leftovers():
        # Names are global: tearing down would destroy somebody else's lab.
        pytest.fail(f"a netfix lab is already running ({_leftovers()}); run `netfix lab down`")
    t0 = time.perf_counter()
    try:
        lab.lab_up(2, LAB_DIR)
        print(f"\nlab_up(2): {time.perf_counter() - t0:.2f} s")
        yield LAB_DIR
    finally:
        lab.lab_down(LAB_DIR)


def node(lab_dir: Path, name: str) -> lab.LabNode:
    return next(n for n in lab.lab_nodes(lab_dir) if n.name == name)


def read(n: lab.LabNode | str, path: str) -> str:
    return lab.node_exec(n, ["cat", path]).stdout.strip()


def ssh_client(lab_dir: Path, address: str) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab_dir / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        address,
        username="root",
        key_filename=str(lab_dir / "id_ed25519"),
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
    )
    return client


def ssh_run(client: paramiko.SSHClient, cmd: str) -> str:
    _, stdout, stderr = client.exec_command(cmd, timeout=10)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
    return out


def test_inventory_and_state(lab_dir):
    inv = yaml.safe_load((lab_dir / "inventory.yaml").read_text())
    assert inv["vars"] == {
        "ssh_user": "root",
        "ssh_key": str(lab_dir / "id_ed25519"),
        "ssh_known_hosts_file": str(lab_dir / "known_hosts"),
        "ssh_strict_host_key_checking": "yes",
    }
    assert inv["groups"] == {"lab": {"hosts": ["node1", "node2"]}}
    assert inv["hosts"] == {
        "node1": {"ssh_host": "10.251.0.11"},
        "node2": {"ssh_host": "10.251.0.12"},
    }
    nodes = lab.lab_nodes(lab_dir)
    assert [(n.name, n.netns, n.address) for n in nodes] == [
        ("node1", "netfix-lab-1", "10.251.0.11"),
        ("node2", "netfix-lab-2", "10.251.0.12"),
    ]
    known = (lab_dir / "known_hosts").read_text().split("\n")
    assert [line.split()[0] for line in known if line] == ["10.251.0.11", "10.251.0.12"]


def test_nodes_reachable_over_ssh_with_strict_host_keys(lab_dir):
    for i in (1, 2):
        client = ssh_client(lab_dir, f"10.251.0.{10 + i}")
        try:
            assert ssh_run(client, "cat /proc/sys/net/ipv4/tcp_syncookies").strip() in "012"
            assert f"inet 10.252.{i}.1/24" in ssh_run(client, "ip -o addr show eth1")
            assert ssh_run(client, "hostname").strip() == f"node{i}"
            # An empty private home: no .bashrc, no pyenv.
            assert ssh_run(client, 'ls -A /root; echo "[$PYENV_ROOT]"').strip() == "[]"
        finally:
            client.close()
    # RejectPolicy really is in force: an unknown host key is refused.
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        client.connect(
            "10.251.0.11",
            username="root",
            key_filename=str(lab_dir / "id_ed25519"),
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
    client.close()


def test_interfaces_are_the_nodes_own(lab_dir):
    names = set(lab.node_exec(node(lab_dir, "node1"), "ls /sys/class/net").stdout.split())
    assert names == {"lo", "eth0", "eth1", "eth1p"}
    route = lab.node_exec("node2", "ip -4 route show default").stdout
    assert route.strip() == ""


def test_ssh_command_cost(lab_dir):
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    argv = [
        "ssh", "-i", str(lab_dir / "id_ed25519"),
        "-o", f"UserKnownHostsFile={lab_dir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        "root@10.251.0.11", "true",
    ]  # fmt: skip
    t0 = time.perf_counter()
    for _ in range(10):
        subprocess.run(argv, check=True, capture_output=True, timeout=10)
    per_cmd = (time.perf_counter() - t0) / 10
    print(f"\nssh root@node1 true: {per_cmd * 1000:.0f} ms per command (new connection each)")
    assert per_cmd < 1.0


def test_sysctl_written_in_node_stays_in_node(lab_dir):
    n1, n2 = node(lab_dir, "node1"), node(lab_dir, "node2")
    key = "/proc/sys/net/ipv4/tcp_syncookies"
    host_before = Path(key).read_text().strip()
    n2_before = read(n2, key)
    new = "2" if host_before != "2" and n2_before != "2" else "0"
    lab.node_exec(n1, ["sysctl", "-w", f"net.ipv4.tcp_syncookies={new}"])
    try:
        assert read(n1, key) == new
        assert read(n2, key) == n2_before
        assert Path(key).read_text().strip() == host_before
    finally:
        lab.node_exec(n1, ["sysctl", "-w", f"net.ipv4.tcp_syncookies={n2_before}"])


def test_config_files_written_in_node_stay_in_node(lab_dir):
    n1, n2 = node(lab_dir, "node1"), node(lab_dir, "node2")
    name = f"99-netfix-lab-test-{os.getpid()}.conf"
    # Outside the bound dirs too: the /etc overlay must catch it.
    loose = f"/etc/netfix-lab-test-{os.getpid()}"
    try:
        lab.node_exec(n1, f"echo net.ipv4.tcp_syncookies=1 > /etc/sysctl.d/{name}")
        lab.node_exec(n1, f"echo x > {loose}; echo y > /var/lib/netfix/state")
        assert not Path("/etc/sysctl.d", name).exists()
        assert not Path(loose).exists()
        assert not Path("/var/lib/netfix/state").exists()
        assert (lab_dir / "nodes/node1/root/etc/sysctl.d" / name).exists()
        assert lab.node_exec(n2, f"test -e /etc/sysctl.d/{name}", check=False).returncode == 1
        assert lab.node_exec(n2, f"test -e {loose}", check=False).returncode == 1
    finally:
        # Only reached if isolation is broken; never leave litter on the host.
        Path("/etc/sysctl.d", name).unlink(missing_ok=True)
        Path(loose).unlink(missing_ok=True)
    # The node looks like Debian: vendor sysctl.d seeded, sysctl.conf present.
    host_vendor = sorted(os.listdir("/usr/lib/sysctl.d"))
    assert lab.node_exec(n1, "ls -A /usr/lib/sysctl.d").stdout.split() == host_vendor
    assert lab.node_exec(n1, "test -f /etc/sysctl.conf", check=False).returncode == 0
    assert lab.node_exec(n1, "test -d /etc/nftables.d", check=False).returncode == 0


def test_host_global_knobs_are_read_only_in_node(lab_dir):
    n1 = node(lab_dir, "node1")
    swappiness = Path("/proc/sys/vm/swappiness").read_text().strip()
    assert lab.node_exec(n1, "test -w /proc/sys/vm/swappiness", check=False).returncode == 1
    res = lab.node_exec(n1, "echo 7 > /proc/sys/vm/swappiness", check=False)
    assert res.returncode != 0 and "Read-only" in res.stderr
    assert Path("/proc/sys/vm/swappiness").read_text().strip() == swappiness
    assert lab.node_exec(n1, "test -w /proc/sys/net/ipv4/tcp_syncookies").returncode == 0

    hashsize = "/sys/module/nf_conntrack/parameters/hashsize"
    if Path(hashsize).exists():
        before = Path(hashsize).read_text().strip()
        assert lab.node_exec(n1, f"test -w {hashsize}", check=False).returncode == 1
        res = lab.node_exec(n1, f"echo 16384 > {hashsize}", check=False)
        assert res.returncode != 0
        assert Path(hashsize).read_text().strip() == before
    mounts = lab.node_exec(n1, "cat /proc/self/mountinfo").stdout.splitlines()
    sys_module = [m.split() for m in mounts if m.split()[4] == "/sys/module"]
    assert sys_module and "ro" in sys_module[-1][5].split(",")


def test_each_node_has_its_own_processes(lab_dir):
    n1, n2 = node(lab_dir, "node1"), node(lab_dir, "node2")
    lab.node_exec(n1, "sleep 1000 &")
    try:
        assert "sleep 1000" in lab.node_exec(n1, "ps -eo args").stdout
        assert "sleep 1000" not in lab.node_exec(n2, "ps -eo args").stdout
        assert lab.node_exec(n2, "ps -o pid= -p 1").stdout.strip() == "1"
    finally:
        lab.node_exec(n1, "pkill -x sleep", check=False)


def test_node_exec_input_and_errors(lab_dir):
    res = lab.node_exec("node1", ["cat"], input=b"hello\n")
    assert res.stdout == "hello\n"
    with pytest.raises(subprocess.CalledProcessError) as err:
        lab.node_exec("node1", "echo oops >&2; exit 3")
    assert err.value.returncode == 3 and "oops" in str(err.value)


def test_lab_up_is_idempotent(lab_dir):
    before = {n.name: n.pid for n in lab.lab_nodes(lab_dir)}
    lab.lab_up(2, lab_dir)
    assert {n.name: n.pid for n in lab.lab_nodes(lab_dir)} == before
    messages: list[str] = []
    lab.lab_up(3, lab_dir, progress=messages.append)
    after = {n.name: n.pid for n in lab.lab_nodes(lab_dir)}
    assert {k: after[k] for k in before} == before
    assert "node3 up (10.251.0.13)" in messages
    inv = yaml.safe_load((lab_dir / "inventory.yaml").read_text())
    assert inv["groups"]["lab"]["hosts"] == ["node1", "node2", "node3"]
    assert read("node3", "/proc/sys/net/ipv4/tcp_syncookies") in "012"


# The two tests below take the shared lab down; they must stay last in this file.


def test_lab_down_removes_everything(lab_dir):
    removed = lab.lab_down(lab_dir)
    assert "netns netfix-lab-1" in removed and "link nflab0" in removed
    assert _leftovers() == []
    assert not lab_dir.exists()
    assert lab.lab_nodes(lab_dir) == []
    assert lab.lab_down(lab_dir) == []


def test_lab_down_after_crash(lab_dir):
    lab.lab_up(2, lab_dir)
    pids = {n.name: n.pid for n in lab.lab_nodes(lab_dir)}
    # A crash: the state is lost and node2's process tree is gone, its netns left behind.
    (lab_dir / "state.json").unlink()
    os.kill(pids["node2"], 9)
    assert lab.lab_nodes(lab_dir) == []
    # lab_up over the leftovers keeps the live node1 and rebuilds node2.
    lab.lab_up(2, lab_dir)
    now = {n.name: n.pid for n in lab.lab_nodes(lab_dir)}
    assert now["node1"] == pids["node1"] and now["node2"] != pids["node2"]
    assert read("node2", "/proc/sys/net/ipv4/tcp_syncookies") in "012"
    # Crash again, then tear down without any state.
    (lab_dir / "state.json").unlink()
    removed = lab.lab_down(lab_dir)
    assert {"netns netfix-lab-1", "netns netfix-lab-2"} <= set(removed)
    assert _leftovers() == []
    assert not lab_dir.exists()
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in [*pids.values(), *now.values()]):
        assert time.monotonic() < deadline, "node processes survived lab_down"
        time.sleep(0.05)
