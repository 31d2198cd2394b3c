"""doctor parsers on recorded kernel files (tests/data/doctor/README.md says where each
one comes from) and on this machine's live files."""

from __future__ import annotations

from pathlib import Path

import pytest

from netfix.doctor import LogLine, Sample
from netfix.doctor import parse as p

DATA = Path(__file__).parent.parent / "data" / "doctor"


def read(name: str) -> str:
    return (DATA / name).read_text()


def klog() -> list[LogLine]:
    out = []
    for line in read("klog.txt").splitlines():
        stamp, _, message = line.partition("] ")
        out.append(LogLine(float(stamp.strip("[ ")), message, f"wall-{stamp.strip('[ ')}"))
    return out


# ------------------------------------------------------------------------ softnet_stat


def test_softnet_11_columns_maps_rows_by_position():
    rows = p.softnet(read("softnet_stat-11col-4.19.txt"))
    assert [r.cpu for r in rows] == [0, 1, 2, 3]
    assert {r.columns for r in rows} == {11}
    assert (rows[0].processed, rows[0].dropped, rows[0].time_squeeze) == (
        0x1A4C9F3E, 0x31C, 0x2E1B)
    assert rows[2].dropped == 0x12


def test_softnet_13_columns_maps_rows_by_cpu_id_with_an_offline_cpu():
    rows = p.softnet(read("softnet_stat-13col-5.10-cpu2-offline.txt"))
    # Three rows for CPUs 0, 1 and 3: position would call the last one cpu 2.
    assert [r.cpu for r in rows] == [0, 1, 3]
    assert rows[2].dropped == 0x4D2 and rows[2].time_squeeze == 0x2F1
    assert rows[2].received_rps == 0xC40 and rows[2].flow_limit == 3


def test_softnet_15_columns():
    rows = p.softnet(read("softnet_stat-15col-6.6.txt"))
    assert [r.cpu for r in rows] == [0, 1, 2, 3]
    assert {r.columns for r in rows} == {15}
    assert rows[2].dropped == 100 and rows[2].time_squeeze == 0x502


def test_softnet_this_machines_recorded_file():
    rows = p.softnet(read("softnet_stat-15col-this-machine.txt"))
    assert [r.cpu for r in rows] == [0, 1]
    assert rows[0].dropped == 0x18EEF and rows[1].received_rps == 0x23


def test_softnet_live_file():
    rows = p.softnet(Path("/proc/net/softnet_stat").read_text())
    assert rows and len({r.cpu for r in rows}) == len(rows)
    assert all(r.columns >= 11 and r.processed >= 0 for r in rows)


# --------------------------------------------------------------------------- softirqs


def test_softirqs_per_cpu():
    irqs = p.softirqs(read("softirqs-4cpu.txt"))
    assert irqs["NET_RX"] == {0: 98120033, 1: 310022, 2: 298110, 3: 301229}
    assert irqs["NET_TX"][0] == 120031
    mine = p.softirqs(read("softirqs-this-machine.txt"))
    assert set(mine["NET_RX"]) == {0, 1} and mine["NET_RX"][0] > 0


def test_softirqs_live_file():
    irqs = p.softirqs(Path("/proc/softirqs").read_text())
    assert "NET_RX" in irqs and "TIMER" in irqs and len(irqs["NET_RX"]) >= 1


# ------------------------------------------------------------------ nf_conntrack stat


def test_conntrack_stat_current_header_sums_cpus_but_not_entries():
    st = p.conntrack_stat(read("nf_conntrack-5.15-clashres.txt"))
    assert st["entries"] == 0xA3F1  # repeated on each row, not doubled
    assert st["cpus"] == 2
    assert st["drop"] == 0x30 and st["early_drop"] == 7
    assert st["insert_failed"] == 4 and st["search_restart"] == 0x20
    assert st["clashres"] == 3 and "searched" not in st


def test_conntrack_stat_old_header_names():
    st = p.conntrack_stat(read("nf_conntrack-4.19-searched.txt"))
    assert st["cpus"] == 4 and st["entries"] == 0x1F40
    assert "searched" in st and "delete_list" in st and "clashres" not in st
    assert st["drop"] == 10 and st["insert_failed"] == 3 and st["search_restart"] == 7


def test_conntrack_stat_3x_has_no_search_restart():
    st = p.conntrack_stat(read("nf_conntrack-3.10-no-search_restart.txt"))
    assert "search_restart" not in st
    assert st["drop"] == 13 and st["searched"] == 0x1B7E2A + 0x1A9C10


def test_conntrack_stat_absent_or_garbage():
    assert p.conntrack_stat("") == {}
    assert p.conntrack_stat(None) == {}
    assert p.conntrack_stat("00000001 00000002\n") == {}
    assert p.conntrack_stat(read("nf_conntrack-this-machine.txt"))["cpus"] == 2


# ---------------------------------------------------------- netstat, vmstat, pressure


def test_netstat_pairs_header_and_value_lines():
    text = ("TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPReqQFullDoCookies "
            "TCPReqQFullDrop\nTcpExt: 12 340 341 12 0\nIpExt: InNoRoutes InOctets\n"
            "IpExt: 0 99\n")
    ns = p.netstat(text)
    assert ns["TcpExt"]["ListenOverflows"] == 340 and ns["TcpExt"]["ListenDrops"] == 341
    assert ns["IpExt"] == {"InNoRoutes": 0, "InOctets": 99}
    mine = p.netstat(read("netstat-this-machine.txt"))
    assert "ListenOverflows" in mine["TcpExt"] and mine["IpExt"]["InOctets"] > 0
    live = p.netstat(Path("/proc/net/netstat").read_text())
    assert len(live["TcpExt"]) > 50


def test_vmstat_and_pressure():
    assert p.vmstat(read("vmstat-this-machine.txt"))["oom_kill"] == 0
    busy = p.pressure(read("pressure-memory-busy.txt"))
    assert busy["some"]["avg10"] == 23.51 and busy["full"]["total"] == 22013311
    irq = p.pressure(read("pressure-irq-busy.txt"))
    assert set(irq) == {"full"} and irq["full"]["avg10"] == 12.5
    assert p.pressure(read("pressure-memory-this-machine.txt"))["some"]["avg10"] < 10


# ----------------------------------------------------------------------- ethtool -S


@pytest.mark.parametrize("name,expect", [
    ("mlx5", {"rx_out_of_buffer": 48213, "rx_discards_phy": 1290, "rx0_xdp_drop": 0}),
    ("ixgbe", {"rx_missed_errors": 318273, "rx_no_dma_resources": 5123,
               "rx_no_buffer_count": 0}),
    ("i40e", {"port.rx_discards": 891, "rx_dropped": 2214, "tx-0.packets": 11025005497}),
    ("ena", {"bw_in_allowance_exceeded": 1520, "pps_allowance_exceeded": 88,
             "conntrack_allowance_exceeded": 0, "queue_1_rx_page_alloc_fail": 7}),
    ("virtio_net-5.4", {"rx_queue_0_drops": 17, "rx_queue_1_drops": 4}),
    ("virtio_net-this-machine", {"rx_drops": 0, "rx0_drops": 0}),
    ("e1000e", {"rx_missed_errors": 412, "rx_no_buffer_count": 37}),
])
def test_ethtool_stats_per_driver(name, expect):
    stats = p.ethtool_stats(read(f"ethtool-S-{name}.txt"))
    assert "NIC statistics" not in " ".join(stats)
    for key, value in expect.items():
        assert stats[key] == value


def test_sysfs_stats_and_files():
    text = ("/sys/class/net/eth0/statistics/rx_packets:10\n"
            "/sys/class/net/eth0/statistics/rx_dropped:2\n"
            "/sys/class/net/veth1/statistics/rx_packets:7\nnoise\n")
    assert p.sysfs_stats(text) == {"eth0": {"rx_packets": 10, "rx_dropped": 2},
                                   "veth1": {"rx_packets": 7}}
    leaves = p.leaves("/proc/sys/net/netfilter/nf_conntrack_max:512\nmem_total_kb:1024\n")
    assert leaves == {"nf_conntrack_max": "512", "mem_total_kb": "1024"}


def test_sections_split_on_markers():
    got = p.sections("junk\n== a\n1\n2\n== ring eth0\nx\n== empty\n")
    assert got == {"a": "1\n2", "ring eth0": "x", "empty": ""}


# ------------------------------------------------------------------------ kernel log


def test_conntrack_full_matches_both_message_forms_only():
    lines = p.conntrack_full_lines(klog())
    assert [ln.uptime for ln in lines] == [8120.331210, 8120.331777, 8125.400020]


def test_oom_kills_global_vs_cgroup():
    kills = p.oom_kills(klog())
    assert [(k.pid, k.comm, k.cgroup) for k in kills] == [
        (4242, "java", False), (5151, "logstash", True), (5190, "logstash", True),
        (6001, "stress-ng", False)]
    assert kills[1].line.wall == "wall-9410.220031"


# ----------------------------------------------------------------- counter arithmetic


def test_delta_wraps_32_bit_counters_and_ignores_resets():
    assert p.delta(10, 15) == 5
    assert p.delta(0xFFFFFFF0, 0x10, 32) == 0x20
    assert p.delta(500, 3) == 0  # 64-bit counter went back: device reset, not a wrap


def test_window_with_one_sample_has_no_rates():
    one = p.window(Sample("h", 0, before={"x": "a"}), "x")
    assert (one.first, one.last, one.rates) == ("a", "a", False)
    repeated = p.window(Sample("h", 0, before={"x": "a"}, after={"x": "a"}), "x")
    assert not repeated.rates and repeated.rate(1, 100) == 0.0
    two = p.window(Sample("h", 2.0, before={"x": "a"}, after={"x": "b"}), "x")
    assert two.rates and two.rate(10, 30) == 10.0
