"""End to end on the VM lab node: host-global conntrack knobs, NIC rings and coalescing on
real drivers (e1000e, virtio-net), irqbalance under systemd, and persistence across reboots.

Opt-in (NETFIX_VM_TESTS=1): the first run builds the image (minutes) and every boot under
software emulation takes tens of seconds. The tests run in file order and share one VM:
each continues from the state the previous one left.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import missing_tools, skip_or_fail

pytestmark = pytest.mark.integration

NETFIX = str(Path(sys.executable).with_name("netfix"))
# public-vds plus e1000e rings/rx-usecs, virtio-net rings and irqbalance (the file says why).
PROFILE = str(Path(__file__).resolve().parents[1] / "data" / "vm-node.yaml")
MAX = "net.netfilter.nf_conntrack_max"
BUCKETS = "net.netfilter.nf_conntrack_buckets"
WANT = json.loads((Path(PROFILE).with_suffix(".expected.json")).read_text())["conntrack"]
# What vm-node.yaml asks for, in the form nic_state() reports.
WANT_NIC = {"e1000e rings": "rx=1024 tx=1024", "e1000e rx-usecs": "10",
            "virtio_net rings": "rx=128 tx=128", "virtio_net txqueuelen": "2500"}
WANT_IRQ = {"enabled": "enabled", "active": "active", "banned": "IRQBALANCE_BANNED_CPULIST=1"}
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
        from netfix_lab import vm as vmmod

        self.dir = lab_dir
        self.inventory = inventory
        self._vm = vmmod
        self.originals: dict[str, str] = {}
        self.nic_originals: dict[str, str] = {}
        self.irq_originals: dict[str, str] = {}
        self.ifaces: dict[str, str] = {}  # driver -> interface name

    def sh(self, cmd: str, check: bool = True) -> str:
        return self._vm.vm_exec(cmd, self.dir, check=check).stdout

    def sysctls(self, keys) -> dict[str, str]:
        # One SSH round trip for all keys; the VM is slow under emulation.
        out = self.sh("for k in " + " ".join(keys) + "; do sysctl -n $k; done")
        return dict(zip(keys, (" ".join(v.split()) for v in out.splitlines()), strict=True))

    def nic_state(self) -> dict[str, str]:
        """Rings and rx-usecs as ethtool reports them (its text output, parsed here on its
        own so that a bug in netfix's parser cannot hide a wrong value)."""
        e1000e, virtio = self.ifaces["e1000e"], self.ifaces["virtio_net"]
        out = self.sh(f"ethtool -g {e1000e}; echo @@; ethtool -c {e1000e}; echo @@; "
                      f"ethtool -g {virtio}; echo @@; cat /sys/class/net/{virtio}/tx_queue_len")
        rings_e, coal, rings_v, txqlen_v = out.split("@@")

        def current_rings(text: str) -> str:
            cur = text.split("Current hardware settings:")[1]
            rx = re.search(r"^RX:\s+(\d+)", cur, re.M)
            tx = re.search(r"^TX:\s+(\d+)", cur, re.M)
            assert rx and tx, text
            return f"rx={rx.group(1)} tx={tx.group(1)}"

        usecs = re.search(r"^rx-usecs:\s+(\S+)", coal, re.M)
        assert usecs, coal
        return {"e1000e rings": current_rings(rings_e), "e1000e rx-usecs": usecs.group(1),
                "virtio_net rings": current_rings(rings_v),
                "virtio_net txqueuelen": txqlen_v.strip()}

    def irq_state(self) -> dict[str, str]:
        """Unit state, and the banned-CPU setting of the running daemon (its environment
        comes from /etc/default/irqbalance at start: what is really in force)."""
        out = self.sh(
            "echo $(systemctl is-enabled irqbalance); echo $(systemctl is-active irqbalance); "
            "p=$(pidof irqbalance) && tr '\\0' '\\n' < /proc/$p/environ "
            "| grep '^IRQBALANCE_BANNED_CPULIST=' || echo none", check=False)
        enabled, active, banned = (out.splitlines() + ["", "", ""])[:3]
        return {"enabled": enabled, "active": active, "banned": banned}

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
def vm(lab_lock):
    # VM names and ports are global on the machine, like the lab's: one run at a time.
    need_vm()
    from netfix_lab import vm as vmmod

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
    for iface in node.sh("ls /sys/class/net").split():
        if iface != "lo":
            node.ifaces[node.sh(f"ethtool -i {iface}").split()[1]] = iface
    # Start from irqbalance off (a node tuned by hand), so enabling it is a change to prove.
    node.sh("systemctl disable --now --quiet irqbalance")
    node.nic_originals = node.nic_state()
    node.irq_originals = node.irq_state()
    try:
        yield node
    finally:
        vmmod.vm_down(lab_dir)
        print(f"\nVM timings: {json.dumps(TIMINGS)}")


def test_nics_are_e1000e_and_virtio_with_rings(vm):
    assert set(vm.ifaces) == {"e1000e", "virtio_net"}, vm.ifaces
    rings = vm.sh(f"ethtool -g {vm.ifaces['e1000e']}")
    assert "Pre-set maximums" in rings and "RX:" in rings, rings
    # The starting point differs from the profile everywhere, or the test proves nothing.
    assert all(vm.nic_originals[k] != WANT_NIC[k] for k in WANT_NIC), vm.nic_originals
    assert vm.irq_originals == {"enabled": "disabled", "active": "inactive", "banned": "none"}


def test_plan_has_writable_conntrack_max_and_buckets(vm):
    assert vm.originals[MAX] != WANT[MAX]
    ch = vm.plan("--profile", PROFILE)
    for key in (MAX, BUCKETS):
        assert ch[key]["action"] == "update", ch[key]
        assert "not-settable" not in ch[key]["flags"], ch[key]
        assert ch[key]["desired"] == WANT[key]


def test_plan_has_nic_and_irqbalance_rows(vm):
    e1000e, virtio = vm.ifaces["e1000e"], vm.ifaces["virtio_net"]
    ch = vm.plan("--profile", PROFILE)
    rings = ch[f"{e1000e} rings"]
    assert rings["action"] == "update" and rings["desired"] == "rx=1024 tx=1024", rings
    # The e1000e NIC carries the SSH session: disruptive, and refused without the flag.
    assert {"disruptive", "management"} <= set(rings["flags"]), rings
    assert ch[f"{e1000e} coalesce"]["desired"] == "rx-usecs=10"
    assert ch[f"{virtio} rings"]["desired"] == "rx=128 tx=128"
    txq = ch[f"{virtio} txqueuelen"]
    assert txq["action"] == "update" and txq["desired"] == "2500" and not txq["flags"], txq
    assert "management" not in ch[f"{virtio} rings"]["flags"]
    irq = {t: c for t, c in ch.items() if c["knob"] == "irqbalance"}
    assert {c["desired"] for c in irq.values()} >= {"enabled", "running"}, irq
    assert all(c["action"] == "update" for c in irq.values()), irq


def test_apply_refuses_management_nic_without_allow_disruptive(vm):
    p = vm.netfix("apply", "--yes", "--profile", PROFILE, check_rc=1)
    assert "--allow-disruptive" in p.stdout + p.stderr, p.stdout + p.stderr
    # Refused as a whole host: nothing changed, not even the harmless rows.
    assert vm.sysctls(list(WANT)) == vm.originals
    assert vm.nic_state() == vm.nic_originals


def test_apply_sets_conntrack_live_at_4_to_1(vm):
    vm.netfix("apply", "--yes", "--profile", PROFILE, "--allow-disruptive")
    now = vm.sysctls(list(WANT))
    assert now == WANT
    assert int(now[MAX]) == 4 * int(now[BUCKETS])
    assert vm.sh("cat /sys/module/nf_conntrack/parameters/hashsize").strip() == WANT[BUCKETS]


def test_apply_sets_rings_coalescing_and_irqbalance_live(vm):
    assert vm.nic_state() == WANT_NIC
    assert vm.irq_state() == WANT_IRQ


def test_values_survive_reboot(vm):
    files = vm.sh("ls /etc/modules-load.d /etc/modprobe.d /etc/sysctl.d")
    assert "netfix" in files, files
    vm.reboot()
    assert vm.sysctls(list(WANT)) == WANT
    assert vm.nic_state() == WANT_NIC
    assert vm.irq_state() == WANT_IRQ
    # Nothing pending after the reboot: the persisted state is the desired state.
    ch = vm.plan("--profile", PROFILE)
    pending = {k: c for k, c in ch.items() if c["action"] not in ("ok", "info")}
    assert not pending, pending


def test_driver_reset_brings_nic_settings_back(vm):
    """The udev rule: a driver re-registering the interface (an unbind/bind of the virtio
    NIC, which resets its rings to the driver default) gets netfix's settings again."""
    virtio = vm.ifaces["virtio_net"]
    dev = vm.sh(f"basename $(readlink /sys/class/net/{virtio}/device)").strip()
    rules = "/etc/udev/rules.d/90-netfix-nic.rules"

    def reset_and_read() -> tuple[str, str]:
        vm.sh(f"echo {dev} > /sys/bus/virtio/drivers/virtio_net/unbind; "
              f"echo {dev} > /sys/bus/virtio/drivers/virtio_net/bind; udevadm settle; "
              f"while [ ! -e /sys/class/net/{virtio} ]; do sleep 0.2; done")
        return vm.sh(f"cat /sys/class/net/{virtio}/ifindex").strip(), \
            vm.nic_state()["virtio_net rings"]

    before = vm.sh(f"cat /sys/class/net/{virtio}/ifindex").strip()
    # Guard first: without netfix's rule, a reset leaves the driver default in place.
    vm.sh(f"mv {rules} /root/netfix-nic.rules.off && udevadm control --reload")
    index, rings = reset_and_read()
    assert index != before  # a new netdev, so the reset was real
    assert rings == vm.nic_originals["virtio_net rings"]
    vm.sh(f"mv /root/netfix-nic.rules.off {rules} && udevadm control --reload")
    _, rings = reset_and_read()
    assert rings == WANT_NIC["virtio_net rings"]


def test_rollback_restores_live_and_at_boot(vm):
    irq_file = vm.sh("sha256sum /etc/default/irqbalance")
    vm.netfix("rollback", "--yes")
    assert vm.sysctls(list(WANT)) == vm.originals
    assert vm.nic_state() == vm.nic_originals
    assert vm.irq_state() == vm.irq_originals
    assert vm.sh("sha256sum /etc/default/irqbalance") != irq_file  # the distro's file again
    vm.reboot()
    assert vm.nic_state() == vm.nic_originals
    assert vm.irq_state() == vm.irq_originals
    # Back to a node without netfix's files: conntrack is loaded by whoever needs it.
    vm.sh("modprobe nf_conntrack")
    assert vm.sysctls(list(WANT)) == vm.originals
    left = vm.sh("grep -rl netfix /etc/modules-load.d /etc/modprobe.d /etc/sysctl.d "
                 "/etc/netfix /etc/systemd/system /etc/udev/rules.d 2>/dev/null || true")
    assert left.strip() == "", left


NETFIX_FILES = ("/etc/sysctl.d /etc/modprobe.d /etc/modules-load.d /etc/netfix "
                "/etc/systemd/system /etc/udev/rules.d /etc/default/irqbalance")


def files_state(vm) -> str:
    """Every file netfix may write, with its sha256, and the directories: byte identity."""
    return vm.sh(f"find {NETFIX_FILES} 2>/dev/null | sort | while read -r f; do "
                 "if [ -f \"$f\" ]; then sha256sum \"$f\"; else echo \"dir $f\"; fi; done")


def test_power_cut_mid_apply_is_undone_by_the_next_run(vm):
    """Invariant: a node powered off half-way through an apply (here after its second
    file step) comes back with the transaction `applying`; the next netfix run undoes the
    steps made, marks it interrupted-restored, and the files are byte-identical to before
    and the live values the originals."""
    before_files, before_values = files_state(vm), vm.sysctls(list(WANT))
    assert before_values == vm.originals
    ch = vm.plan("--profile", PROFILE)
    ops = [op for c in ch.values() if c["action"] == "update" for op in c["ops"]]
    files = [i for i, op in enumerate(ops, 1) if op["kind"] == "file"]
    step = files[1]  # two persistence files on disk, the rest not
    env = {**os.environ, "NETFIX_TEST_PAUSE_AFTER_STEP": str(step), "COLUMNS": "200"}
    proc = subprocess.Popen([NETFIX, "apply", "--yes", "--profile", PROFILE, "--allow-disruptive",
                             "-i", str(vm.inventory)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    paused = ""
    while not paused and time.monotonic() < deadline:
        time.sleep(1)
        paused = vm.sh("ls /var/lib/netfix/tx/ | grep '[.]paused$' || true").strip()
    assert paused, "the apply never paused"
    tx_id = paused.removesuffix(".paused")
    assert files_state(vm) != before_files  # really half-applied, on disk
    vm.reboot()  # a power cycle: the paused run dies with the machine
    proc.kill()
    proc.communicate()
    assert vm.sh(f"head -n1 /var/lib/netfix/tx/{tx_id}.status").split()[0] == "applying"
    said = " ".join(vm.netfix("history").stdout.split())  # the table wraps long cells
    assert f"transaction {tx_id} had been interrupted after step {step}" in said, said
    assert vm.sh(f"head -n1 /var/lib/netfix/tx/{tx_id}.status").split()[0] == \
        "interrupted-restored"
    assert files_state(vm) == before_files
    vm.sh("modprobe nf_conntrack")
    assert vm.sysctls(list(WANT)) == vm.originals


def test_without_persistence_files_settings_are_lost_at_boot(vm):
    """Guards the tests above: persistence comes from netfix's files, not from the VM."""
    vm.netfix("apply", "--yes", "--profile", PROFILE, "--allow-disruptive")
    # The NIC settings have two ways back at boot: the unit (via its drop-in) and the udev
    # rule (udev replays "add" for every device at boot). Take both away.
    vm.sh("rm /etc/modules-load.d/netfix-conntrack.conf /etc/udev/rules.d/90-netfix-nic.rules "
          "/etc/systemd/system/sysinit.target.d/netfix-nic.conf")
    vm.reboot()
    # Nothing runs /etc/netfix/nic.sh now: the drivers' defaults again.
    assert vm.nic_state() == vm.nic_originals
    ch = vm.plan("--profile", PROFILE)
    e1000e = vm.ifaces["e1000e"]
    assert ch[f"{e1000e} rings"]["action"] == "update", ch[f"{e1000e} rings"]
    timeouts = [k for k in WANT if "timeout" in k]
    # Nothing loads nf_conntrack at boot now, so its sysctls are absent or at kernel defaults.
    out = vm.sh("for k in " + " ".join(timeouts) + "; do sysctl -n $k 2>/dev/null || echo -; done")
    now = dict(zip(timeouts, out.split(), strict=True))
    assert all(now[k] != WANT[k] for k in timeouts), now
    pending = [k for k in timeouts if ch[k]["action"] != "ok"]
    assert pending == timeouts, {k: ch[k] for k in timeouts}


# ------------------------------------------------------------------ doctor on real symptoms
# The VM at rest, then the conntrack table filled for real (with --trace-drops during the
# flood), the remedy profile applied and the same load again, a controller killed during a
# trace, and an OOM kill. Each leaves the node as it found it (the OOM kill stays in the
# kernel log, so it runs last).

CT_PORT = 9999
CT_MAX = 512
TRACEFS = "/sys/kernel/tracing"
# A UDP flood over loopback: `burst` new flows at once, then `rate` a second for `secs`
# seconds. Each `echo > /dev/udp/...` is a new socket, so a new source port: a new
# conntrack entry (unreplied: UDP timeout). Once the table is full the send fails.
CT_LOAD = r"""#!/bin/bash
burst=$1 rate=$2 secs=$3
for i in $(seq 1 "$burst"); do echo x > /dev/udp/127.0.0.1/9999; done 2>/dev/null
for s in $(seq 1 "$secs"); do
  for i in $(seq 1 "$rate"); do echo x > /dev/udp/127.0.0.1/9999; done 2>/dev/null
  sleep 1
done
"""
DOCTOR: dict[str, object] = {}


def doctor_json(vm, *args: str) -> tuple[dict, int]:
    t0 = time.monotonic()
    p = vm.netfix("doctor", "--json", *args, check_rc=None)
    took = time.monotonic() - t0
    assert p.returncode in (0, 2), f"doctor -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    host = next(h for h in json.loads(p.stdout)["hosts"] if h["host"] == "vm1")
    host["took"] = round(took, 2)
    return host, p.returncode


def problems(host: dict) -> list[str]:
    return [f"{f['code']} {f['severity']}: {f['summary']}" for f in host["findings"]
            if f["severity"] != "info"]


def ct_stat(vm) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack summed over CPUs (hex columns, by header name)."""
    lines = vm.sh("cat /proc/net/stat/nf_conntrack").split("\n")
    head = lines[0].split()
    total = dict.fromkeys(head, 0)
    for line in lines[1:]:
        if line.strip():
            for k, v in zip(head, line.split(), strict=True):
                total[k] += int(v, 16)
    return total


def start_load(vm, burst: int, rate: int, secs: int) -> None:
    vm.sh(f"conntrack -F >/dev/null 2>&1; setsid bash /root/ct-load.sh {burst} {rate} {secs} "
          ">/dev/null 2>&1 </dev/null &")


def wait_load(vm) -> None:
    deadline = time.monotonic() + 60
    while vm.sh("pgrep -f ct-load.sh || true").strip() and time.monotonic() < deadline:
        time.sleep(0.5)


def tracing_off(vm) -> tuple[str, str]:
    """The top-level enable switch, and any doctor instance left behind."""
    return (vm.sh(f"cat {TRACEFS}/events/skb/kfree_skb/enable").strip(),
            vm.sh(f"ls {TRACEFS}/instances | grep netfix-doctor || true").strip())


def test_doctor_healthy_vm_at_rest_has_no_warning(vm):
    # The test before leaves netfix's modprobe.d hashsize without its sysctl (persistence
    # broken on purpose): loaded from it, the table gets 8 x 65536 entries on 65536 buckets
    # and doctor rightly says conntrack-long-chains. At rest means the kernel's defaults.
    vm.sh("modprobe -r nf_conntrack 2>/dev/null; modprobe -C /dev/null nf_conntrack")
    host, rc = doctor_json(vm, "--window", "2")
    TIMINGS["doctor_window2_seconds"] = host["took"]
    assert host["status"] == "ok" and rc == 0, problems(host)
    assert not host["netns"] and host["kernel"].startswith("6.1")


@pytest.fixture(scope="module")
def ct_table(vm):
    """conntrack tracking for real (a Kubernetes node has kube-proxy's rules; a fresh VM
    registers no conntrack hook without a rule that needs it), the table 512 entries on
    many buckets (so that early drop rarely frees a slot: the drops are the table being
    full), and a UDP sink on the load's port (delivered packets are consumed, not freed
    with NO_SOCKET: the drop reasons seen are the table's). Everything restored after."""
    orig = vm.sysctls([MAX, BUCKETS])
    # SSH (this test's and doctor's own sessions) untracked: a full table drops new
    # connections, the management one too.
    t = "inet netfix_doctor_test"
    vm.sh(f"nft add table {t} && "
          f"nft add chain {t} pre '{{ type filter hook prerouting priority -300; }}' && "
          f"nft add rule {t} pre tcp dport 22 notrack && "
          f"nft add chain {t} raw_out '{{ type filter hook output priority -300; }}' && "
          f"nft add rule {t} raw_out tcp sport 22 notrack && "
          f"nft add chain {t} out '{{ type filter hook output priority 0; }}' && "
          f"nft add rule {t} out ct state new counter")
    vm.sh(f"cat > /root/ct-load.sh <<'EOF'\n{CT_LOAD}EOF")
    sink = vm.sh("command -v systemd-socket-activate >/dev/null && { setsid "
                 f"systemd-socket-activate -d -l 127.0.0.1:{CT_PORT} sh -c 'exec cat <&3 "
                 ">/dev/null' >/dev/null 2>&1 </dev/null & echo $!; } || true").strip()
    vm.sh(f"sysctl -qw {BUCKETS}=65536 {MAX}={CT_MAX}")
    try:
        yield orig
    finally:
        if sink:
            vm.sh(f"kill {sink}", check=False)
        vm.sh("nft delete table inet netfix_doctor_test; conntrack -F >/dev/null 2>&1; "
              f"sysctl -qw {BUCKETS}={orig[BUCKETS]} {MAX}={orig[MAX]}", check=False)
        vm.sh("rm -f /root/ct-load.sh", check=False)


def test_doctor_conntrack_table_full_with_drop_reasons(vm, ct_table, tmp_path_factory):
    assert vm.sysctls([MAX])[MAX] == str(CT_MAX)
    fix = tmp_path_factory.mktemp("doctor") / "fix.yaml"
    start_load(vm, 700, 60, 9)
    time.sleep(1.0)  # the burst fills the table; the window sees the steady part
    before = ct_stat(vm)
    host, rc = doctor_json(vm, "--window", "5", "--trace-drops", "5", "--fix-profile", str(fix))
    after = ct_stat(vm)
    wait_load(vm)
    TIMINGS["doctor_window5_trace5_seconds"] = host["took"]
    assert rc == 2
    assert "table full" in vm.sh("dmesg | grep 'nf_conntrack: table full' | tail -1")
    full = next(f for f in host["findings"] if f["code"] == "conntrack-table-full")
    assert full["severity"] == "critical" and full["now"], full
    assert full["evidence"]["drop_per_s"] > 0 and full["evidence"]["max"] == CT_MAX, full
    # The kernel's own reason: the netfilter drop, as often as conntrack counted drops.
    reasons = [f for f in host["findings"] if f["code"] == "drops-reason"]
    assert reasons, host["findings"]
    top = reasons[0]
    ct_drops = round(full["evidence"]["drop_per_s"] * host["window_seconds"])
    DOCTOR.update(trace_netfilter_drops=top["evidence"]["count"], conntrack_drop_delta=ct_drops,
                  test_drop_delta=after["drop"] - before["drop"],
                  trace_seconds=top["evidence"]["trace_seconds"],
                  window_seconds=host["window_seconds"],
                  top_location=top["evidence"]["top_location"],
                  reasons={f["subject"]: f["evidence"]["count"] for f in reasons})
    TIMINGS["doctor_trace"] = dict(DOCTOR)
    assert top["subject"] == "NETFILTER_DROP", reasons
    assert top["evidence"]["see"] == "conntrack" and top["severity"] == "warning"
    assert top["evidence"]["capped"] == 0 and top["evidence"]["top_location"] not in ("", "-")
    # The trace covers the first 5 s of the window (it is read before the second sample).
    assert 0.6 * ct_drops <= top["evidence"]["count"] <= 1.15 * ct_drops + 5, DOCTOR
    assert tracing_off(vm) == ("0", ""), tracing_off(vm)
    DOCTOR["fix"] = str(fix)


def test_doctor_fix_profile_plan_apply_and_the_same_load_drops_nothing(vm, ct_table):
    fix = DOCTOR.get("fix")
    assert fix, "the flood test did not run"
    ch = vm.plan("--profile", str(fix))
    assert ch[MAX]["action"] == "update" and int(ch[MAX]["desired"]) >= 2 * CT_MAX, ch[MAX]
    assert ch[BUCKETS]["action"] == "update", ch[BUCKETS]
    assert int(ch[MAX]["desired"]) == 4 * int(ch[BUCKETS]["desired"])
    vm.netfix("apply", "--yes", "--profile", str(fix))
    try:
        applied = vm.sysctls([MAX, BUCKETS])
        assert applied[MAX] == ch[MAX]["desired"], applied
        drop0 = ct_stat(vm)["drop"]
        start_load(vm, 700, 60, 9)  # the same load: 700 + 540 flows, 15 s UDP timeout now
        time.sleep(1.0)
        host, _ = doctor_json(vm, "--window", "5")
        wait_load(vm)
        DOCTOR["drops_after_fix"] = ct_stat(vm)["drop"] - drop0
        full = [f for f in host["findings"] if f["code"] == "conntrack-table-full"]
        assert all(f["severity"] == "info" and not f["now"] for f in full), full
        assert DOCTOR["drops_after_fix"] == 0, DOCTOR
    finally:
        vm.netfix("rollback", "--yes")
    assert vm.sysctls([MAX, BUCKETS]) == {MAX: str(CT_MAX), BUCKETS: "65536"}


def test_doctor_trace_is_off_after_the_controller_and_script_were_killed(vm):
    """SIGKILL the controller during the trace window, and the node's doctor script with
    it (no trap runs): the guard in its own session turns the tracepoint off anyway."""
    trace = 5
    proc = subprocess.Popen([NETFIX, "doctor", "--window", "0", "--trace-drops", str(trace),
                             "-i", str(vm.inventory)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    inst = ""
    while not inst and time.monotonic() - t0 < 30:
        inst = vm.sh(f"ls {TRACEFS}/instances | grep netfix-doctor || true").strip()
    assert inst, "doctor never created its tracefs instance"
    assert vm.sh(f"cat {TRACEFS}/instances/{inst}/events/skb/kfree_skb/enable").strip() == "1"
    guard = vm.sh("pgrep -f nd-trace-guard | head -n1").strip()
    script = vm.sh(f"ps -o ppid= -p {guard}").strip()
    proc.kill()
    proc.wait()
    vm.sh(f"kill -9 {script}", check=False)  # the script dies without its traps
    started = time.monotonic() - t0
    assert vm.sh(f"cat {TRACEFS}/instances/{inst}/events/skb/kfree_skb/enable").strip() == "1"
    # the guard's deadline: trace + 20 s after the start
    deadline = time.monotonic() + trace + 20 + 10 - started
    while time.monotonic() < deadline and tracing_off(vm)[1]:
        time.sleep(1)
    TIMINGS["trace_guard_off_after_seconds"] = round(time.monotonic() - t0, 1)
    assert tracing_off(vm) == ("0", ""), tracing_off(vm)


def test_doctor_reports_a_memory_cgroup_oom_kill(vm):
    p = vm._vm.vm_exec("systemd-run --scope -p MemoryMax=32M tail /dev/zero", vm.dir,
                       check=False)
    assert p.returncode != 0  # killed
    host, rc = doctor_json(vm, "--window", "2")
    oom = next(f for f in host["findings"] if f["code"] == "memory-cgroup-oom-kill")
    assert oom["evidence"]["process"] == "tail" and oom["evidence"]["kills"] >= 1, oom
    assert oom["severity"] == "warning" and rc == 2
    DOCTOR["oom"] = oom["summary"]
    print(f"\ndoctor on the VM: {json.dumps(DOCTOR)}")


# ------------------------------------------------------------------ boot applier (issue 14)
# systemd-sysctl on a real systemd node: detected (pid 1 is systemd), and its file order
# (/etc/sysctl.conf read only through Debian's 99-sysctl.conf symlink) is what a reboot
# really leaves, as the plan predicted.

def test_boot_applier_is_systemd_sysctl_and_a_reboot_keeps_its_order(vm, tmp_path):
    """Invariant: after a reboot each key holds the plan's `boot` value: 99-zz.conf beats
    /etc/sysctl.conf (read as 99-sysctl.conf, before it), and sysctl.conf beats netfix's
    90-netfix.conf. Restored after: the files, and netfix's transaction rolled back."""
    ka, fin = "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout"
    assert vm.sh("readlink /etc/sysctl.d/99-sysctl.conf").strip() == "../sysctl.conf"
    saved = vm.sh("base64 -w0 /etc/sysctl.conf").strip()
    profile = tmp_path / "boot.yaml"
    profile.write_text(f"description: boot applier on the VM\nextends: {PROFILE}\n"
                       f"sysctl:\n  {fin}: 30\n  {ka}: 3000\n")
    vm.sh(f"printf '{ka} = 2222\\n' > /etc/sysctl.d/99-zz.conf && "
          f"printf '{ka} = 1111\\n{fin} = 11\\n' >> /etc/sysctl.conf")
    try:
        ch = vm.plan("--profile", str(profile))
        assert [w["name"] for w in ch[ka]["writers"]][:1] == ["systemd-sysctl"], ch[ka]
        # the version from the libsystemd-shared-NNN.so name, as `--version` says it
        version = vm.sh("/usr/lib/systemd/systemd-sysctl --version").split()[1]
        assert ch[ka]["writers"][0]["version"] == version, ch[ka]["writers"][0]
        assert (ch[ka]["boot"], ch[fin]["boot"]) == ("2222", "11")
        shadow = {k: next(r["detail"] for r in ch[k]["reasons"] if r["code"] == "shadowed")
                  for k in (ka, fin)}
        assert shadow == {ka: "/etc/sysctl.d/99-zz.conf", fin: "/etc/sysctl.d/99-sysctl.conf"}
        vm.netfix("apply", "--yes", "--profile", str(profile), "--allow-disruptive")
        assert vm.sysctls([ka, fin]) == {ka: "3000", fin: "30"}
        vm.reboot()
        assert vm.sysctls([ka, fin]) == {ka: "2222", fin: "11"}
    finally:
        vm.sh(f"rm -f /etc/sysctl.d/99-zz.conf; echo {saved} | base64 -d > /etc/sysctl.conf")
        vm.netfix("rollback", "--yes", "--force", check_rc=None)


# ------------------------------------------------- who wins: a .link file against netfix
# A real systemd .link file sets the e1000e rings (udevd applies it when the interface is
# added: at boot and on re-add) and a netfix profile sets other rings. The plan says which
# wins at boot (netfix: its udev rule runs after every rule of the event, the .link
# file's net_setup_link included); a reboot shows the interface ends with that value.
# The .link file carries 99-default.link's naming policy, so the interface keeps its name.
# Afterwards the transaction is rolled back, the .link file removed and the rings put back.

LINK_FILE = "/etc/systemd/network/50-netfix-test-e1000e.link"
LINK_RINGS, NETFIX_RINGS = "rx=512 tx=512", "rx=2048 tx=2048"
LINK_TEXT = ("[Match]\nDriver=e1000e\n\n[Link]\n"
             "NamePolicy=keep kernel database onboard slot path\n"
             "AlternativeNamesPolicy=database onboard slot path\n"
             "MACAddressPolicy=persistent\nRxBufferSize=512\nTxBufferSize=512\n")
LINK_PROFILE = ("description: e1000e rings against a .link file\n"
                "nic:\n  interfaces:\n    - match: {driver: e1000e}\n"
                "      rings: {rx: 2048, tx: 2048}\n")


def test_link_file_against_netfix_rings_plan_says_netfix_and_reboot_agrees(vm, tmp_path):
    e1000e = vm.ifaces["e1000e"]
    before = vm.nic_state()["e1000e rings"]
    rules = "/etc/udev/rules.d/90-netfix-nic.rules"
    profile = tmp_path / "link-vs-netfix.yaml"
    profile.write_text(LINK_PROFILE)
    vm.sh(f"cat > {LINK_FILE} <<'X'\n{LINK_TEXT}X")
    applied = False
    try:
        # The .link file is real: re-adding the interface with no netfix rule in the way
        # (set aside if an earlier test left one) gives its rings.
        vm.sh(f"if [ -e {rules} ]; then mv {rules} /root/netfix-nic.rules.aside; fi; "
              f"udevadm control --reload && udevadm trigger --action=add --settle "
              f"/sys/class/net/{e1000e}; "
              f"if [ -e /root/netfix-nic.rules.aside ]; then mv /root/netfix-nic.rules.aside "
              f"{rules}; fi; udevadm control --reload")
        assert vm.nic_state()["e1000e rings"] == LINK_RINGS

        row = vm.plan("--profile", str(profile))[f"{e1000e} rings"]
        assert row["desired"] == NETFIX_RINGS and row["wins"] == "netfix", row
        assert row["boot"] == NETFIX_RINGS and "other-writer" not in row["flags"], row
        udev = next(w for w in row["writers"] if w["name"] == "systemd-udevd")
        assert (udev["when"], udev["value"], udev["source"], udev["wins"]) == (
            "link-add", LINK_RINGS, LINK_FILE, False), row["writers"]
        own = next(w for w in row["writers"] if w["name"] == "netfix-nic")
        assert own["wins"] and own["value"] == NETFIX_RINGS

        vm.netfix("apply", "--yes", "--profile", str(profile), "--allow-disruptive")
        applied = True
        assert vm.nic_state()["e1000e rings"] == NETFIX_RINGS
        vm.reboot()
        # Same name (the .link file kept the naming policy) and netfix's rings, as planned.
        assert vm.sh(f"cat /sys/class/net/{e1000e}/operstate").strip() == "up"
        assert vm.nic_state()["e1000e rings"] == NETFIX_RINGS
    finally:
        if applied:
            vm.netfix("rollback", "--yes")
        rx, tx = (kv.split("=")[1] for kv in before.split())
        vm.sh(f"rm -f {LINK_FILE}; udevadm control --reload; "
              f"ethtool -G {e1000e} rx {rx} tx {tx} 2>/dev/null || true")
    assert vm.nic_state()["e1000e rings"] == before
    assert vm.sh(f"ls {LINK_FILE} 2>/dev/null || true").strip() == ""


# --------------------------------------------------------------------------------------
# netfix agent install / uninstall (systemd): the agent put on the VM node from the
# controller (netfix/agentdeploy.py), its sandbox, a reboot, and an uninstall that leaves
# the node's files byte-identical.

AGENT_PROFILE = str(Path(__file__).resolve().parents[1] / "data" / "agent-vm.yaml")
AGENT_INTERVAL = 5
AGENT_RUN = "/usr/bin/python3 -I -B /opt/netfix/run.py"
# Everything but the kernel's and the runtime's trees, logs, netfix's own journal and the
# state systemd and the kernel keep across a reboot by themselves.
SNAPSHOT = (
    "find / -xdev \\( -path /proc -o -path /sys -o -path /run -o -path /dev -o -path /tmp "
    "-o -path /var/tmp -o -path /var/log -o -path /var/lib/netfix -o -path /var/lib/systemd "
    "-o -path /var/cache \\) -prune -o -printf '%y %m %u %g %p %l\\n' | sort > /root/.snap; "
    "find /etc /opt /usr/local /var/lib -xdev \\( -path /var/lib/netfix -o -path "
    "/var/lib/systemd \\) -prune -o -type f -print0 | sort -z | xargs -0 sha256sum "
    ">> /root/.snap; sha256sum < /root/.snap; mv /root/.snap /var/tmp/netfix-snap.$1"
)


def snapshot(vm, label: str) -> str:
    """The hash of SNAPSHOT's listing; the listing stays in /var/tmp (outside it) so that a
    mismatch can say which files differ."""
    return vm.sh(f"sh -c {shlex.quote(SNAPSHOT)} - {label}").split()[0]


def snapshot_diff(vm, a: str, b: str) -> str:
    return vm.sh(f"diff /var/tmp/netfix-snap.{a} /var/tmp/netfix-snap.{b} | head -40",
                 check=False)
AGENT: dict = {}
CT_CONF = "/etc/sysctl.d/90-netfix-conntrack.conf"


SANDBOX_UNIT = "/etc/systemd/system/netfix-sandbox-test.service"


def sandboxed(vm, args: str) -> tuple[int, str]:
    """Run `netfix ARGS` under the installed unit's own [Service] settings (its hardening),
    as a oneshot unit next to it, removed again afterwards. (No systemd-run --wait --pipe:
    it needs D-Bus, which the minbase VM, like many nodes, does not run.)"""
    text = vm.sh("cat /etc/systemd/system/netfix-agent.service").split("[Install]")[0]
    keep = [ln for ln in text.splitlines()
            if not ln.startswith(("ExecStart=", "Type=", "Restart=", "RestartSec="))]
    log = "/run/netfix-sandbox-test.log"  # /run: outside the file snapshot
    unit = "\n".join(keep).replace("[Service]", f"[Service]\nType=oneshot\n"
                                    f"ExecStart={AGENT_RUN} {args}\n"
                                    f"StandardOutput=truncate:{log}") + "\n"
    vm.sh(f"printf %s {shlex.quote(unit)} > {SANDBOX_UNIT} && systemctl daemon-reload")
    try:
        out = vm.sh(f"systemctl start netfix-sandbox-test.service; echo \"rc=$?\"; cat {log}",
                    check=False)
    finally:
        vm.sh(f"rm -f {SANDBOX_UNIT} {log} && systemctl daemon-reload")
    rc = re.search(r"^rc=(\d+)$", out, re.M)
    assert rc, out
    return int(rc.group(1)), out


def test_agent_install_from_the_controller(vm):
    # The node starts on the agent's profile, applied from the controller: what the agent
    # then enforces are live values only, and what install and uninstall do to the node's
    # files is measured against this.
    assert vm.sh("command -v python3").strip() == "/usr/bin/python3"
    # The tests before may end with a reboot after a rollback: conntrack is loaded again
    # only by whoever needs it (kube-proxy does at start), here before its max is read.
    vm.sh("modprobe nf_conntrack")
    # What the tests before left (the whole file shares one VM): the rollback below must
    # come back to exactly this.
    AGENT["pre"] = {"max": vm.sysctls([MAX])[MAX], "irq": vm.irq_state()["enabled"],
                    "ct": vm.sh(f"cat {CT_CONF} 2>/dev/null || echo absent")}
    (applied,) = json.loads(vm.netfix("apply", "--yes", "--json", "--profile",
                                      AGENT_PROFILE).stdout)
    AGENT["apply"] = applied["tx"]
    AGENT["before"] = snapshot(vm, "before")
    t0 = time.monotonic()
    p = vm.netfix("agent", "install", "--profile", AGENT_PROFILE, "--mode", "enforce",
                  "--interval", str(AGENT_INTERVAL), "--json")
    TIMINGS["agent_install_seconds"] = round(time.monotonic() - t0, 1)
    (res,) = json.loads(p.stdout)
    assert res["ok"] and "netfix-agent.service enabled and started" in res["message"], res
    assert vm.sh(f"{AGENT_RUN} --version").strip() == "netfix, version 0.1.0"
    assert vm.sh("systemctl is-enabled netfix-agent.service").strip() == "enabled"
    # One transaction in the node's journal, visible from the controller like any apply:
    # every bundle file, the profile and the unit, then the service.
    (tx,) = [t for t in json.loads(vm.netfix("history", "--json").stdout)["vm1"]
             if t["id"] == res["tx"]]
    assert tx["status"].startswith("applied") and tx["profile"] == "agent-vm", tx
    TIMINGS["agent_install_steps"] = tx["steps"]
    assert tx["steps"] > 100, tx
    AGENT["tx"] = res["tx"]
    # A second install is refused, nothing changed.
    again = vm.netfix("agent", "install", "--profile", AGENT_PROFILE, check_rc=1)
    assert "uninstall" in again.stdout + again.stderr


def test_agent_unit_verifies_and_its_exposure_is_measured(vm):
    p = vm._vm.vm_exec("systemd-analyze verify /etc/systemd/system/netfix-agent.service",
                       vm.dir, check=False)
    assert p.returncode == 0 and "netfix-agent" not in p.stderr, p.stderr
    sec = vm.sh("systemd-analyze security --no-pager netfix-agent.service", check=False)
    m = re.search(r"Overall exposure level for netfix-agent.service:\s*([\d.]+)", sec)
    assert m, sec[-2000:]
    TIMINGS["agent_exposure"] = float(m.group(1))
    # ProtectSystem=strict, NoNewPrivileges, the private /tmp and the rest count: the
    # default for a root service is 9.6 ("UNSAFE").
    assert float(m.group(1)) < 9.6, sec[-2000:]


def test_agent_unit_runs_netfix(vm):
    deadline = time.monotonic() + 120
    state = ""
    while time.monotonic() < deadline:
        state = vm.sh("systemctl is-active netfix-agent.service", check=False).strip()
        log = vm.sh("journalctl -u netfix-agent.service -o cat --no-pager", check=False)
        if state == "active" and '"event": "plan"' in log:
            break
        time.sleep(2)
    # the loop runs netfix's code under the unit and has planned at least once
    assert state == "active" and '"event": "plan"' in log, (state, log[-2000:])


def test_agent_sandbox_lets_netfix_apply_and_roll_back(vm):
    """The unit's hardening (ProtectSystem=strict with its ReadWritePaths, the capability
    bounding set, ...) is the one netfix works under: the rollback of the controller's apply
    and the same apply again (sysctls, sysctl.d, modprobe.d, modules-load.d, the NIC boot
    unit and udev rule, irqbalance's config, enable and restart), each run with the unit's
    own settings. The agent is stopped meanwhile, so it cannot race them."""
    vm.sh("systemctl stop netfix-agent.service")
    try:
        rc, out = sandboxed(vm, f"rollback --yes --tx {AGENT['apply']}")
        assert rc == 0 and "rolled-back" in out, out
        assert vm.sysctls([MAX])[MAX] == AGENT["pre"]["max"] != "262144"
        assert vm.sh(f"cat {CT_CONF} 2>/dev/null || echo absent") == AGENT["pre"]["ct"]
        assert vm.irq_state()["enabled"] == AGENT["pre"]["irq"]
        rc, out = sandboxed(vm, "apply --yes --profile /etc/netfix/agent/"
                                f"{Path(AGENT_PROFILE).stem}.yaml")
        assert rc == 0 and "applied" in out, out
        assert vm.sysctls([MAX])[MAX] == "262144"
        assert vm.sh(f"cat /sys/class/net/{vm.ifaces['virtio_net']}/tx_queue_len").strip() \
            == "2500"
        assert vm.irq_state() == WANT_IRQ
    finally:
        vm.sh("systemctl start netfix-agent.service")


def test_agent_sandbox_lets_the_firewall_render_its_table(vm):
    """The firewall's probe renders the desired table in a throwaway network namespace
    (`unshare -n`) to learn how this node's nft prints it: under the unit's own settings
    (RestrictNamespaces) that must work, or the agent could never plan a firewall
    profile ("the node's nft refused the ruleset")."""
    rc, out = sandboxed(vm, "plan --json --profile public-vds-firewall")
    assert rc == 0, out
    (host,) = json.loads(out[out.index("{"):out.rindex("}") + 1])["hosts"]
    (table,) = [c for c in host["changes"] if c["knob"] == "firewall"
                and c["target"] == "table inet netfix"]
    assert table["action"] != "skip" and "refused" not in json.dumps(table), table


def test_agent_enforce_sets_a_hand_change_back_within_one_interval(vm):
    """conntrack max changed by hand is back within one interval, recorded as a transaction
    (nothing else on the node sets it back: the agent did): the first round that starts
    after the change applies it, no later round is needed. Rounds, not seconds: the next
    round starts an interval after the one running at the change ENDS, and under software
    emulation a round (a plan in the node's Python, an apply) takes seconds."""
    before = {t["id"] for t in json.loads(vm.netfix("history", "--json").stdout)["vm1"]}
    vm.sh(f"sysctl -qw {MAX}=262144")  # as the profile says, then changed by hand
    t0 = float(vm.sh(f"sysctl -qw {MAX}=65536; date +%s.%N"))
    start = time.monotonic()
    while time.monotonic() - start < 3 * AGENT_INTERVAL + 10 and \
            vm.sysctls([MAX])[MAX] == "65536":
        time.sleep(0.5)
    assert vm.sysctls([MAX])[MAX] == "262144"
    plans = [p for p in agent_events(vm, t0, "plan") if MAX in p["keys"]]
    (fix,) = [e for e in agent_events(vm, t0, "enforce") if MAX in e["keys"]]
    TIMINGS["agent_enforce_seconds"] = round(fix["ts"] - t0, 1)
    # the first round that started after the change saw it, and fixed it (its plan is
    # logged just before the apply); a round already running at the change may miss it
    rounds = [p for p in agent_events(vm, t0, "plan") if p["started"] >= t0]
    assert rounds and rounds[0] == plans[0] and plans[0]["ts"] <= fix["ts"], (rounds, plans)
    assert not agent_events(vm, t0, "defer")
    new = [t for t in json.loads(vm.netfix("history", "--json").stdout)["vm1"]
           if t["id"] not in before]
    assert fix["tx"] in {t["id"] for t in new}, new
    assert all(t["status"].startswith("applied") for t in new), new


def agent_events(vm, since: float, event: str) -> list[dict]:
    """The agent's JSON log lines of one kind, logged at or after `since` (node clock)."""
    out = vm.sh("journalctl -u netfix-agent.service -o cat --no-pager", check=False)
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    return [ln for ln in lines if ln.get("event") == event and ln.get("ts", 0) >= since]


def test_agent_plans_on_a_driver_rebind_without_waiting_for_the_timer(vm):
    """A virtio-net unbind/bind re-registers the interface (a new ifindex, the driver's
    default txqueuelen): the agent's `ip monitor link` wakes it, it plans at once (reason
    `link`, well within the interval), and the interface has the profile's value again
    (netfix's udev rule sets it on the new netdev; whatever it left, the agent applies)."""
    virtio = vm.ifaces["virtio_net"]
    dev = vm.sh(f"basename $(readlink /sys/class/net/{virtio}/device)").strip()
    before = vm.sh(f"cat /sys/class/net/{virtio}/ifindex").strip()
    t0 = float(vm.sh("date +%s.%N"))
    vm.sh(f"echo {dev} > /sys/bus/virtio/drivers/virtio_net/unbind; "
          f"echo {dev} > /sys/bus/virtio/drivers/virtio_net/bind; "
          f"while [ ! -e /sys/class/net/{virtio} ]; do sleep 0.1; done")
    assert vm.sh(f"cat /sys/class/net/{virtio}/ifindex").strip() != before  # a real reset
    plans: list[dict] = []
    deadline = time.monotonic() + AGENT_INTERVAL + 20
    while time.monotonic() < deadline and not plans:
        plans = [p for p in agent_events(vm, t0, "plan") if p.get("reason") == "link"]
        time.sleep(0.5)
    assert plans, agent_events(vm, t0, "plan")
    TIMINGS["agent_link_event_to_plan_seconds"] = round(plans[0]["ts"] - t0, 2)
    TIMINGS["agent_link_event_to_plan_start_seconds"] = round(plans[0]["started"] - t0, 2)
    # reason `link`: the link event woke this round, not the timer. Measured to the plan's
    # start, not to its log line: a plan's own seconds under software emulation vary with
    # the machine's load (once logged 13.5 s after the rebind).
    assert plans[0]["started"] - t0 < 2 * AGENT_INTERVAL, plans[0]
    deadline = time.monotonic() + AGENT_INTERVAL + 10
    while time.monotonic() < deadline and \
            vm.sh(f"cat /sys/class/net/{virtio}/tx_queue_len").strip() != "2500":
        time.sleep(0.5)
    assert vm.sh(f"cat /sys/class/net/{virtio}/tx_queue_len").strip() == "2500"


# A kube-proxy stand-in of a version that writes conntrack max whenever it differs
# (1.29-1.35: docs/writers.md): 65536 per core on this 2-CPU node is 131072, below the
# profile's 262144, written at each start. Root-owned so netfix asks it for --version.
FAKE_KUBE_PROXY = """#!/bin/sh
[ "$1" = --version ] && { echo "Kubernetes v1.31.2"; exit 0; }
echo 131072 > /proc/sys/net/netfilter/nf_conntrack_max
while :; do sleep 60; done
"""


def test_agent_sets_kube_proxy_back_then_stops_fighting_it(vm):
    """Each start of the fake kube-proxy lowers conntrack max; the agent sets it back as a
    transaction, and at the third set-back it reports a conflict naming kube-proxy and
    leaves the key alone (the value stays as kube-proxy wrote it). A restart of the agent
    clears the conflict and the node is converged again for the tests after."""
    fake = "/usr/local/bin/kube-proxy"
    vm.sh(f"printf %s {shlex.quote(FAKE_KUBE_PROXY)} > {fake} && chmod 755 {fake}")
    t0 = float(vm.sh("date +%s.%N"))
    pid = ""
    fixed = 0
    try:
        for start in range(1, 4):
            if pid:
                vm.sh(f"kill {pid}")
            pid = vm.sh(f"setsid {fake} --conntrack-max-per-core=65536 >/dev/null 2>&1 "
                        "</dev/null & echo $!").strip()
            deadline = time.monotonic() + 2 * AGENT_INTERVAL + 15
            while time.monotonic() < deadline:
                if agent_events(vm, t0, "conflict") or vm.sysctls([MAX])[MAX] == "262144":
                    break
                time.sleep(0.5)
            if agent_events(vm, t0, "conflict"):
                break
            assert vm.sysctls([MAX])[MAX] == "262144", start  # set back
            fixed += 1
        (conflict,) = agent_events(vm, t0, "conflict")
        assert fixed == 2 and start == 3, (fixed, start)
        assert conflict["keys"] == [MAX] and "kube-proxy" in conflict["writer"], conflict
        time.sleep(2 * AGENT_INTERVAL)  # left alone from now on
        assert vm.sysctls([MAX])[MAX] == "131072"
        txs = [t for t in agent_events(vm, t0, "enforce") if MAX in t["keys"]]
        assert len(txs) == 2 and all(t["tx"] for t in txs), txs
    finally:
        vm.sh(f"kill {pid} 2>/dev/null; rm -f {fake}; systemctl restart netfix-agent.service")
    deadline = time.monotonic() + 2 * AGENT_INTERVAL + 15
    while time.monotonic() < deadline and vm.sysctls([MAX])[MAX] != "262144":
        time.sleep(0.5)
    assert vm.sysctls([MAX])[MAX] == "262144"


def test_agent_starts_again_after_a_reboot(vm):
    boot = vm.sh("cat /proc/sys/kernel/random/boot_id").strip()
    vm.reboot()
    assert vm.sh("cat /proc/sys/kernel/random/boot_id").strip() != boot
    deadline = time.monotonic() + 120
    log = state = ""
    while time.monotonic() < deadline:
        state = vm.sh("systemctl is-active netfix-agent.service", check=False).strip()
        log = vm.sh("journalctl -b -u netfix-agent.service -o cat --no-pager", check=False)
        if state == "active" and '"event": "plan"' in log:
            break
        time.sleep(2)
    assert vm.sh("systemctl is-enabled netfix-agent.service").strip() == "enabled"
    # started by systemd at boot (this boot's journal) and planning
    assert state == "active" and '"event": "plan"' in log, (state, log[-2000:])
    # Converged: nothing left to do for the agent's profile.
    plan = vm.plan("--profile", AGENT_PROFILE)
    assert not [t for t, c in plan.items() if c["action"] == "update"], plan


def test_agent_uninstall_leaves_the_files_byte_identical(vm):
    t0 = time.monotonic()
    p = vm.netfix("agent", "uninstall")
    TIMINGS["agent_uninstall_seconds"] = round(time.monotonic() - t0, 1)
    assert "stopped and removed" in p.stdout, p.stdout
    assert vm.sh("systemctl is-enabled netfix-agent.service", check=False).strip() in (
        "", "not-found")
    assert vm.sh("ls -d /opt/netfix /etc/netfix/agent 2>&1 || true").count("No such") == 2
    after = snapshot(vm, "after")
    assert after == AGENT["before"], snapshot_diff(vm, "before", "after")
    (tx,) = [t for t in json.loads(vm.netfix("history", "--json").stdout)["vm1"]
             if t["id"] == AGENT["tx"]]
    assert tx["status"].startswith("rolled-back"), tx
    # Nothing left to uninstall: said so, not an error.
    again = vm.netfix("agent", "uninstall")
    assert "not installed" in again.stdout, again.stdout


# ------------------------------------------------------------------ txorder: a revert's two
# status writes across a power cut (journal._transaction writes the revert's own final
# status before its target's mark; readers complete a missing mark)


def test_power_cut_between_a_reverts_own_status_and_its_targets_mark(vm, tmp_path):
    """Invariant: the node powered off after the armed revert R (run by its systemd timer)
    wrote its own final status and before T's mark comes back with both on disk as written
    (R applied, T applied-unconfirmed), the files byte-identical to before T and the values
    the originals; history reads T as reverted by R (kind revert), and `netfix confirm`
    reports T reverted (not confirmed) and writes the mark: nothing is redone."""
    keys = ["net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl"]
    profile = tmp_path / "revert.yaml"
    profile.write_text("sysctl:\n  net.ipv4.tcp_fin_timeout: 23\n"
                       "  net.ipv4.tcp_keepalive_intvl: 29\n")
    before_files, before_values = files_state(vm), vm.sysctls(keys)
    known = set(vm.sh("ls /var/lib/netfix/tx/").split())
    p = subprocess.run([NETFIX, "apply", "--yes", "--json", "--profile", str(profile),
                        "--confirm", "5", "-i", str(vm.inventory)], capture_output=True,
                       text=True, env={**os.environ, "NETFIX_TEST_PAUSE_BEFORE_MARKS": "1"})
    tx_id = json.loads(p.stdout)[0]["tx"]
    assert tx_id, p.stdout + p.stderr
    deadline = time.monotonic() + 300
    paused = ""
    while not paused and time.monotonic() < deadline:
        time.sleep(1)
        paused = " ".join(f for f in vm.sh("ls /var/lib/netfix/tx/").split()
                          if f.endswith(".paused") and f not in known)
    assert paused, "the revert never paused"
    rid = paused.removesuffix(".paused")

    def on_disk() -> tuple[str, str]:
        out = vm.sh(f"head -qn1 /var/lib/netfix/tx/{rid}.status /var/lib/netfix/tx/{tx_id}.status")
        return tuple(line.split()[0] for line in out.splitlines())

    assert on_disk() == ("applied", "applied-unconfirmed")
    assert vm.sysctls(keys) == before_values
    vm.reboot()  # a power cycle: the paused revert dies with the machine
    assert on_disk() == ("applied", "applied-unconfirmed")  # both writes were durable
    assert files_state(vm) == before_files and vm.sysctls(keys) == before_values
    hist = {t["id"]: t for t in json.loads(vm.netfix("history", "--json").stdout)["vm1"]}
    assert hist[rid]["kind"] == "revert" and hist[rid]["rolls_back"] == tx_id
    assert hist[tx_id]["status"].startswith(f"reverted-unconfirmed {rid} "), hist[tx_id]
    c = vm.netfix("confirm", "--json", "--tx", tx_id, check_rc=1)
    assert json.loads(c.stdout)[0]["status"] == "reverted", c.stdout
    assert on_disk() == ("applied", "reverted-unconfirmed")
    assert files_state(vm) == before_files and vm.sysctls(keys) == before_values
