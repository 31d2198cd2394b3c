"""Test lab: real netfix target nodes on this machine, one network namespace each.

A lab node is a network namespace plus private mount, pid and uts namespaces, with an
sshd on a veth address behind the bridge ``nflab0``. The node sees private copies of the
config dirs netfix writes, and read-only host-global knobs (``/proc/sys`` outside
``net``, ``/sys/module``), which is what a container node looks like to netfix.

Everything the lab creates on the host is named ``netfix-lab-*`` (netns), ``nflab*``
(links) or lives under the lab dir, so ``lab_down`` can remove it without a state file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from netfix.errors import NetfixError
from netfix.util import atomic_write
from netfix_lab.util import SYSTEM_PATH, host_path, pid_alive, remove_entries, tail, which

DEFAULT_DIR = Path(os.environ.get("NETFIX_LAB_DIR", "/run/netfix-lab"))

NETNS_PREFIX = "netfix-lab-"
LINK_PREFIX = "nflab"
BRIDGE = "nflab0"
BRIDGE_ADDR = "10.251.0.1"
SSH_PORT = 22
# 10.251.0.<10+i> must stay a host address of the /24.
MAX_NODES = 244

SSHD_START_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0

# Tool -> Debian package, for the "missing tool" error.
REQUIRED_TOOLS = {
    "ip": "iproute2",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
}
# Dirs under which every write inside a node must stay private: netfix may write files
# there that the lab does not bind individually (/etc/nftables.conf, /etc/modules, ...),
# and the overlay lets the node create mount points the host does not have.
OVERLAID = ("/etc", "/var/lib")
# Per-node private dirs, bound over the real path inside the node only.
# "mirror": bind only if the host has the path, so the node keeps the host distro's layout.
# "create": netfix needs it to exist; it is created inside the node's overlay.
# "seed": like mirror, but starts as a copy of the host's contents.
PRIVATE_DIRS = (
    ("/etc/sysctl.d", "mirror"),
    ("/run/sysctl.d", "mirror"),
    ("/usr/local/lib/sysctl.d", "mirror"),
    ("/usr/lib/sysctl.d", "seed"),
    ("/etc/modprobe.d", "mirror"),
    ("/etc/modules-load.d", "mirror"),
    ("/etc/systemd/system", "mirror"),
    ("/etc/systemd/network", "mirror"),
    ("/etc/nftables.d", "create"),
    ("/etc/default", "mirror"),
    ("/etc/sysconfig", "mirror"),
    ("/var/lib/netfix", "create"),
    # sudo's timestamps (/run/sudo/ts/<user>) would land in the host's shared /run.
    ("/run/sudo", "mirror"),
    # Empty on purpose: root's real dotfiles (pyenv init in .bashrc) cost ~0.1 s per
    # SSH command.
    ("/root", "mirror"),
)
PRIVATE_FILES = ("/etc/sysctl.conf",)
# The node cannot see the lab dir through these, so the lab dir must not be below them.
HIDDEN_IN_NODE = (*OVERLAID, "/root", "/proc", "/sys", "/usr/lib/sysctl.d", "/run/sudo")

LAB_ENTRIES = (
    "state.json",
    "inventory.yaml",
    "id_ed25519",
    "id_ed25519.pub",
    "known_hosts",
    "known_hosts.lock",  # netfix.knownhosts serialises accept-new writers on it
    "nodes",
)

# Popen objects of node init processes started by this Python process, so lab_down can
# reap them instead of leaving zombies while a test session keeps running.
_spawned: dict[int, subprocess.Popen] = {}
_spawned_lock = threading.Lock()


@dataclass
class LabNode:
    name: str
    netns: str
    address: str
    pid: int  # host pid of the node's pid 1 (the target for nsenter)


class NodeExecError(subprocess.CalledProcessError):
    """A command run inside a lab node failed; the message carries its stderr."""

    def __init__(self, node: str, returncode: int, cmd, output: str, stderr: str):
        super().__init__(returncode, cmd, output, stderr)
        self.node = node

    def __str__(self) -> str:
        err = (self.stderr or "").strip()
        return f"{self.node}: {self.cmd!r} exited {self.returncode}" + (f": {err}" if err else "")


def node_name(index: int) -> str:
    return f"node{index}"


def node_netns(index: int) -> str:
    return f"{NETNS_PREFIX}{index}"


def node_address(index: int) -> str:
    return f"10.251.0.{10 + index}"


def node_mac(index: int) -> str:
    # Locally administered, unicast, and derived from the address for easy reading.
    return f"02:00:0a:fb:00:{10 + index:02x}"


def node_inner_address(index: int) -> str:
    return f"10.252.{index}.1"


# ---------------------------------------------------------------------------- checks


def _check_host() -> dict[str, str]:
    if os.geteuid() != 0:
        raise NetfixError(
            "the netfix lab needs root (network namespaces, mounts, sshd); run it as root"
        )
    tools: dict[str, str] = {}
    missing = []
    for tool, package in REQUIRED_TOOLS.items():
        path = which(tool)
        if path is None:
            missing.append(f"{tool} (Debian package {package})")
        else:
            tools[tool] = path
    if missing:
        raise NetfixError(
            "the netfix lab needs tools that are not installed: "
            + ", ".join(missing)
            + "; install them with apt-get install "
            + " ".join(sorted({REQUIRED_TOOLS[m.split()[0]] for m in missing}))
        )
    return tools


def _check_lab_dir(lab_dir: Path) -> Path:
    if not lab_dir.is_absolute():
        lab_dir = lab_dir.absolute()
    # sshd_config takes paths unquoted.
    if re.search(r"\s", str(lab_dir)):
        raise NetfixError(f"lab dir {lab_dir} must not contain whitespace")
    for hidden in HIDDEN_IN_NODE:
        if lab_dir == Path(hidden) or Path(hidden) in lab_dir.parents:
            raise NetfixError(
                f"lab dir {lab_dir} is under {hidden}, which lab nodes replace with a "
                "private copy; pick another NETFIX_LAB_DIR (default /run/netfix-lab)"
            )
    if lab_dir == Path("/"):
        raise NetfixError("lab dir must not be /")
    return lab_dir


# ---------------------------------------------------------------------------- helpers


def _run(argv: list[str], input: str | None = None, check: bool = True):
    proc = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": host_path()},
    )
    if check and proc.returncode != 0:
        raise NetfixError(
            f"lab: `{shlex.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc


def _lab_netns() -> list[str]:
    proc = _run(["ip", "netns", "list"], check=False)
    names = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts and parts[0].startswith(NETNS_PREFIX):
            names.append(parts[0])
    return names


def _lab_links() -> list[str]:
    proc = _run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in proc.stdout.splitlines():
        # "7: nflab1@if2: <...>" -> "nflab1"
        m = re.match(r"\d+:\s+([^:@\s]+)", line)
        if m and m.group(1).startswith(LINK_PREFIX):
            names.append(m.group(1))
    return names


def _netns_pids(netns: str) -> list[int]:
    proc = _run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _ns_pid1(pid: int) -> bool:
    """True if pid is pid 1 of a pid namespace below ours (a node's init)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) >= 2 and ids[-1] == "1"
    except OSError:
        pass
    return False


def _in_netns(pid: int, netns: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return False


def _node_alive(node: LabNode) -> bool:
    return pid_alive(node.pid) and _in_netns(node.pid, node.netns) and _ns_pid1(node.pid)


def _find_init(netns: str) -> int | None:
    for pid in _netns_pids(netns):
        if _ns_pid1(pid) and pid_alive(pid):
            return pid
    return None


def _adopt(lab_dir: Path, netns: str) -> LabNode | None:
    """A live node of this lab dir whose state entry was lost (crash while writing it)."""
    m = re.fullmatch(re.escape(NETNS_PREFIX) + r"(\d+)", netns)
    pid = _find_init(netns)
    if m is None or pid is None:
        return None
    index = int(m.group(1))
    ndir = lab_dir / "nodes" / node_name(index)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return None
    # The pid-1 script names the node's own sshd_config, which ties it to this lab dir.
    if f"{ndir}/sshd_config" not in cmdline or not (ndir / "ssh_host_ed25519_key.pub").exists():
        return None
    return LabNode(name=node_name(index), netns=netns, address=node_address(index), pid=pid)


def _read_state(lab_dir: Path) -> list[LabNode]:
    try:
        data = json.loads((lab_dir / "state.json").read_text())
    except (OSError, ValueError):
        return []
    nodes = []
    for item in data.get("nodes", []):
        try:
            nodes.append(
                LabNode(
                    name=str(item["name"]),
                    netns=str(item["netns"]),
                    address=str(item["address"]),
                    pid=int(item["pid"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return nodes


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, text.encode())


def keygen(path: Path, comment: str) -> None:
    """An ed25519 key pair without passphrase (lab client keys and host keys)."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def write_inventory(lab_dir: Path, group: str, hosts: dict[str, str], made_by: str) -> Path:
    """The lab's inventory in netfix's format: `hosts` maps a name to its host vars as a
    YAML flow mapping; the lab key and known_hosts keep host key checking on."""
    inventory = lab_dir / "inventory.yaml"
    lines = "\n".join(f"  {name}: {hvars}" for name, hvars in hosts.items())
    _write_atomic(inventory, f"""\
# written by `{made_by}`; removed by `netfix lab down`
vars:
  ssh_user: root
  ssh_key: {lab_dir / "id_ed25519"}
  ssh_known_hosts_file: {lab_dir / "known_hosts"}
  ssh_strict_host_key_checking: "yes"
groups:
  {group}:
    hosts: [{", ".join(hosts)}]
hosts:
{lines}
""")
    return inventory


def _index_of(name: str) -> int:
    m = re.fullmatch(r"node(\d+)", name)
    if not m:
        raise NetfixError(f"{name!r} is not a lab node name (node1, node2, ...)")
    return int(m.group(1))


# ---------------------------------------------------------------------------- node setup


def _node_script(lab_dir: Path, index: int, binds: list[tuple[str, str]], create: list[str]):
    """The shell that becomes pid 1 of the node: private mounts, then sshd, then reap."""
    name = node_name(index)
    ndir = lab_dir / "nodes" / name
    q = shlex.quote
    lines = [
        "set -e",
        # Copies of every netns mount would pin other nodes' namespaces and make
        # `ip netns del` fail with EBUSY while this node runs.
        "umount -n -l /run/netns 2>/dev/null || true",
    ]
    for target in OVERLAID:
        if not os.path.isdir(target):
            continue
        base = ndir / "overlay" / target.strip("/").replace("/", "_")
        lines.append(
            "mount -n -t overlay netfix-lab -o "
            + q(f"lowerdir={target},upperdir={base}/upper,workdir={base}/work")
            + f" {q(target)}"
        )
    lines.append(f"echo {q(name)} > /etc/hostname")
    lines.append(f"echo {q(name)} > /proc/sys/kernel/hostname")
    # Like a real node, its own name resolves (sudo warns on every run otherwise).
    lines.append(f"echo {q('127.0.1.1 ' + name)} >> /etc/hosts")
    for path in create:
        lines.append(f"mkdir -p {q(path)}")
    for path in PRIVATE_FILES:
        lines.append(f"[ -e {q(path)} ] || : > {q(path)}")
    for src, dst in binds:
        lines.append(f"mount -n --bind {q(src)} {q(dst)}")
    lines += [
        # Host-global sysctls must not be writable from a node; net.* is per-netns.
        "mount -n --bind /proc/sys /proc/sys",
        "mount -n -o remount,bind,ro /proc/sys",
        "mount -n --bind /proc/sys/net /proc/sys/net",
        "mount -n -o remount,bind,rw /proc/sys/net",
        # Module parameters (nf_conntrack hashsize, ...) are host-global too.
        "mount -n --bind /sys/module /sys/module",
        "mount -n -o remount,bind,ro /sys/module",
        f"/usr/sbin/sshd -D -f {q(str(ndir / 'sshd_config'))} -E {q(str(ndir / 'sshd.log'))} &",
        # pid 1 must reap: orphans of the node (kube-proxy stand-ins, ...) land here.
        "wait",
    ]
    return "\n".join(lines) + "\n"


def _sshd_config(lab_dir: Path, index: int) -> str:
    ndir = lab_dir / "nodes" / node_name(index)
    return f"""\
# netfix lab sshd for {node_name(index)}; written by netfix lab up
ListenAddress {node_address(index)}
Port {SSH_PORT}
HostKey {ndir}/ssh_host_ed25519_key
PidFile {ndir}/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
# Accounts a test creates inside a node (non-root users with sudo) log in with their own
# ~/.ssh/authorized_keys, as on a real node; root by the lab's key (Match below).
AuthorizedKeysFile .ssh/authorized_keys
# Benchmarks open sessions to many nodes at once.
MaxStartups 100:30:200
MaxSessions 50
UseDNS no
PrintMotd no
PrintLastLog no
# File transfers (pyinfra) use sftp; internal-sftp needs no extra binary.
Subsystem sftp internal-sftp
Match User root
    AuthorizedKeysFile {lab_dir}/id_ed25519.pub
"""


def _prepare_node_dir(lab_dir: Path, index: int) -> str:
    """Write the node's private dirs, host key and sshd config; return the pid-1 script."""
    name = node_name(index)
    ndir = lab_dir / "nodes" / name
    # A node being (re)created starts from a clean slate, like a fresh machine.
    if ndir.exists():
        shutil.rmtree(ndir)
    root = ndir / "root"
    binds: list[tuple[str, str]] = []
    create: list[str] = []
    for path, kind in PRIVATE_DIRS:
        exists = os.path.isdir(path)
        if not exists and kind != "create":
            continue
        if not exists and not any(path.startswith(o + "/") for o in OVERLAID):
            continue
        src = root / path.lstrip("/")
        if kind == "seed":
            shutil.copytree(path, src, symlinks=True)
        else:
            src.mkdir(parents=True)
        if not exists:
            create.append(path)
        binds.append((str(src), path))
    for path in PRIVATE_FILES:
        src = root / path.lstrip("/")
        src.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isfile(path):
            shutil.copy2(path, src)
        else:
            src.touch()
        binds.append((str(src), path))
    for target in OVERLAID:
        base = ndir / "overlay" / target.strip("/").replace("/", "_")
        (base / "upper").mkdir(parents=True)
        (base / "work").mkdir(parents=True)

    key = ndir / "ssh_host_ed25519_key"
    keygen(key, name)
    _write_atomic(ndir / "sshd_config", _sshd_config(lab_dir, index))
    return _node_script(lab_dir, index, binds, create)


def _setup_links(indexes: list[int]) -> None:
    """Create netns and veth pairs; one `ip -batch` for the root ns keeps 20 nodes fast."""
    root_cmds = []
    for i in indexes:
        ns = node_netns(i)
        root_cmds += [
            f"netns add {ns}",
            # A fixed MAC per node: a rebuilt node would otherwise be unreachable until
            # the host's neighbour entry for its address (pointing at the old MAC) expires.
            f"link add {LINK_PREFIX}{i} type veth peer name eth0 address {node_mac(i)} netns {ns}",
            f"link set {LINK_PREFIX}{i} master {BRIDGE} up",
            f"neigh flush to {node_address(i)} dev {BRIDGE}",
        ]
    _run(["ip", "-batch", "-"], input="\n".join(root_cmds) + "\n")
    for i in indexes:
        ns = node_netns(i)
        cmds = [
            "link set lo up",
            f"addr add {node_address(i)}/24 dev eth0",
            "link set eth0 up",
            # A second interface to tune that does not carry the lab's SSH session.
            "link add eth1 type veth peer name eth1p",
            f"addr add {node_inner_address(i)}/24 dev eth1",
            "link set eth1 up",
            "link set eth1p up",
        ]
        _run(["ip", "-n", ns, "-batch", "-"], input="\n".join(cmds) + "\n")


def _ensure_bridge() -> bool:
    created = BRIDGE not in _lab_links()
    if created:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    _run(["ip", "addr", "replace", f"{BRIDGE_ADDR}/24", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    return created


def _start_node(lab_dir: Path, index: int, script: str) -> LabNode:
    name = node_name(index)
    ndir = lab_dir / "nodes" / name
    ns = node_netns(index)
    with open(ndir / "init.log", "ab") as log:
        proc = subprocess.Popen(
            [
                "ip", "netns", "exec", ns,
                "unshare", "--mount", "--pid", "--uts", "--fork", "--mount-proc",
                "--propagation", "private",
                "sh", "-c", script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # The node must outlive `netfix lab up` and ignore the caller's Ctrl-C.
            start_new_session=True,
            env={"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8"},
        )  # fmt: skip
    with _spawned_lock:
        _spawned[proc.pid] = proc
    deadline = time.monotonic() + SSHD_START_TIMEOUT
    while time.monotonic() < deadline:
        pid = _find_init(ns)
        if pid is not None:
            return LabNode(name=name, netns=ns, address=node_address(index), pid=pid)
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    raise NetfixError(
        f"lab {name}: the node process did not start; its log ({ndir / 'init.log'}):\n"
        + tail(ndir / "init.log")
    )


def _wait_sshd(lab_dir: Path, nodes: list[LabNode]) -> None:
    pending = list(nodes)
    deadline = time.monotonic() + SSHD_START_TIMEOUT
    while pending:
        for node in list(pending):
            try:
                with socket.create_connection((node.address, SSH_PORT), timeout=0.2):
                    pending.remove(node)
                    continue
            except OSError:
                pass
            if not pid_alive(node.pid) or time.monotonic() > deadline:
                ndir = lab_dir / "nodes" / node.name
                why = (
                    "exited"
                    if not pid_alive(node.pid)
                    else f"did not accept connections within {SSHD_START_TIMEOUT:.0f} s"
                )
                raise NetfixError(
                    f"lab {node.name}: sshd on {node.address}:{SSH_PORT} {why}; "
                    "run `netfix lab down` to clean up.\n"
                    f"sshd log ({ndir / 'sshd.log'}):\n{tail(ndir / 'sshd.log')}\n"
                    f"node log ({ndir / 'init.log'}):\n{tail(ndir / 'init.log')}"
                )
        if pending:
            time.sleep(0.01)


def _write_client_key(lab_dir: Path) -> None:
    key = lab_dir / "id_ed25519"
    if key.exists() and (lab_dir / "id_ed25519.pub").exists():
        return
    key.unlink(missing_ok=True)
    (lab_dir / "id_ed25519.pub").unlink(missing_ok=True)
    keygen(key, "netfix-lab")


def _write_outputs(lab_dir: Path, nodes: list[LabNode]) -> Path:
    nodes = sorted(nodes, key=lambda n: _index_of(n.name))
    state = {"nodes": [asdict(n) for n in nodes]}
    _write_atomic(lab_dir / "state.json", json.dumps(state, indent=2) + "\n")

    known = []
    for node in nodes:
        pub = (lab_dir / "nodes" / node.name / "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{node.address} {pub[0]} {pub[1]}")
    _write_atomic(lab_dir / "known_hosts", "\n".join(known) + "\n")

    return write_inventory(lab_dir, "lab", {n.name: f"{{ssh_host: {n.address}}}" for n in nodes},
                           "netfix lab up")


# ---------------------------------------------------------------------------- public API


def lab_up(
    nodes: int = 1,
    lab_dir: Path = DEFAULT_DIR,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Start lab nodes node1..node<nodes> (keeping running ones); return the inventory path."""
    say = progress or (lambda _msg: None)
    _check_host()  # missing tools: one clear error before anything is made
    lab_dir = _check_lab_dir(Path(lab_dir))
    if not 1 <= nodes <= MAX_NODES:
        raise NetfixError(f"lab nodes must be between 1 and {MAX_NODES}, not {nodes}")

    running = [n for n in _read_state(lab_dir) if _node_alive(n)]
    running_ns = {n.netns for n in running}
    for ns in _lab_netns():
        if ns in running_ns:
            continue
        adopted = _adopt(lab_dir, ns)
        if adopted is not None:
            running.append(adopted)
            running_ns.add(ns)
            say(f"{adopted.name} found running without state; kept it")
            continue
        if any(pid_alive(p) for p in _netns_pids(ns)):
            raise NetfixError(
                f"network namespace {ns} is in use by a lab that {lab_dir}/state.json does "
                "not know (another lab dir?); stop it with `netfix lab down` first"
            )
        # Leftover of a crashed run: nothing lives in it, so recreate it from scratch.
        _run(["ip", "netns", "del", ns], check=False)
        say(f"removed stale netns {ns}")
    for link in _lab_links():
        idx = link[len(LINK_PREFIX) :]
        if link != BRIDGE and idx.isdigit() and node_netns(int(idx)) not in running_ns:
            _run(["ip", "link", "del", link], check=False)

    lab_dir.mkdir(parents=True, exist_ok=True)
    (lab_dir / "nodes").mkdir(exist_ok=True)
    # sshd refuses to start without its privilege separation dir.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    if which("sudo"):
        # What sudo would create itself; made here so that each node binds a private one.
        Path("/run/sudo").mkdir(mode=0o711, exist_ok=True)
    _write_client_key(lab_dir)
    if _ensure_bridge():
        say(f"bridge {BRIDGE} up ({BRIDGE_ADDR}/24)")

    have = {_index_of(n.name) for n in running}
    for n in sorted(running, key=lambda n: _index_of(n.name)):
        say(f"{n.name} already running ({n.address})")
    missing = [i for i in range(1, nodes + 1) if i not in have]
    started: list[LabNode] = []
    if missing:
        _setup_links(missing)
        with ThreadPoolExecutor(max_workers=min(16, len(missing))) as pool:
            scripts = list(pool.map(lambda i: _prepare_node_dir(lab_dir, i), missing))
            started = list(
                pool.map(lambda a: _start_node(lab_dir, *a), zip(missing, scripts, strict=True))
            )
        # Record them before waiting, so a failed start still leaves a state to tear down.
        _write_outputs(lab_dir, running + started)
        _wait_sshd(lab_dir, started)
        for n in started:
            say(f"{n.name} up ({n.address})")
    inventory = _write_outputs(lab_dir, running + started)
    say(f"inventory {inventory}")
    return inventory


def lab_nodes(lab_dir: Path = DEFAULT_DIR) -> list[LabNode]:
    """The lab's running nodes, in node order."""
    nodes = [n for n in _read_state(Path(lab_dir)) if _node_alive(n)]
    return sorted(nodes, key=lambda n: _index_of(n.name))


def lab_down(lab_dir: Path = DEFAULT_DIR) -> list[str]:
    """Stop all lab nodes and remove their netns, links and the lab dir; return what went."""
    _check_host()
    lab_dir = Path(lab_dir).absolute()
    removed: list[str] = []

    # Every netns with the lab prefix goes, also those of a crashed run without state:
    # whatever runs in them belongs to the lab, so no pid from a stale state file is needed.
    namespaces = sorted(set(_lab_netns()), key=lambda s: (len(s), s))
    victims = {pid: ns for ns in namespaces for pid in _netns_pids(ns)}
    inits = {pid: ns for pid, ns in victims.items() if _ns_pid1(pid)}
    for pid in victims:
        try:
            # SIGKILL: pid 1 of a pid namespace ignores SIGTERM, and its death takes every
            # process of the node with it.
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + KILL_TIMEOUT
    while any(pid_alive(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid, ns in inits.items():
        removed.append(f"node {node_name(int(ns[len(NETNS_PREFIX) :]))} (pid {pid})")
    with _spawned_lock:
        for pid, proc in list(_spawned.items()):
            try:
                proc.wait(timeout=1)
                del _spawned[pid]
            except subprocess.TimeoutExpired:
                pass

    for ns in namespaces:
        for _attempt in range(50):
            proc = _run(["ip", "netns", "del", ns], check=False)
            if proc.returncode == 0 or ns not in _lab_netns():
                break
            # A dying process may still pin the netns mount for a moment.
            time.sleep(0.02)
        else:
            raise NetfixError(f"lab: could not delete netns {ns}: {proc.stderr.strip()}")
        removed.append(f"netns {ns}")

    # Node veths die with their netns; this catches the bridge and any orphans.
    for link in sorted(_lab_links(), key=lambda s: (s != BRIDGE, len(s), s)):
        if link == BRIDGE:
            continue
        deleted = _run(["ip", "link", "del", link], check=False).returncode == 0
        # A node's veth goes with its netns (the kernel just has not got to it yet).
        if deleted and f"{NETNS_PREFIX}{link[len(LINK_PREFIX) :]}" not in namespaces:
            removed.append(f"link {link}")
    if BRIDGE in _lab_links():
        _run(["ip", "link", "del", BRIDGE])
        removed.append(f"link {BRIDGE}")

    # Only what the lab wrote, so a mistyped NETFIX_LAB_DIR cannot wipe a real dir.
    return removed + remove_entries(lab_dir, LAB_ENTRIES, "lab")


def node_exec(
    node: LabNode | str,
    argv: list[str] | str,
    check: bool = True,
    input: bytes | None = None,
) -> subprocess.CompletedProcess:
    """Run argv inside a node (its netns, mount, pid and uts namespaces); str runs via sh -c.

    A node given by name is looked up by its netns, so it works for any lab dir.
    """
    if isinstance(node, str):
        ns = node_netns(_index_of(node))
        pid = _find_init(ns) if os.path.exists(f"/run/netns/{ns}") else None
        if pid is None:
            raise NetfixError(f"lab node {node} is not running (no live netns {ns})")
        node = LabNode(name=node, netns=ns, address=node_address(_index_of(node)), pid=pid)
    cmd = ["sh", "-c", argv] if isinstance(argv, str) else list(argv)
    # Files, not pipes: a command that leaves a daemon behind (`sleep 1000 &`, a fake
    # kube-proxy) would otherwise hold the pipe open and block us until it exits.
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        proc = subprocess.run(
            ["nsenter", "-t", str(node.pid), "-n", "-m", "-p", "-u", "--", *cmd],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=fout,
            stderr=ferr,
            # The host's environment (pyenv shims, venvs) means nothing inside the node.
            env={"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8"},
            cwd="/",
        )
        fout.seek(0)
        ferr.seek(0)
        out = fout.read().decode(errors="replace")
        err = ferr.read().decode(errors="replace")
    if check and proc.returncode != 0:
        raise NodeExecError(node.name, proc.returncode, cmd, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
