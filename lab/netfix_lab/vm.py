"""VM lab node: a Debian bookworm VM under QEMU, reached by SSH on a 127.0.0.1 port forward.

The netns lab cannot write host-global knobs (conntrack max/buckets, rings, coalescing) or
reboot; this node can. The root file system is built once with debootstrap and cached
outside the repository; every `vm_up` boots a fresh qcow2 overlay on top of it, so a run
starts clean while a reboot inside the run keeps what netfix wrote.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from netfix.errors import NetfixError
from netfix.util import atomic_write
from netfix_lab.netns import keygen, write_inventory
from netfix_lab.util import host_path, pid_alive, remove_entries, tail, which

DEFAULT_CACHE = Path(os.environ.get("NETFIX_VM_CACHE", "/var/cache/netfix-vm"))
DEFAULT_DIR = Path(os.environ.get("NETFIX_VM_DIR", "/run/netfix-vm"))

SUITE = "bookworm"
HOSTNAME = "vm1"
IMAGE_SIZE = "3G"
PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "openssh-server",
    "nftables",
    "ethtool",
    "iproute2",
    "irqbalance",
    "conntrack",
    "kmod",
    "procps",
    "initramfs-tools",
    # netfix agent install (netfix/agentdeploy.py) runs the agent on the distribution's
    # Python, as on every Debian/Ubuntu cloud image (cloud-init needs it).
    "python3",
)
# Fixed MACs so systemd-networkd can match each NIC without knowing its kernel name.
MAC_E1000E = "52:54:00:4e:46:01"
MAC_VIRTIO = "52:54:00:4e:46:02"
MEMORY_MB = 1024
CPUS = 2
SSH_TIMEOUT_KVM = 90.0
# Under TCG a boot takes 40-100 s; a busy 2-core machine can double that.
SSH_TIMEOUT_TCG = 420.0
POWEROFF_TIMEOUT = 60.0
# A SIGKILLed QEMU is gone in well under a second; a D-state I/O can take a few.
KILL_TIMEOUT = 30.0
# Under TCG a boot sometimes hangs in early kernel init (seen: no console line after
# "IP idents hash table entries" for minutes, the guest clock stopped) while the same
# image boots in 20 s the next time. The longest quiet stretch of a good boot here is a
# few seconds; after this many the QEMU is restarted (the disk is untouched that early).
STALL_SECONDS = 90.0
BOOT_TRIES = 3
# Under working KVM the kernel banner reaches the serial port in about a second.
KVM_PROBE_SECONDS = 15.0

# Tool -> Debian package, for the "missing tool" error.
BUILD_TOOLS = {
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "ssh-keygen": "openssh-client",
    "qemu-img": "qemu-utils",
}
RUN_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "ssh-keygen": "openssh-client",
}
# Files of the cached image; the cache dir is complete only when all exist.
IMAGE_FILES = (
    "rootfs.img",
    "vmlinuz",
    "initrd.img",
    "host_key.pub",
    "id_ed25519",
    "id_ed25519.pub",
    "image.json",
)
VM_ENTRIES = (
    "state.json",
    "inventory.yaml",
    "known_hosts",
    "id_ed25519",
    "id_ed25519.pub",
    "overlay.qcow2",
    "qemu.pid",
    "serial.log",
    "qemu.log",
)

# Lines of the serial console and QEMU logs quoted in errors.
LOG_TAIL = 25

Progress = Callable[[str], None]


@dataclass
class VmInfo:
    name: str
    port: int
    pid: int
    accel: str  # "kvm" or "tcg"
    boot_seconds: float
    image: str = ""  # the cached image dir it boots (kernel, initrd, base of the overlay)


# ---------------------------------------------------------------------------- checks


def _need_tools(tools: dict[str, str], what: str) -> dict[str, str]:
    found: dict[str, str] = {}
    missing: list[str] = []
    for tool in tools:
        path = which(tool)
        if path is None:
            missing.append(tool)
        else:
            found[tool] = path
    if missing:
        pkgs = " ".join(sorted({tools[t] for t in missing}))
        raise NetfixError(
            f"the VM lab node needs {', '.join(missing)} to {what}; install them with "
            f"`apt-get install {pkgs}` (or run scripts/vm-deps.sh)"
        )
    return found


def _need_root() -> None:
    if os.geteuid() != 0:
        raise NetfixError("the VM lab node needs root (debootstrap, chroot); run it as root")


def _run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": host_path(),
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
    }
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, **kw)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
        raise NetfixError(f"vm: `{shlex.join(argv)}` failed (exit {proc.returncode}):\n{tail}")
    return proc


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses, so no mirror name lives in the repository."""
    candidates: list[tuple[str, str]] = []  # (uri, suites)
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                if m:
                    fields[m.group(1).lower()] = m.group(2)
            if "deb" not in fields.get("types", "").split() or "enabled: no" in stanza.lower():
                continue
            for uri in fields.get("uris", "").split():
                candidates.append((uri, fields.get("suites", "")))
    list_files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]
    for path in list_files:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            # deb [opts] URI SUITE COMPONENTS...
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                candidates.append((m.group(1), m.group(2)))
    for uri, suites in candidates:
        # The main archive, not -security/-updates/-backports (those lack a full suite).
        if re.search(r"(^|\s)(bookworm|stable)(\s|$)", suites) and "security" not in uri:
            return uri.rstrip("/")
    for uri, _suites in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise NetfixError(
        "vm: no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/; "
        "the image is built from the mirror apt already uses"
    )


# ---------------------------------------------------------------------------- image build


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _umount_under(path: Path) -> None:
    """Unmount what debootstrap left mounted below path (it mounts /proc, /sys, maybe /dev)."""
    prefix = str(path.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    # /proc/mounts escapes spaces as \040; build paths never contain any.
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        _run(["umount", "-l", target], check=False)


def _remove_build(path: Path) -> None:
    # Deleting through a still-mounted /dev or /proc would delete the host's files.
    _umount_under(path)
    if any(
        m.startswith(str(path.resolve()) + "/")
        for m in (line.split()[1] for line in Path("/proc/mounts").read_text().splitlines())
    ):
        raise NetfixError(f"vm: {path} still has mounts below it; not deleting it")
    shutil.rmtree(path, ignore_errors=True)


def image_name() -> str:
    """The cached image's dir name, keyed by what debootstrap installs: a change to the
    package list builds a new image instead of booting a stale one."""
    key = hashlib.sha256(f"{SUITE} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    return f"image-{key}"


def image_ready(cache_dir: Path = DEFAULT_CACHE) -> bool:
    return all((Path(cache_dir) / image_name() / f).exists() for f in IMAGE_FILES)


def _configure_rootfs(root: Path, work: Path, say: Progress) -> None:
    def put(rel: str, text: str, mode: int = 0o644) -> None:
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    put("/etc/hostname", HOSTNAME + "\n")
    put("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")
    put("/etc/fstab", "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    # "*" can never match a password: console and password logins are impossible, while
    # sshd (unlike with a "!" lock) still accepts the key.
    _run(["chroot", str(root), "usermod", "-p", "*", "root"])

    # Networking: both NICs by DHCP from QEMU's user networks. Matching by MAC works
    # whatever names udev gives them. Only the first NIC owns the default route, so the
    # second network never carries SSH replies.
    put(
        "/etc/systemd/network/10-nic0.network",
        f"[Match]\nMACAddress={MAC_E1000E}\n\n[Network]\nDHCP=ipv4\n",
    )
    put(
        "/etc/systemd/network/11-nic1.network",
        f"[Match]\nMACAddress={MAC_VIRTIO}\n\n[Network]\nDHCP=ipv4\n\n"
        "[DHCPv4]\nUseRoutes=false\nUseDNS=false\n",
    )
    _run(["systemctl", f"--root={root}", "enable", "systemd-networkd.service"])
    # Boot would wait for the network for up to 2 min when a lease is slow under emulation.
    _run(["systemctl", f"--root={root}", "mask", "systemd-networkd-wait-online.service"])
    put("/etc/resolv.conf", "nameserver 10.0.2.3\n")

    say("image: ssh keys")
    ssh = root / "etc/ssh"
    for old in ssh.glob("ssh_host_*"):
        old.unlink()
    keygen(ssh / "ssh_host_ed25519_key", f"root@{HOSTNAME}")
    shutil.copy2(ssh / "ssh_host_ed25519_key.pub", work / "host_key.pub")
    keygen(work / "id_ed25519", "netfix-vm-lab")
    put("/root/.ssh/authorized_keys", (work / "id_ed25519.pub").read_text(), 0o600)
    (root / "root/.ssh").chmod(0o700)
    put(
        "/etc/ssh/sshd_config.d/netfix-lab.conf",
        """\
# netfix VM lab node: root by the lab's key only.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
MaxStartups 50:30:100
MaxSessions 50
""",
    )
    # A key regenerated at first boot would not match the known_hosts recorded here.
    for unit in ("ssh-keygen.service", "regenerate_ssh_host_keys.service"):
        if (root / "lib/systemd/system" / unit).exists():
            _run(["systemctl", f"--root={root}", "mask", unit], check=False)
    # Serial console for the log; systemd starts serial-getty@ttyS0 from console=ttyS0.
    _run(["systemctl", f"--root={root}", "enable", "ssh.service"], check=False)
    # Nothing may be pulled from the network at boot or later (apt timers).
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        _run(["systemctl", f"--root={root}", "mask", unit], check=False)
    _run(["chroot", str(root), "apt-get", "clean"], check=False)


def build_image(cache_dir: Path = DEFAULT_CACHE, progress: Progress | None = None) -> Path:
    """Build the cached base image once; return its dir (rootfs.img, vmlinuz, initrd.img)."""
    say = progress or (lambda _m: None)
    cache_dir = Path(cache_dir).absolute()
    final = cache_dir / image_name()
    if image_ready(cache_dir):
        return final
    _need_root()
    _need_tools(BUILD_TOOLS, "build its image")
    with _locked(cache_dir / "build.lock"):
        # Another process may have finished the build while we waited for the lock.
        if image_ready(cache_dir):
            return final
        for stale in cache_dir.glob("build-*"):
            # Leftovers of crashed builds: with the lock held, no build is running.
            say(f"image: removing {stale.name} left by a crashed build")
            _remove_build(stale)
        mirror = debian_mirror()
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="build-", dir=cache_dir))
        try:
            root = work / "rootfs"
            say(f"image: debootstrap {SUITE} from {mirror} (a few minutes, once)")
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=" + ",".join(PACKAGES),
                    SUITE,
                    str(root),
                    mirror,
                ]
            )
            say(f"image: debootstrap done ({time.monotonic() - t0:.0f} s); configuring")
            _configure_rootfs(root, work, say)
            _umount_under(root)
            kernels = sorted((root / "boot").glob("vmlinuz-*"))
            initrds = sorted((root / "boot").glob("initrd.img-*"))
            if not kernels or not initrds:
                raise NetfixError(f"vm: no kernel/initrd in {root}/boot after debootstrap")
            shutil.copy2(kernels[-1], work / "vmlinuz")
            shutil.copy2(initrds[-1], work / "initrd.img")
            say("image: mkfs.ext4 -d rootfs")
            _run(
                [
                    "mkfs.ext4",
                    "-q",
                    "-F",
                    "-L",
                    "netfix-vm",
                    "-d",
                    str(root),
                    str(work / "rootfs.img"),
                    IMAGE_SIZE,
                ]
            )
            _remove_build(root)
            meta = {
                "suite": SUITE,
                "mirror": mirror,
                "kernel": kernels[-1].name,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.monotonic() - t0, 1),
            }
            (work / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            # The rename is the commit: a crash before it leaves only a build-* dir.
            work.rename(final)
        except BaseException:
            _remove_build(work)
            raise
        say(f"image: ready in {time.monotonic() - t0:.0f} s ({final})")
    return final


def image_meta(cache_dir: Path = DEFAULT_CACHE) -> dict:
    return json.loads((Path(cache_dir) / image_name() / "image.json").read_text())


# ---------------------------------------------------------------------------- running


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until the process is really gone: reaped if it is our child, else no /proc/PID
    or every thread a zombie. False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            # A child whose leader is a zombie with live threads is not reapable yet: 0.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
            mine = True
        except ChildProcessError:
            mine = False
        if not mine and not pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _kill_wait(pid: int, sig: int = signal.SIGKILL, timeout: float = KILL_TIMEOUT) -> None:
    """Send `sig` and return only once the process is really gone (its files closed, its
    image locks released); NetfixError if it is still there after `timeout` seconds."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    if not _wait_gone(pid, timeout):
        raise NetfixError(
            f"vm: QEMU pid {pid} still has live threads {timeout:.0f} s after "
            f"{signal.Signals(sig).name}; its disk images stay locked until it is gone "
            f"(check `ls /proc/{pid}/task` and the process state in /proc/{pid}/task/*/stat)"
        )


def _cmdline(pid: int) -> list[str]:
    """The process's argv. A zombie leader's own cmdline reads empty while its other
    threads live: read theirs then, so such a QEMU is still found (and killed)."""
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    text = read(f"/proc/{pid}/cmdline")
    if not text:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            tids = []
        text = next((t for t in (read(f"/proc/{pid}/task/{i}/cmdline") for i in tids) if t), "")
    return text.split("\0") if text else []


def _our_qemus(lab_dir: Path) -> list[int]:
    """QEMU processes whose pidfile is in this lab dir (also when the pidfile is gone)."""
    pidfile = str(lab_dir / "qemu.pid")
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            argv = _cmdline(int(d.name))
            if argv and "qemu-system" in Path(argv[0]).name and pidfile in argv:
                pids.append(int(d.name))
    return pids


def _kvm_usable() -> bool:
    """Try creating a VM: /dev/kvm may exist while nested virtualisation does not work."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, 0xAE00) != 12:  # KVM_GET_API_VERSION
            return False
        vm = fcntl.ioctl(fd, 0xAE01, 0)  # KVM_CREATE_VM
        os.close(vm)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _kernel_talks(serial_log: Path, pid: int) -> bool:
    deadline = time.monotonic() + KVM_PROBE_SECONDS
    while time.monotonic() < deadline and pid_alive(pid):
        try:
            if "Linux version" in serial_log.read_text(errors="replace"):
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_state(lab_dir: Path) -> VmInfo | None:
    try:
        return VmInfo(**json.loads((lab_dir / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _connect(lab_dir: Path, port: int, timeout: float = 10.0):
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(lab_dir / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username="root",
        key_filename=str(lab_dir / "id_ed25519"),
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        look_for_keys=False,
        allow_agent=False,
    )
    return client


def vm_exec(
    cmd: str, lab_dir: Path = DEFAULT_DIR, check: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess:
    """Run a shell command as root inside the VM over SSH."""
    lab_dir = Path(lab_dir)
    info = _read_state(lab_dir)
    if info is None:
        raise NetfixError(f"vm: no VM running for {lab_dir}")
    client = _connect(lab_dir, info.port)
    try:
        _stdin, stdout, stderr = client.exec_command(cmd, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        rc = stdout.channel.recv_exit_status()
    finally:
        client.close()
    if check and rc != 0:
        raise NetfixError(f"vm {info.name}: {cmd!r} exited {rc}: {err.strip()}")
    return subprocess.CompletedProcess(cmd, rc, out, err)


def _boot_id(lab_dir: Path, port: int) -> str | None:
    try:
        client = _connect(lab_dir, port, timeout=5.0)
    except Exception:  # noqa: BLE001 - any failure means "not up yet"
        return None
    try:
        _i, out, _e = client.exec_command("cat /proc/sys/kernel/random/boot_id", timeout=10)
        return out.read().decode().strip() or None
    except Exception:  # noqa: BLE001
        return None
    finally:
        client.close()


def _wait_ssh(
    lab_dir: Path,
    port: int,
    pid: int,
    timeout: float,
    say: Progress,
    not_boot_id: str | None = None,
) -> str:
    with _quiet_paramiko():
        return _poll_ssh(lab_dir, port, pid, timeout, say, not_boot_id)


@contextmanager
def _quiet_paramiko() -> Iterator[None]:
    """paramiko logs every refused banner as a traceback, while a guest boots or hangs."""
    plog = logging.getLogger("paramiko")
    level = plog.level
    plog.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        plog.setLevel(level)


class BootStalled(NetfixError):
    """The guest printed nothing for STALL_SECONDS while booting."""


def _poll_ssh(
    lab_dir: Path, port: int, pid: int, timeout: float, say: Progress, not_boot_id: str | None
) -> str:
    t0 = time.monotonic()
    last = t0
    serial = lab_dir / "serial.log"
    seen, changed = -2, t0
    while True:
        bid = _boot_id(lab_dir, port)
        if bid is not None and bid != not_boot_id:
            return bid
        now = time.monotonic()
        size = serial.stat().st_size if serial.exists() else -1
        if size != seen:
            seen, changed = size, now
        elif now - changed > STALL_SECONDS:
            lines = tail(serial, LOG_TAIL).strip().splitlines() or ["(nothing)"]
            raise BootStalled(f"vm: boot stalled: no console output for {STALL_SECONDS:.0f} s "
                              f"after {lines[-1].strip()!r}")
        if not pid_alive(pid):
            raise NetfixError(
                f"vm: QEMU (pid {pid}) exited while booting; serial log "
                f"({lab_dir / 'serial.log'}):\n{tail(lab_dir / 'serial.log', LOG_TAIL)}\n"
                f"QEMU log:\n{tail(lab_dir / 'qemu.log', LOG_TAIL)}"
            )
        if now - t0 > timeout:
            raise NetfixError(
                f"vm: no SSH on 127.0.0.1:{port} within {timeout:.0f} s; run `netfix lab down` "
                f"to clean up. Serial log ({lab_dir / 'serial.log'}):\n"
                f"{tail(lab_dir / 'serial.log', LOG_TAIL)}"
            )
        if now - last >= 15:
            last = now
            say(f"vm: waiting for SSH ({now - t0:.0f} s)")
        time.sleep(1.0)


def _write_state(lab_dir: Path, info: VmInfo) -> None:
    atomic_write(lab_dir / "state.json", (json.dumps(asdict(info), indent=2) + "\n").encode())


def _write_outputs(lab_dir: Path, info: VmInfo, host_key_pub: str) -> Path:
    _write_state(lab_dir, info)
    kind, key = host_key_pub.split()[:2]
    atomic_write(lab_dir / "known_hosts", f"[127.0.0.1]:{info.port} {kind} {key}\n".encode())
    return write_inventory(lab_dir, "vm", {info.name: f"{{ssh_host: 127.0.0.1, ssh_port: "
                                                      f"{info.port}}}"}, "netfix lab up --vm")


def _start_qemu(qemu: str, image: Path, lab_dir: Path, port: int, accel: str) -> tuple[int, str]:
    """Start a daemonized QEMU; return its pid (0 if it did not start) and its stderr."""
    argv = _qemu_argv(qemu, image, lab_dir, port, accel)
    pidfile = lab_dir / "qemu.pid"
    pidfile.unlink(missing_ok=True)  # a stale one would pass for a started QEMU
    with open(lab_dir / "qemu.log", "a") as log:
        log.write(shlex.join(argv) + "\n")
    proc = _run(argv, check=False)
    if proc.returncode == 0 and pidfile.exists():
        return int(pidfile.read_text().split()[0]), proc.stderr
    return 0, proc.stderr


def _qemu_argv(qemu: str, image: Path, lab_dir: Path, port: int, accel: str) -> list[str]:
    return [
        qemu,
        "-name",
        "netfix-vm1",
        "-machine",
        "q35",
        *(["-enable-kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]),
        "-m",
        str(MEMORY_MB),
        "-smp",
        str(CPUS),
        "-kernel",
        str(image / "vmlinuz"),
        "-initrd",
        str(image / "initrd.img"),
        "-append",
        "root=/dev/vda rw console=ttyS0 net.ifnames=1 systemd.show_status=1",
        "-drive",
        f"file={lab_dir / 'overlay.qcow2'},format=qcow2,if=virtio,cache=unsafe",
        # Two user networks with distinct subnets, so each NIC's replies go out through it.
        # restrict=on: the guest reaches nothing outside (no NTP, no apt); only the SSH
        # forward on 127.0.0.1 and QEMU's own DHCP work.
        "-netdev",
        f"user,id=n0,net=10.0.2.0/24,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        f"e1000e,netdev=n0,mac={MAC_E1000E}",
        "-netdev",
        "user,id=n1,net=10.0.3.0/24,restrict=on",
        "-device",
        f"virtio-net-pci,netdev=n1,mac={MAC_VIRTIO}",
        "-display",
        "none",
        "-serial",
        f"file:{lab_dir / 'serial.log'}",
        "-monitor",
        "none",
        "-pidfile",
        str(lab_dir / "qemu.pid"),
        "-daemonize",
    ]


def vm_up(
    lab_dir: Path = DEFAULT_DIR, progress: Progress | None = None,
    cache_dir: Path = DEFAULT_CACHE, ssh_timeout: float | None = None,
) -> Path:
    """Boot the VM node (building the image first if needed); return the inventory path.
    `ssh_timeout`: seconds to wait for SSH (default by accelerator)."""
    say = progress or (lambda _m: None)
    _need_root()
    tools = _need_tools(RUN_TOOLS, "run")
    lab_dir = Path(lab_dir).absolute()
    if re.search(r"[\s,]", str(lab_dir)):
        raise NetfixError(f"vm lab dir {lab_dir} must not contain whitespace or commas")
    info = _read_state(lab_dir)
    if info is not None and pid_alive(info.pid) and info.pid in _our_qemus(lab_dir):
        say(f"{info.name} already running (127.0.0.1:{info.port}, {info.accel})")
        return lab_dir / "inventory.yaml"
    _kill_stale(lab_dir, say)
    image = build_image(cache_dir, say)

    lab_dir.mkdir(parents=True, exist_ok=True)
    for entry in VM_ENTRIES:
        (lab_dir / entry).unlink(missing_ok=True)
    for f in ("id_ed25519", "id_ed25519.pub"):
        shutil.copy2(image / f, lab_dir / f)
    (lab_dir / "id_ed25519").chmod(0o600)
    host_key = (image / "host_key.pub").read_text()
    # A fresh overlay per run: the cached base stays pristine, reboots keep changes.
    _run(
        [
            tools["qemu-img"],
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(image / "rootfs.img"),
            str(lab_dir / "overlay.qcow2"),
        ]
    )

    # A KVM that stalls costs KVM_PROBE_SECONDS per boot; remember it per host kernel.
    kvm_verdict = Path(cache_dir) / "kvm-unusable"
    kvm_known_bad = _read_text(kvm_verdict) == os.uname().release
    if kvm_known_bad:
        say(f"vm: KVM failed on this host before; using TCG (delete {kvm_verdict} to retry)")
    accels = ["kvm", "tcg"] if _kvm_usable() and not kvm_known_bad else ["tcg"]
    pid = 0
    accel = ""
    for accel in accels:
        port = _free_port()
        pid, stderr = _start_qemu(tools["qemu-system-x86_64"], image, lab_dir, port, accel)
        why = stderr.strip() or "QEMU exited"
        if pid:
            if accel != "kvm" or _kernel_talks(lab_dir / "serial.log", pid):
                break
            # Nested KVM can pass the probe and then stall or stop on the first vCPU run
            # while the QEMU process stays alive.
            why = f"no kernel output within {KVM_PROBE_SECONDS:.0f} s"
            # The TCG QEMU opens the same overlay: it must wait for every thread to go.
            _kill_wait(pid)
        with open(lab_dir / "qemu.log", "a") as log:
            log.write(stderr)
        if accel == "kvm":
            say(f"vm: KVM did not work ({why}); using TCG")
            kvm_verdict.write_text(os.uname().release)
            (lab_dir / "serial.log").unlink(missing_ok=True)
    else:
        raise NetfixError(f"vm: QEMU did not start:\n{tail(lab_dir / 'qemu.log', LOG_TAIL)}")
    say(
        f"vm: QEMU pid {pid}, {accel.upper()}"
        + (" (software emulation; KVM unavailable)" if accel == "tcg" else "")
        + f", SSH on 127.0.0.1:{port}"
    )
    info = VmInfo(name=HOSTNAME, port=port, pid=pid, accel=accel, boot_seconds=0.0,
                  image=str(image))
    _write_outputs(lab_dir, info, host_key)
    t0 = time.monotonic()
    _wait_booted(tools, image, lab_dir, info, ssh_timeout or _ssh_timeout(accel), say)
    info.boot_seconds = round(time.monotonic() - t0, 1)
    inventory = _write_outputs(lab_dir, info, host_key)
    say(f"{info.name} up in {info.boot_seconds:.0f} s ({accel.upper()}); inventory {inventory}")
    return inventory


def _wait_booted(tools: dict[str, str], image: Path, lab_dir: Path, info: VmInfo,
                 timeout: float, say: Progress, not_boot_id: str | None = None) -> None:
    """Wait for SSH from a new boot; a boot that stalls is power-cycled, BOOT_TRIES times."""
    for attempt in range(1, BOOT_TRIES + 1):
        try:
            _wait_ssh(lab_dir, info.port, info.pid, timeout, say, not_boot_id)
            return
        except BootStalled as e:
            if attempt == BOOT_TRIES:
                raise
            say(f"{e}; restarting QEMU (boot {attempt + 1} of {BOOT_TRIES})")
            _kill_wait(info.pid)  # it holds the overlay's lock until every thread is gone
            info.pid, stderr = _start_qemu(tools["qemu-system-x86_64"], image, lab_dir,
                                           info.port, info.accel)
            if not info.pid:
                raise NetfixError(f"vm: QEMU did not start again:\n{stderr.strip()}") from e
            _write_state(lab_dir, info)


def vm_info(lab_dir: Path = DEFAULT_DIR) -> VmInfo | None:
    info = _read_state(Path(lab_dir))
    return info if info is not None and pid_alive(info.pid) else None


def _ssh_timeout(accel: str) -> float:
    return SSH_TIMEOUT_KVM if accel == "kvm" else SSH_TIMEOUT_TCG


def vm_reboot(
    lab_dir: Path = DEFAULT_DIR, progress: Progress | None = None,
    ssh_timeout: float | None = None,
) -> float:
    """Power-cycle the guest and wait until SSH answers from the new boot; return the seconds.

    A clean poweroff (the guest's shutdown path, disks synced) and a fresh QEMU on the same
    overlay, rather than an in-guest reboot: under software emulation a warm reboot took
    3-5 min here (early kernel init stalls, soft lockups), a cold boot 45-60 s. For what a
    reboot has to prove - that settings come back from the files on disk - a cold boot is
    the stricter test: no state survives in RAM or in QEMU's devices."""
    say = progress or (lambda _m: None)
    lab_dir = Path(lab_dir).absolute()
    info = vm_info(lab_dir)
    if info is None:
        raise NetfixError(f"vm: no VM running for {lab_dir}")
    tools = _need_tools(RUN_TOOLS, "run")
    image = Path(info.image) if info.image else Path(DEFAULT_CACHE) / image_name()
    old = _boot_id(lab_dir, info.port)
    t0 = time.monotonic()
    say("vm: powering off")
    _poweroff(info, lab_dir, say)
    info.pid, stderr = _start_qemu(tools["qemu-system-x86_64"], image, lab_dir, info.port,
                                   info.accel)
    if not info.pid:
        raise NetfixError(f"vm: QEMU did not start again:\n{stderr.strip()}")
    _write_state(lab_dir, info)
    say(f"vm: booting again (QEMU pid {info.pid})")
    # A changed boot id is the proof of a new boot.
    _wait_booted(tools, image, lab_dir, info, ssh_timeout or _ssh_timeout(info.accel), say,
                 not_boot_id=old)
    took = time.monotonic() - t0
    say(f"vm: back after reboot in {took:.0f} s")
    return took


def _poweroff(info: VmInfo, lab_dir: Path, say: Progress) -> None:
    """Shut the guest down cleanly; kill QEMU after a timeout."""
    try:
        # The session dies with sshd; "--no-block" lets the command return first.
        with _quiet_paramiko():
            vm_exec("systemctl --no-block poweroff", lab_dir, check=False, timeout=10)
    except Exception:  # noqa: BLE001 - a hung guest is killed below
        pass
    if _wait_gone(info.pid, POWEROFF_TIMEOUT):
        return
    # The next QEMU (reboot) opens the same overlay: return only once this one is gone.
    try:
        _kill_wait(info.pid, signal.SIGTERM, timeout=5.0)
    except NetfixError:
        _kill_wait(info.pid)
    say(f"vm: {info.name} did not power off within {POWEROFF_TIMEOUT:.0f} s; killed")


def _kill_stale(lab_dir: Path, say: Progress) -> list[str]:
    removed = []
    for pid in _our_qemus(lab_dir):
        _kill_wait(pid)
        removed.append(f"stale qemu (pid {pid})")
        say(f"vm: killed stale QEMU pid {pid}")
    return removed


def vm_down(lab_dir: Path = DEFAULT_DIR, progress: Progress | None = None) -> list[str]:
    """Power the VM off cleanly (killing it after a timeout) and remove the run's files."""
    say = progress or (lambda _m: None)
    lab_dir = Path(lab_dir).absolute()
    removed: list[str] = []
    info = vm_info(lab_dir)
    if info is not None and info.pid in _our_qemus(lab_dir):
        _poweroff(info, lab_dir, say)
        removed.append(f"vm {info.name} (pid {info.pid})")
    removed += _kill_stale(lab_dir, say)
    # Only what the VM lab wrote, so a mistyped dir cannot wipe anything else.
    return removed + remove_entries(lab_dir, VM_ENTRIES, "vm")
