"""doctor detectors (conntrack, softnet, nic, memory) on samples built from the recorded
files in tests/data/doctor, and their sh run on this machine."""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from netfix.doctor import LogLine, Sample, Severity, conntrack, memory, nic, softnet
from netfix.doctor.parse import ethtool_stats

DATA = Path(__file__).parent.parent / "data" / "doctor"
DOCTOR = Path(conntrack.__file__).parent
MINE = (conntrack, softnet, nic, memory)
CT_HEADER = ("entries  clashres found new invalid ignore delete chainlength insert "
             "insert_failed drop early_drop icmp_error  expect_new expect_create "
             "expect_delete search_restart")


def read(name: str) -> str:
    return (DATA / name).read_text()


def codes(findings) -> dict[str, object]:
    return {f.code: f for f in findings}


def sample(name: str, before: str, after: str | None = None, once: str = "",
           window: float = 5.0, **kw) -> Sample:
    return Sample("node1", window if after is not None else 0.0, once={name: once},
                  before={name: before}, after={} if after is None else {name: after},
                  **kw)


# --------------------------------------------------------------------------- conntrack

def ct_once(buckets=128, established=432000, syn_sent=120, syn_recv=60, udp=30,
            mem_kb=2_000_000) -> str:
    d = "/proc/sys/net/netfilter/"
    return (f"== settings\n{d}nf_conntrack_buckets:{buckets}\n"
            f"{d}nf_conntrack_tcp_timeout_established:{established}\n"
            f"{d}nf_conntrack_tcp_timeout_syn_sent:{syn_sent}\n"
            f"{d}nf_conntrack_tcp_timeout_syn_recv:{syn_recv}\n"
            f"{d}nf_conntrack_udp_timeout:{udp}\n{d}nf_conntrack_udp_timeout_stream:120\n"
            f"mem_total_kb:{mem_kb}\n")


def ct_sample(count: int, max_: int, cpus: list[dict] | None = None) -> str:
    d = "/proc/sys/net/netfilter/"
    text = f"== counts\n{d}nf_conntrack_count:{count}\n{d}nf_conntrack_max:{max_}\n"
    if cpus is not None:
        names = CT_HEADER.split()
        rows = [" ".join(f"{(count if n == 'entries' else c.get(n, 0)):08x}" for n in names)
                for c in cpus]
        text += "== stat\n" + CT_HEADER + "\n" + "\n".join(rows) + "\n"
    return text


def ct_klog() -> list[LogLine]:
    return [LogLine(100.0, "nf_conntrack: nf_conntrack: table full, dropping packet", "t1"),
            LogLine(101.0, "net_ratelimit: 812 callbacks suppressed", "t2"),
            LogLine(118.0, "nf_conntrack: table full, dropping packet", "t3")]


def test_conntrack_table_full_in_the_window_is_critical_with_rate_and_remedy():
    before = ct_sample(512, 512, [{"drop": 10}, {"drop": 0}])
    after = ct_sample(512, 512, [{"drop": 310, "early_drop": 5}, {"drop": 200}])
    s = sample("conntrack", before, after, ct_once(), klog=ct_klog(), uptime=120.0)
    found = codes(conntrack.detect(s))
    full = found["conntrack-table-full"]
    assert full.severity == Severity.CRITICAL and full.now
    assert full.evidence["drop_per_s"] == 100.0 and full.evidence["early_drop_per_s"] == 1.0
    assert full.evidence["log_lines"] == 2 and full.last_seen == "t3"
    assert full.evidence["fill_pct"] == 100.0
    ct = full.remedy.profile["conntrack"]
    # doubled, and at least 2048: the kernel rounds buckets up to a page (512), so buckets
    # derived 4:1 from 1024 (256) would not stick
    assert ct["max"] == 2048 and ct["auto"] is None
    assert ct["timeouts"] == {"tcp_syn_sent": 30, "tcp_syn_recv": 30, "udp": 15}
    assert "buckets derived: 512" in full.remedy.comments["conntrack.max"]  # 4:1
    assert "firewall" in full.remedy.action
    assert found["conntrack-fill-high"].severity == Severity.CRITICAL


def test_conntrack_drops_since_boot_only_are_info():
    s = sample("conntrack", ct_sample(10, 65536, [{"drop": 7}, {"early_drop": 2}]),
               once=ct_once(buckets=16384), klog=ct_klog(), uptime=9000.0)
    found = conntrack.detect(s)
    assert [(f.code, f.severity, f.now) for f in found] == [
        ("conntrack-table-full", Severity.INFO, False)]
    assert found[0].evidence["drop"] == 7 and found[0].evidence["early_drop"] == 2


def test_conntrack_early_drop_alone_is_a_warning():
    s = sample("conntrack", ct_sample(60000, 65536, [{}]),
               ct_sample(60000, 65536, [{"early_drop": 50}]), ct_once(buckets=16384))
    full = codes(conntrack.detect(s))["conntrack-table-full"]
    assert full.severity == Severity.WARNING and full.evidence["early_drop_per_s"] == 10.0


def test_conntrack_log_line_in_the_window_without_the_stat_file():
    # No CONFIG_NF_CONNTRACK_PROCFS: only the kernel log says it.
    s = sample("conntrack", ct_sample(512, 512), ct_sample(512, 512), ct_once(),
               klog=ct_klog(), uptime=120.0, window=5.0)
    full = codes(conntrack.detect(s))["conntrack-table-full"]
    assert full.severity == Severity.CRITICAL and full.now and full.last_seen == "t3"


def test_conntrack_in_a_netns_ignores_the_hosts_log():
    s = sample("conntrack", ct_sample(10, 512, [{}]), ct_sample(10, 512, [{}]),
               ct_once(), klog=ct_klog(), uptime=120.0, netns=True)
    assert conntrack.detect(s) == []


@pytest.mark.parametrize("count,severity", [
    (767, None), (768, Severity.WARNING), (900, Severity.WARNING),
    (922, Severity.CRITICAL)])
def test_conntrack_fill_thresholds(count, severity):
    s = sample("conntrack", ct_sample(count, 1024, [{}]), once=ct_once(buckets=256,
                                                                     established=86400))
    found = codes(conntrack.detect(s))
    if severity is None:
        assert "conntrack-fill-high" not in found
    else:
        f = found["conntrack-fill-high"]
        assert f.severity == severity and f.evidence["count"] == count
        assert f.remedy.profile["conntrack"]["max"] == 2048


def test_conntrack_insert_failed_rate():
    s = sample("conntrack", ct_sample(10, 65536, [{"insert_failed": 1}]),
               ct_sample(10, 65536, [{"insert_failed": 21}]), ct_once(buckets=16384))
    f = codes(conntrack.detect(s))["conntrack-insert-failed"]
    assert f.severity == Severity.WARNING and f.evidence["insert_failed_per_s"] == 4.0
    assert "single-request-reopen" in f.remedy.action and f.remedy.profile == {}


def test_conntrack_long_chains():
    s = sample("conntrack", ct_sample(10, 262144, [{}]), once=ct_once(buckets=16384))
    f = codes(conntrack.detect(s))["conntrack-long-chains"]
    assert f.severity == Severity.WARNING and f.evidence["chain"] == 16.0
    assert f.remedy.profile == {"conntrack": {"max": 262144, "auto": None}}
    ok = sample("conntrack", ct_sample(10, 262144, [{}]), once=ct_once(buckets=65536))
    assert "conntrack-long-chains" not in codes(conntrack.detect(ok))


def test_conntrack_long_established_timeout_on_a_half_full_table():
    s = sample("conntrack", ct_sample(600, 1024, [{}]), once=ct_once(buckets=256))
    f = codes(conntrack.detect(s))["conntrack-long-timeout"]
    assert f.severity == Severity.WARNING and f.evidence["tcp_timeout_established"] == 432000
    assert f.remedy.profile["conntrack"]["timeouts"]["tcp_established"] == 86400
    kube = sample("conntrack", ct_sample(600, 1024, [{}]),
                  once=ct_once(buckets=256, established=86400))
    assert conntrack.detect(kube) == []
    quiet = sample("conntrack", ct_sample(100, 1024, [{}]), once=ct_once(buckets=256))
    assert conntrack.detect(quiet) == []


def test_conntrack_old_kernel_header():
    text = read("nf_conntrack-4.19-searched.txt")
    more = text.replace("00000007 00000001", "00000011 00000001")  # cpu0 drop 7 -> 17
    s = sample("conntrack", "== stat\n" + text, "== stat\n" + more, window=2.0)
    f = codes(conntrack.detect(s))["conntrack-table-full"]
    assert f.evidence["drop_per_s"] == 5.0 and f.severity == Severity.CRITICAL


def test_conntrack_nothing_to_read():
    assert conntrack.detect(sample("conntrack", "")) == []
    assert conntrack.detect(Sample("h", 0.0)) == []


# ----------------------------------------------------------------------------- softnet

SN_ONCE = ("== settings\n/proc/sys/net/core/netdev_max_backlog:1000\n"
           "/proc/sys/net/core/netdev_budget:300\n/proc/sys/net/core/netdev_budget_usecs:8000\n"
           "== rps\neth0 rx-0 0\n== irqbalance\nrunning 0\n")


def sn_rows(rows: list[tuple[int, int, int]], cpu_ids: list[int] | None = None) -> str:
    """(processed, dropped, time_squeeze) per CPU as 15 columns."""
    out = []
    for i, (proc, drop, sq) in enumerate(rows):
        cols = [proc, drop, sq] + [0] * 9 + [(cpu_ids or range(len(rows)))[i], 0, 0]
        out.append(" ".join(f"{c:08x}" for c in cols))
    return "\n".join(out)


def sn_irqs(net_rx: list[int]) -> str:
    return ("".join(f"  CPU{i}" for i in range(len(net_rx))) + "\n      NET_RX: "
            + " ".join(str(n) for n in net_rx) + "\n")


def sn(rows, irqs=None) -> str:
    return f"== softnet_stat\n{sn_rows(rows)}\n== softirqs\n{sn_irqs(irqs or [0, 0])}"


def test_softnet_backlog_drops_in_the_window():
    s = sample("softnet", sn([(1000, 5, 0), (1000, 0, 0)]),
               sn([(9000, 5, 0), (9000, 250, 0)]), SN_ONCE)
    f = codes(softnet.detect(s))["softnet-backlog-drops"]
    assert f.severity == Severity.WARNING and f.now
    assert f.evidence["dropped_per_s"] == 50.0 and f.evidence["cpu"] == 1
    assert f.remedy.profile == {"sysctl": {"net.core.netdev_max_backlog": ">=2000"}}
    crit = sample("softnet", sn([(0, 0, 0)]), sn([(0, 600, 0)]), SN_ONCE)
    assert codes(softnet.detect(crit))["softnet-backlog-drops"].severity == Severity.CRITICAL


def test_softnet_13_columns_name_the_right_cpu():
    text = read("softnet_stat-13col-5.10-cpu2-offline.txt")
    more = text.replace("10c5e31f 000004d2", "10c5e31f 000004e6")  # cpu 3: +20 drops
    s = sample("softnet", "== softnet_stat\n" + text, "== softnet_stat\n" + more,
               SN_ONCE, window=2.0)
    f = codes(softnet.detect(s))["softnet-backlog-drops"]
    assert f.evidence["cpu"] == 3 and f.evidence["dropped_per_s"] == 10.0


def test_softnet_counter_wrap():
    s = sample("softnet", sn([(0, 0xFFFFFFF0, 0)]), sn([(0, 0x10, 0)]), SN_ONCE, window=1.0)
    assert codes(softnet.detect(s))["softnet-backlog-drops"].evidence["dropped_per_s"] == 32


def test_softnet_since_boot_drops_are_info():
    found = softnet.detect(sample("softnet", sn([(10, 7, 3), (10, 0, 9)]), once=SN_ONCE))
    assert [(f.code, f.severity, f.now, f.evidence["dropped"]) for f in found] == [
        ("softnet-backlog-drops", Severity.INFO, False, 7)]


def test_softnet_time_squeeze():
    s = sample("softnet", sn([(0, 0, 10), (0, 0, 0)]), sn([(0, 0, 40), (0, 0, 30)]), SN_ONCE)
    f = codes(softnet.detect(s))["softnet-time-squeeze"]
    assert f.severity == Severity.WARNING and f.evidence["time_squeeze_per_s"] == 12.0
    assert f.remedy.profile["sysctl"] == {"net.core.netdev_budget": ">=600",
                                          "net.core.netdev_budget_usecs": ">=16000"}
    few = sample("softnet", sn([(0, 0, 0)]), sn([(0, 0, 5)]), SN_ONCE)
    assert codes(softnet.detect(few))["softnet-time-squeeze"].severity == Severity.INFO


def test_softnet_net_rx_on_one_cpu():
    rows = [(0, 0, 0), (0, 0, 0)]
    s = sample("softnet", sn(rows, [1000, 1000]), sn(rows, [10000, 1500]), SN_ONCE)
    f = codes(softnet.detect(s))["softnet-rx-one-cpu"]
    assert f.severity == Severity.WARNING and f.subject == "cpu 0"
    assert f.evidence["share_pct"] == 94.7 and f.evidence["net_rx_per_s"] == 1900.0
    assert f.remedy.profile == {"nic": {"interfaces": [
        {"match": {"default_route": True}, "rps": {"cpus": "auto"}}]}}
    assert "irqbalance is not running" in f.remedy.action
    rps_on = SN_ONCE.replace("eth0 rx-0 0", "eth0 rx-0 3")
    s2 = sample("softnet", sn(rows, [1000, 1000]), sn(rows, [10000, 1500]), rps_on)
    assert codes(softnet.detect(s2))["softnet-rx-one-cpu"].remedy.profile == {}


@pytest.mark.parametrize("after", [[6000, 5000], [1400, 1000]])  # balanced; too few
def test_softnet_net_rx_spread_or_idle_is_fine(after):
    rows = [(0, 0, 0), (0, 0, 0)]
    assert softnet.detect(sample("softnet", sn(rows, [1000, 1000]), sn(rows, after),
                                 SN_ONCE)) == []


def test_softnet_says_nothing_in_a_netns():
    s = sample("softnet", sn([(0, 0, 0)]), sn([(0, 600, 900)]), SN_ONCE, netns=True)
    assert softnet.detect(s) == []


# --------------------------------------------------------------------------------- nic

def nic_once(iface: str, driver: str, ring_rx: int = 512, ring_max: int = 8192,
             kind: str = "hw") -> str:
    ring = (f"== ring {iface}\nRing parameters for {iface}:\nPre-set maximums:\n"
            f"RX:\t\t{ring_max}\nRX Mini:\tn/a\nRX Jumbo:\tn/a\nTX:\t\t{ring_max}\n"
            f"Current hardware settings:\nRX:\t\t{ring_rx}\nRX Mini:\tn/a\n"
            f"RX Jumbo:\tn/a\nTX:\t\t{ring_rx}\n")
    return (f"== ifaces\n{iface} kind {kind}\n{iface} driver {driver}\n"
            + (ring if kind == "hw" else "") + "== irqbalance\nrunning 0\n")


def nic_sample(iface: str, ethtool: str | None, rx_packets=0, rx_dropped=0, missed=0,
               fifo=0) -> str:
    d = f"/sys/class/net/{iface}/statistics/"
    text = (f"== stats\n{d}rx_packets:{rx_packets}\n{d}rx_dropped:{rx_dropped}\n"
            f"{d}rx_missed_errors:{missed}\n{d}rx_fifo_errors:{fifo}\n"
            f"/sys/class/net/lo/statistics/rx_dropped:{rx_dropped * 9}\n")
    if ethtool is not None:
        text += f"== ethtool {iface}\n{ethtool}"
    return text


def bump(ethtool: str, **add: int) -> str:
    """The same `ethtool -S` output with some counters raised (names with . as __)."""
    stats = ethtool_stats(ethtool)
    for key, n in add.items():
        key = key.replace("__", ".")
        ethtool = re.sub(rf"(?m)^(\s+{re.escape(key)}): \d+$",
                         rf"\g<1>: {stats[key] + n}", ethtool)
    return ethtool


def test_nic_mlx5_out_of_buffer_critical_with_rings_max():
    e = read("ethtool-S-mlx5.txt")
    s = sample("nic", nic_sample("eth0", e, rx_packets=1000),
               nic_sample("eth0", bump(e, rx_out_of_buffer=5000), rx_packets=501000),
               nic_once("eth0", "mlx5_core"))
    f = codes(nic.detect(s))["nic-rx-drops"]
    assert f.severity == Severity.CRITICAL and f.subject == "eth0" and f.now
    assert f.evidence["drops_per_s"] == 1000.0 and f.evidence["counter"] == "rx_out_of_buffer"
    assert (f.evidence["ring_rx"], f.evidence["ring_rx_max"]) == (512, 8192)
    assert f.remedy.profile == {"nic": {"interfaces": [
        {"match": {"name": "eth0"}, "rings": {"rx": "max"}}]}}
    assert "irqbalance is not running" in f.remedy.action


def test_nic_ixgbe_missed_is_a_warning_at_a_small_share_and_ring_at_max():
    e = read("ethtool-S-ixgbe.txt")
    s = sample("nic", nic_sample("ens1f0", e, rx_packets=0),
               nic_sample("ens1f0", bump(e, rx_missed_errors=50), rx_packets=1_000_000),
               nic_once("ens1f0", "ixgbe", ring_rx=4096, ring_max=4096))
    f = codes(nic.detect(s))["nic-rx-drops"]
    assert f.severity == Severity.WARNING and f.evidence["drops_per_s"] == 10.0
    assert f.evidence["counter"] == "rx_missed_errors"
    assert f.remedy.profile == {} and "maximum (4096)" in f.remedy.action


def test_nic_virtio_total_and_queue_counters_are_not_added_up():
    e = read("ethtool-S-virtio_net-this-machine.txt")
    s = sample("nic", nic_sample("eth0", e), nic_sample("eth0", bump(e, rx_drops=10,
                                                                      rx0_drops=10)),
               nic_once("eth0", "virtio_net", 256, 256))
    f = codes(nic.detect(s))["nic-rx-drops"]
    assert f.evidence["drops_per_s"] == 2.0  # 10 drops in 5 s, counted once


def test_nic_virtio_old_per_queue_counters_are_summed():
    e = read("ethtool-S-virtio_net-5.4.txt")
    s = sample("nic", nic_sample("eth0", e),
               nic_sample("eth0", bump(e, rx_queue_0_drops=6, rx_queue_1_drops=4)),
               nic_once("eth0", "virtio_net", 256, 1024))
    f = codes(nic.detect(s))["nic-rx-drops"]
    assert f.evidence["counter"] == "rx_queue_N_drops" and f.evidence["drops_per_s"] == 2.0


def test_nic_ena_allowance_and_page_alloc_failures():
    e = read("ethtool-S-ena.txt")
    s = sample("nic", nic_sample("ens5", e),
               nic_sample("ens5", bump(e, pps_allowance_exceeded=50,
                                       queue_1_rx_page_alloc_fail=5,
                                       conntrack_allowance_available=-100)),
               nic_once("ens5", "ena", 1024, 16384))
    found = codes(nic.detect(s))
    allow = found["nic-allowance-exceeded"]
    assert allow.severity == Severity.WARNING and allow.evidence["counter"] == \
        "pps_allowance_exceeded" and allow.evidence["per_s"] == 10.0
    assert "conntrack_allowance_available" not in allow.evidence
    drops = found["nic-rx-drops"]
    assert drops.evidence["counter"] == "queue_N_rx_page_alloc_fail"
    assert drops.evidence["drops_per_s"] == 1.0


def test_nic_i40e_port_discards():
    e = read("ethtool-S-i40e.txt")
    s = sample("nic", nic_sample("ens2", e),
               nic_sample("ens2", bump(e, port__rx_discards=25, rx_dropped=5)),
               nic_once("ens2", "i40e"))
    f = codes(nic.detect(s))["nic-rx-drops"]
    assert f.evidence["counter"] == "port.rx_discards" and f.evidence["drops_per_s"] == 5.0
    assert f.evidence["rx_dropped_per_s"] == 1.0


def test_nic_e1000e_since_boot_is_info():
    s = sample("nic", nic_sample("eno1", read("ethtool-S-e1000e.txt")),
               once=nic_once("eno1", "e1000e", 256, 4096))
    found = nic.detect(s)
    assert [(f.code, f.severity, f.now) for f in found] == [
        ("nic-rx-drops", Severity.INFO, False)]
    assert found[0].evidence["counter"] == "rx_missed_errors"
    assert found[0].evidence["drops"] == 412


def test_nic_sysfs_rx_dropped_warns_only_at_a_real_rate_and_share():
    loud = sample("nic", nic_sample("eth0", None, rx_packets=0, rx_dropped=0),
                  nic_sample("eth0", None, rx_packets=100_000, rx_dropped=1000),
                  nic_once("eth0", "virtio_net"))
    f = codes(nic.detect(loud))["nic-rx-dropped"]
    assert f.severity == Severity.WARNING and f.evidence["rx_dropped_per_s"] == 200.0
    lldp = sample("nic", nic_sample("eth0", None, rx_packets=0, rx_dropped=0),
                  nic_sample("eth0", None, rx_packets=100_000, rx_dropped=5),
                  nic_once("eth0", "virtio_net"))
    assert codes(nic.detect(lldp))["nic-rx-dropped"].severity == Severity.INFO
    since_boot = sample("nic", nic_sample("eth0", None, rx_packets=9, rx_dropped=5),
                        once=nic_once("eth0", "virtio_net"))
    assert nic.detect(since_boot) == []


def test_nic_virtual_interfaces_never_warn():
    s = sample("nic", nic_sample("veth1", None, rx_packets=0, rx_dropped=0, fifo=0),
               nic_sample("veth1", None, rx_packets=1000, rx_dropped=5000, fifo=500),
               nic_once("veth1", "", kind="virtual"))
    found = nic.detect(s)
    assert {f.code for f in found} == {"nic-rx-drops", "nic-rx-dropped"}
    assert all(f.severity == Severity.INFO for f in found)
    assert all(f.subject == "veth1" for f in found)  # lo is never reported


# ------------------------------------------------------------------------------ memory

def oom_klog() -> list[LogLine]:
    out = []
    for line in read("klog.txt").splitlines():
        stamp, _, message = line.partition("] ")
        out.append(LogLine(float(stamp.strip("[ ")), message, f"w{stamp.strip('[ ')}"))
    return out


def mem(oom_kill: int = 0, psi_mem: str = "", psi_irq: str = "") -> str:
    text = f"== vmstat\noom_kill {oom_kill}\n"
    if psi_mem:
        text += f"== psi_memory\n{psi_mem}"
    if psi_irq:
        text += f"== psi_irq\n{psi_irq}"
    return text


def test_memory_global_oom_in_the_window_and_recent_cgroup_oom():
    s = sample("memory", mem(3), mem(4), klog=oom_klog(), uptime=9602.0)
    found = codes(memory.detect(s))
    glob = found["memory-oom-kill"]
    assert glob.severity == Severity.CRITICAL and glob.now and glob.subject == "stress-ng"
    assert glob.evidence["kills"] == 2 and glob.evidence["processes"] == \
        "java x1, stress-ng x1"
    assert glob.last_seen == "w9600.000000" and glob.remedy.profile == {}
    assert glob.remedy.action.startswith("Give stress-ng more memory")
    cg = found["memory-cgroup-oom-kill"]
    assert cg.severity == Severity.WARNING and not cg.now  # 101 s ago: recent
    assert cg.evidence["kills"] == 2 and cg.evidence["process"] == "logstash"
    assert cg.evidence["pid"] == 5190 and "logstash more memory" in cg.remedy.action


def test_memory_old_oom_kills_are_info():
    s = sample("memory", mem(4), klog=oom_klog(), uptime=20000.0)
    assert {(f.code, f.severity) for f in memory.detect(s)} == {
        ("memory-oom-kill", Severity.INFO), ("memory-cgroup-oom-kill", Severity.INFO)}


def test_memory_vmstat_alone_when_the_log_lost_the_lines():
    s = sample("memory", mem(7), mem(8), uptime=50000.0)
    f = codes(memory.detect(s))["memory-oom-kill"]
    assert f.severity == Severity.CRITICAL and f.now and f.evidence["oom_kill_delta"] == 1
    assert memory.detect(sample("memory", mem(0), mem(0))) == []


def test_memory_pressure_and_irq_pressure():
    s = sample("memory", mem(0, read("pressure-memory-busy.txt"),
                             read("pressure-irq-busy.txt")), window=0)
    found = codes(memory.detect(s))
    assert found["memory-pressure"].severity == Severity.WARNING
    assert found["memory-pressure"].evidence["some_avg10"] == 23.51
    assert found["memory-irq-pressure"].evidence["irq_full_avg10"] == 12.5
    full = read("pressure-memory-busy.txt").replace("full avg10=4.20", "full avg10=14.20")
    assert codes(memory.detect(sample("memory", mem(0, full))))[
        "memory-pressure"].severity == Severity.CRITICAL


def test_memory_says_nothing_in_a_netns():
    s = sample("memory", mem(3, read("pressure-memory-busy.txt")), mem(4),
               klog=oom_klog(), uptime=9602.0, netns=True)
    assert memory.detect(s) == []


# ------------------------------------------------------------- contract and the sh

@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
def test_contract_codes_are_prefixed_and_listed(mod):
    assert mod.CODES and all(c.startswith(mod.NAME + "-") for c in mod.CODES)
    sh = (DOCTOR / f"{mod.NAME}.sh").read_text()
    assert f"once_{mod.NAME}()" in sh and f"sample_{mod.NAME}()" in sh


@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
def test_sh_is_shellcheck_clean(mod):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed")
    run = subprocess.run(["shellcheck", "-s", "sh", str(DOCTOR / f"{mod.NAME}.sh")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
def test_sh_is_read_only(mod):
    sh = (DOCTOR / f"{mod.NAME}.sh").read_text()
    code = "\n".join(re.sub(r"(^|\s)#.*", "", line) for line in sh.splitlines())
    # Output redirections only to /dev/null or stdout/stderr; no setters.
    assert not re.search(r"(?<![0-9&])>(?!&|\s*/dev/null)", code.replace("2>&1", ""))
    # ethtool's setters: -s -A -C -E -G -K -L -N -U -X and -f (flash); -S -g -i read.
    assert not re.search(r"\b(sysctl|modprobe|ip\s+link\s+set|tee|rm|mv)\b"
                         r"|ethtool\s+-[sACEGKLNUXf]\b", code)


def run_sh(mod, func: str) -> str:
    """The detector's part of the runner's real script (its sh and the files the runner
    greps for it), run here and parsed as the runner does."""
    from netfix.doctor import run as drun

    out = subprocess.run(["sh", "-c", drun.build_script([mod], 0)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    sample, _ = drun.parse_sample("here", out, [mod.NAME], mods=[mod])
    return (sample.once if func == "once" else sample.before)[mod.NAME]


@pytest.mark.parametrize("mod", MINE, ids=lambda m: m.NAME)
def test_sh_output_on_this_machine_parses(mod):
    once, out = run_sh(mod, "once"), run_sh(mod, "sample")
    from netfix.doctor import parse as p

    sec = p.sections(out)
    if mod is conntrack and Path("/proc/sys/net/netfilter/nf_conntrack_max").exists():
        assert p.to_int(p.leaves(sec["counts"])["nf_conntrack_max"]) > 0
        if Path("/proc/net/stat/nf_conntrack").exists():
            assert p.conntrack_stat(sec["stat"])["cpus"] >= 1
        assert "nf_conntrack_buckets" in p.leaves(p.sections(once)["settings"])
    if mod is softnet:
        assert len(p.softnet(sec["softnet_stat"])) >= 1
        assert p.softirqs(sec["softirqs"])["NET_RX"]
        assert "netdev_max_backlog" in p.leaves(p.sections(once)["settings"])
    if mod is nic:
        stats = p.sysfs_stats(sec["stats"])
        assert stats and all("rx_packets" in v for v in stats.values())
        hw = [i for i, v in p.iface_lines(p.sections(once)["ifaces"]).items()
              if v.get("kind") == "hw"]
        for iface in hw:
            assert p.ethtool_stats(sec.get(f"ethtool {iface}")) or not shutil.which("ethtool")
    if mod is memory:
        assert "oom_kill" in p.vmstat(sec["vmstat"])


def lab_quiet(seconds: float = 60.0):
    """Lab tests flood between lab nodes on this very kernel; hold their lock so the
    machine is at rest while it is sampled (or skip if it stays busy)."""
    f = open("/run/netfix-lab-tests.lock", "w")  # noqa: SIM115 - closed by the caller
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.close()
                pytest.skip("lab tests kept running: this machine is not at rest")
            time.sleep(1)


def this_machine(window: float) -> Sample:
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    s = Sample("this-machine", 0.0, cpus=len(softnet_rows()), uptime=uptime)
    for mod in MINE:
        s.once[mod.NAME] = run_sh(mod, "once")
        s.before[mod.NAME] = run_sh(mod, "sample")
    if window:
        start = time.monotonic()
        time.sleep(window)
        for mod in MINE:
            s.after[mod.NAME] = run_sh(mod, "sample")
        s.window = time.monotonic() - start
    s.uptime = float(Path("/proc/uptime").read_text().split()[0])
    return s


def softnet_rows() -> list[str]:
    return Path("/proc/net/softnet_stat").read_text().splitlines()


@pytest.mark.parametrize("window", [0, 1.0], ids=["since-boot", "1s-window"])
def test_this_machine_at_rest_has_nothing_at_warning_or_above(window):
    lock = lab_quiet()
    try:
        s = this_machine(window)
    finally:
        lock.close()
    loud = [(m.NAME, f.code, f.severity, f.summary) for m in MINE for f in m.detect(s)
            if f.severity != Severity.INFO]
    assert loud == []


def test_remedy_profiles_are_valid_profiles(tmp_path):
    """Every knob remedy above, as a profile extending k8s-node, passes the profile's
    schema and checks (the 4:1 rule included): --fix-profile can write it as it is."""
    import yaml

    from netfix.profile import load_profile

    e = read("ethtool-S-mlx5.txt")
    rows = [(0, 0, 0), (0, 0, 0)]
    scenarios = [
        conntrack.detect(sample("conntrack", ct_sample(512, 512, [{}]),
                                ct_sample(512, 512, [{"drop": 50}]), ct_once())),
        conntrack.detect(sample("conntrack", ct_sample(600, 262144, [{}]),
                                once=ct_once(buckets=16384))),
        conntrack.detect(sample("conntrack", ct_sample(600, 1024, [{}]),
                                once=ct_once(buckets=256))),
        softnet.detect(sample("softnet", sn([(0, 0, 0), (0, 0, 0)], [0, 0]),
                              sn([(0, 50, 90), (0, 0, 0)], [9000, 10]), SN_ONCE)),
        softnet.detect(sample("softnet", sn(rows, [1000, 1000]), sn(rows, [10000, 1500]),
                              SN_ONCE)),
        nic.detect(sample("nic", nic_sample("eth0", e), nic_sample(
            "eth0", bump(e, rx_out_of_buffer=50)), nic_once("eth0", "mlx5_core"))),
    ]
    remedies = [f.remedy for found in scenarios for f in found if f.remedy.profile]
    assert len(remedies) >= 7
    for i, remedy in enumerate(remedies):
        path = tmp_path / f"fix{i}.yaml"
        path.write_text(yaml.safe_dump({"description": "doctor remedy", "extends": "k8s-node",
                                        **remedy.profile}))
        load_profile(path)  # raises on any schema or check problem
        for dotted in remedy.comments:
            assert dotted.split(".")[0] in remedy.profile
