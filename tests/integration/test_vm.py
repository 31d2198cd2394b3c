"""End to end on the VM lab node: host-global conntrack knobs and persistence across reboots.

Opt-in (NETFIX_VM_TESTS=1): the first run builds the image (minutes) and every boot under
software emulation takes tens of seconds. The tests run in file order and share one VM:
each continues from the state the previous one left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import missing_tools, skip_or_fail

pytestmark = pytest.mark.integration

NETFIX = str(Path(sys.executable).with_name("netfix"))
MAX = "net.netfilter.nf_conntrack_max"
BUCKETS = "net.netfilter.nf_conntrack_buckets"
# public-vds values (profiles/public-vds.yaml); buckets = max / 4.
WANT = {
    MAX: "262144",
    BUCKETS: "65536",
    "net.netfilter.nf_conntrack_tcp_timeout_syn_sent": "30",
    "net.netfilter.nf_conntrack_tcp_timeout_syn_recv": "30",
    "net.netfilter.nf_conntrack_udp_timeout": "15",
    "net.netfilter.nf_conntrack_udp_timeout_stream": "60",
    "net.netfilter.nf_conntrack_generic_timeout": "120",
    "net.netfilter.nf_conntrack_icmp_timeout": "10",
}
TIMINGS: dict[str, float | str] = {}


def need_vm() -> None:
    if not os.environ.get("NETFIX_VM_TESTS"):
        pytest.skip(
            "VM tests are opt-in: set NETFIX_VM_TESTS=1 (builds a Debian image once, boots QEMU)"
        )
    problem = None
    if os.geteuid() != 0:
        problem = "VM tests need root (debootstrap, chroot)"
    elif missing := missing_tools(("qemu-system-x86_64", "qemu-img", "debootstrap",
                                   "mkfs.ext4")):
        problem = f"missing tools: {', '.join(missing)} (run scripts/vm-deps.sh)"
    skip_or_fail(problem, "NETFIX_VM_TESTS=1 but the VM node")


class Vm:
    def __init__(self, lab_dir: Path, inventory: Path):
        from netfix import vm as vmmod

        self.dir = lab_dir
        self.inventory = inventory
        self._vm = vmmod
        self.originals: dict[str, str] = {}

    def sh(self, cmd: str, check: bool = True) -> str:
        return self._vm.vm_exec(cmd, self.dir, check=check).stdout

    def sysctls(self, keys) -> dict[str, str]:
        # One SSH round trip for all keys; the VM is slow under emulation.
        out = self.sh("for k in " + " ".join(keys) + "; do sysctl -n $k; done")
        return dict(zip(keys, (" ".join(v.split()) for v in out.splitlines()), strict=True))

    def reboot(self) -> float:
        took = self._vm.vm_reboot(self.dir, progress=print)
        TIMINGS.setdefault("reboot_seconds", round(took, 1))
        return took

    def netfix(self, *args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
        argv = [NETFIX, *args, "-i", str(self.inventory)]
        p = subprocess.run(
            argv, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
        )
        if check_rc is not None:
            assert p.returncode == check_rc, f"{argv} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def plan(self, *args: str) -> dict[str, dict]:
        data = json.loads(self.netfix("plan", "--json", *args, check_rc=None).stdout)
        host = next(h for h in data["hosts"] if h["host"] == "vm1")
        return {c["target"]: c for c in host["changes"]}


@pytest.fixture(scope="module")
def vm():
    need_vm()
    from netfix import vm as vmmod

    t0 = time.monotonic()
    fresh = not vmmod.image_ready()
    vmmod.build_image(progress=print)
    built = vmmod.image_meta()["build_seconds"]
    TIMINGS["image_build_seconds"] = (
        round(time.monotonic() - t0, 1) if fresh else f"cached (built in {built} s)"
    )
    lab_dir = Path(f"/run/netfix-vm-pytest-{os.getpid()}")
    inv = vmmod.vm_up(lab_dir, progress=print)
    info = vmmod.vm_info(lab_dir)
    assert info is not None
    TIMINGS["boot_to_ssh_seconds"] = info.boot_seconds
    TIMINGS["accel"] = info.accel
    node = Vm(lab_dir, inv)
    # A Kubernetes node has conntrack loaded (kube-proxy); a fresh VM has no reason to, and
    # without the module its sysctls do not exist.
    node.sh("modprobe nf_conntrack")
    node.originals = node.sysctls(list(WANT))
    try:
        yield node
    finally:
        vmmod.vm_down(lab_dir)
        print(f"\nVM timings: {json.dumps(TIMINGS)}")


def test_nics_are_e1000e_and_virtio_with_rings(vm):
    drivers = {}
    for iface in vm.sh("ls /sys/class/net").split():
        if iface == "lo":
            continue
        info = vm.sh(f"ethtool -i {iface}")
        drivers[info.split("driver:")[1].split()[0]] = iface
    assert set(drivers) == {"e1000e", "virtio_net"}, drivers
    rings = vm.sh(f"ethtool -g {drivers['e1000e']}")
    assert "Pre-set maximums" in rings and "RX:" in rings, rings


def test_plan_has_writable_conntrack_max_and_buckets(vm):
    assert vm.originals[MAX] != WANT[MAX]
    ch = vm.plan("--profile", "public-vds")
    for key in (MAX, BUCKETS):
        assert ch[key]["action"] == "update", ch[key]
        assert "not-settable" not in ch[key]["flags"], ch[key]
        assert ch[key]["desired"] == WANT[key]


def test_apply_sets_conntrack_live_at_4_to_1(vm):
    vm.netfix("apply", "--profile", "public-vds")
    now = vm.sysctls(list(WANT))
    assert now == WANT
    assert int(now[MAX]) == 4 * int(now[BUCKETS])
    assert vm.sh("cat /sys/module/nf_conntrack/parameters/hashsize").strip() == WANT[BUCKETS]


def test_values_survive_reboot(vm):
    files = vm.sh("ls /etc/modules-load.d /etc/modprobe.d /etc/sysctl.d")
    assert "netfix" in files, files
    vm.reboot()
    assert vm.sysctls(list(WANT)) == WANT
    # Nothing pending after the reboot: the persisted state is the desired state.
    ch = vm.plan("--profile", "public-vds")
    pending = {k: c for k, c in ch.items() if k in WANT and c["action"] != "ok"}
    assert not pending, pending


def test_rollback_restores_live_and_at_boot(vm):
    vm.netfix("rollback")
    assert vm.sysctls(list(WANT)) == vm.originals
    vm.reboot()
    # Back to a node without netfix's files: conntrack is loaded by whoever needs it.
    vm.sh("modprobe nf_conntrack")
    assert vm.sysctls(list(WANT)) == vm.originals
    left = vm.sh("grep -rl netfix /etc/modules-load.d /etc/modprobe.d /etc/sysctl.d || true")
    assert left.strip() == "", left


def test_without_modules_load_file_timeouts_are_lost_at_boot(vm):
    """Guards the test above: persistence comes from netfix's files, not from the VM."""
    vm.netfix("apply", "--profile", "public-vds")
    vm.sh("rm /etc/modules-load.d/netfix-conntrack.conf")
    vm.reboot()
    timeouts = [k for k in WANT if "timeout" in k]
    # Nothing loads nf_conntrack at boot now, so its sysctls are absent or at kernel defaults.
    out = vm.sh("for k in " + " ".join(timeouts) + "; do sysctl -n $k 2>/dev/null || echo -; done")
    now = dict(zip(timeouts, out.split(), strict=True))
    assert all(now[k] != WANT[k] for k in timeouts), now
    ch = vm.plan("--profile", "public-vds")
    pending = [k for k in timeouts if ch[k]["action"] != "ok"]
    assert pending == timeouts, {k: ch[k] for k in timeouts}
