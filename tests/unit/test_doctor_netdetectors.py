"""The addresses, kubeproxy, mtu and synflood detectors on recorded node output (captured
from network namespaces on this machine: `ip -j addr`, `ip -j -d link`) and on this
machine's own /proc/net/netstat."""

from __future__ import annotations

import json
from pathlib import Path

from netfix.doctor import LogLine, Sample, Severity, addresses, kubeproxy, mtu, synflood

DATA = Path(__file__).resolve().parents[1] / "data" / "doctor"


def sample(name: str, once: str = "", before: str = "", after: str = "", window: float = 0,
           **kw) -> Sample:
    return Sample("n1", window, once={name: once}, before={name: before},
                  after={name: after or before}, **kw)


def codes(findings) -> list[str]:
    return [f.code for f in findings]


# ------------------------------------------------------------------------ addresses


def test_static_and_dhcp_on_one_interface():
    text = (DATA / "addr-static-dhcp.json").read_text()
    found = addresses.detect(sample("addresses", text))
    by = {(f.code, f.subject): f for f in found}
    dual = by[("addresses-static-and-dhcp", "eth1")]
    assert dual.severity == Severity.WARNING and dual.evidence["dynamic"] == 1
    assert dual.evidence["same_subnet"] == 1 and "10.252.9.77/24 dynamic" in dual.summary
    assert dual.remedy.action and not dual.remedy.profile
    # two static addresses in one subnet on eth1p; the eth1 pair is not reported twice
    assert ("addresses-same-subnet", "eth1p") in by
    assert ("addresses-same-subnet", "eth1") not in by


def test_one_address_per_interface_is_fine():
    data = json.loads((DATA / "addr-static-dhcp.json").read_text())
    for item in data:
        item["addr_info"] = [a for a in item["addr_info"] if a.get("family") != "inet"][:1] + \
            [a for a in item["addr_info"] if a.get("family") == "inet"][:1]
    assert addresses.detect(sample("addresses", json.dumps(data))) == []


# ------------------------------------------------------------------------ kubeproxy


def test_kubelet_without_kube_proxy_is_critical():
    once = "proc kubelet /usr/bin/kubelet --config=/var/lib/kubelet/config.yaml\n"
    [f] = kubeproxy.detect(sample("kubeproxy", once))
    assert f.code == "kubeproxy-missing" and f.severity == Severity.CRITICAL
    assert "Services unreachable" in f.summary
    for other in ("proc kube-proxy /usr/local/bin/kube-proxy --config=x\n",
                  "proc cilium-agent cilium-agent --kube-proxy-replacement=true\n",
                  "proc antrea-agent antrea-agent\n"):
        assert kubeproxy.detect(sample("kubeproxy", once + other)) == []
    router = "proc kube-router kube-router --run-service-proxy=false\n"
    assert codes(kubeproxy.detect(sample("kubeproxy", once + router))) == ["kubeproxy-missing"]
    assert kubeproxy.detect(sample("kubeproxy", "")) == []  # not a Kubernetes node


def test_rule_bloat_only_in_iptables_mode():
    kp = "proc kube-proxy kube-proxy --proxy-mode=iptables\n"
    big = "iptables 25012\nkube-chains 3\nnft 25020\n"
    [f] = kubeproxy.detect(sample("kubeproxy", kp + big))
    assert f.code == "kubeproxy-rule-bloat" and f.evidence["rules"] == 25020
    assert "IPVS" in f.remedy.action
    ipvs = "proc kube-proxy kube-proxy --proxy-mode ipvs\niptables 25012\nnft 0\n"
    assert kubeproxy.detect(sample("kubeproxy", ipvs)) == []
    assert kubeproxy.detect(sample("kubeproxy", kp + "iptables 19999\n")) == []
    # no kube-proxy process, but its chains are there (kube-proxy in a container we missed)
    assert codes(kubeproxy.detect(sample("kubeproxy", big))) == ["kubeproxy-rule-bloat"]


# ------------------------------------------------------------------------------ mtu


def test_overlay_mtu_above_underlay_minus_overhead():
    [f] = mtu.detect(sample("mtu", (DATA / "mtu-vxlan-1500.txt").read_text()))
    assert f.code == "mtu-overlay-too-large" and f.subject == "vxlan.calico"
    assert f.evidence == {"overlay": "vxlan.calico", "overlay_mtu": 1500, "limit": 1450}
    assert mtu.detect(sample("mtu", (DATA / "mtu-vxlan-1450.txt").read_text())) == []


def test_default_routes_from_the_kernels_route_files():
    """/proc/net/route by its header names (main table; reject routes are no way out);
    /proc/net/ipv6_route by its fixed columns, without the kernel's `unreachable` null
    entry on lo; IPv4 first, each device once. Plus this machine's real files."""
    head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
    v4 = "\n".join([head, "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
                    "*\t00000000\t00000000\t0201\t0\t0\t10\t00000000\t0\t0\t0",
                    "bond0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0",
                    "eth0\t00000000\t010200C0\t0003\t0\t0\t200\t00000000\t0\t0\t0"])
    zero = "0" * 32
    v6 = "\n".join([f"{zero} 00 {zero} 00 fd00{'0' * 27}1 00000400 00000003 00000000 00000003 "
                    "    eth1",
                    f"fd00{'0' * 28} 40 {zero} 00 {zero} 00000100 00000001 00000000 00000001 "
                    "    eth2",
                    f"{zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200       lo"])
    assert mtu.default_devs(v4, v6) == ["bond0", "eth0", "eth1"]
    assert mtu.default_devs("", "") == []
    assert mtu.default_devs("garbage\n1 2 3", "short line") == []
    real4 = Path("/proc/net/route").read_text()
    real6 = Path("/proc/net/ipv6_route").read_text() if Path("/proc/net/ipv6_route").exists() \
        else ""
    import subprocess

    ip = subprocess.run(["ip", "-o", "route", "show", "default"], capture_output=True,
                        text=True).stdout.split()
    want = [ip[i + 1] for i, w in enumerate(ip[:-1]) if w == "dev"]
    assert mtu.default_devs(real4, "")[:1] == want[:1]  # the one the underlay fallback takes
    assert set(mtu.default_devs(real4, real6)) >= set(want)


def test_probe_black_hole():
    text = ("== probe 10.251.0.12 eth0 9000 ok fail\n== probe 10.251.0.13 eth0 1500 ok ok\n"
            "== probe 10.251.0.14 eth0 1500 fail fail\n")
    [f] = mtu.detect(sample("mtu", text))
    assert f.code == "mtu-black-hole" and f.evidence["peer"] == "10.251.0.12"


# ------------------------------------------------------------------------- synflood

NETSTAT = ("TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPReqQFullDoCookies "
           "TCPReqQFullDrop Other\nTcpExt: 0 {} {} {} {} 7\n")
ONCE = ("/proc/sys/net/ipv4/tcp_syncookies:0\n/proc/sys/net/ipv4/tcp_max_syn_backlog:4096\n"
        "/proc/sys/net/core/somaxconn:4096\n/proc/sys/net/ipv4/tcp_synack_retries:5\n"
        "LISTEN 0 1 10.251.0.12:8080 0.0.0.0:*\nLISTEN 0      128    0.0.0.0:22 0.0.0.0:*\n")


def test_netstat_by_header_names():
    real = Path("/proc/net/netstat").read_text()
    parsed = synflood._netstat(real)
    assert all(c in parsed for c in synflood.COUNTERS)
    # a kernel with other columns in another order
    text = "TcpExt: TCPReqQFullDrop Zed ListenOverflows\nTcpExt: 5 9 3\nIpExt: A\nIpExt: 1\n"
    assert synflood._netstat(text) == {"TCPReqQFullDrop": 5, "Zed": 9, "ListenOverflows": 3}


def test_listeners_read_only_when_a_counter_says_a_finding_may_need_them(tmp_path):
    """--window 0: `ss` runs only when one of the four counters is above 0 (by header
    name, wherever the column is) or the file is unreadable; with a window, always."""
    import subprocess

    sh = (Path(synflood.__file__).with_name("synflood.sh")).read_text()
    fake = tmp_path / "netstat"

    def once(netstat: str | None, window: str = "0") -> str:
        if netstat is not None:
            fake.write_text(netstat)
        path = fake if netstat is not None else tmp_path / "absent"
        code = sh + "\nss() { echo LISTEN 0 7 127.0.0.1:1 0.0.0.0:*; }\nonce_synflood\n"
        return subprocess.run(["sh", "-c", code], env={"ND_WINDOW": window,
                              "ND_NETSTAT": str(path), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True).stdout
    zero = NETSTAT.format(0, 0, 0, 0) + "IpExt: InNoRoutes\nIpExt: 3\n"
    assert once(zero) == "listeners skipped\n"
    for i in range(4):
        n = [0, 0, 0, 0]
        n[i] = 2
        assert once(NETSTAT.format(*n)).startswith("LISTEN"), i
    assert once("TcpExt: TCPReqQFullDrop Zed\nTcpExt: 0 9\n") == "listeners skipped\n"
    assert once("TcpExt: Zed TCPReqQFullDrop\nTcpExt: 0 1\n").startswith("LISTEN")
    assert once(None).startswith("LISTEN")  # unreadable: read them
    assert once(zero, window="2").startswith("LISTEN")
    _, listeners = synflood._once("LISTEN 0      7      127.0.0.1:1      0.0.0.0:*\n")
    assert listeners == [("127.0.0.1:1", 0, 7)]


def test_syn_drops_in_the_window_are_critical_with_a_syn_flood_remedy():
    s = sample("synflood", ONCE, NETSTAT.format(1, 1, 0, 10), NETSTAT.format(40, 41, 0, 510),
               window=2.0)
    by = {f.code: f for f in synflood.detect(s)}
    drop = by["synflood-syn-drops"]
    assert drop.severity == Severity.CRITICAL and drop.now
    assert drop.evidence["TCPReqQFullDrop_delta"] == 500
    assert drop.evidence["drops_per_second"] == 250.0
    assert drop.evidence["smallest_backlog"] == 1
    prof = drop.remedy.profile["syn_flood"]
    assert prof["syncookies"] == 1 and prof["max_syn_backlog"] >= 8192
    assert prof["somaxconn"] >= 8192 and prof["synack_retries"] == 3
    assert "TCPReqQFullDrop +500" in drop.remedy.comments["syn_flood.syncookies"]
    over = by["synflood-accept-overflow"]
    assert over.severity == Severity.WARNING and over.evidence["ListenOverflows_delta"] == 39
    assert "syncookies" not in over.remedy.profile["syn_flood"]


def test_since_boot_only_is_info():
    s = sample("synflood", ONCE, NETSTAT.format(3, 3, 0, 2), window=0)
    [f] = synflood.detect(s)
    assert f.code == "synflood-since-boot" and f.severity == Severity.INFO
    quiet = sample("synflood", ONCE, NETSTAT.format(3, 3, 0, 2), NETSTAT.format(3, 3, 0, 2),
                   window=1)
    assert [x.severity for x in synflood.detect(quiet)] == [Severity.INFO]


def test_kernel_log_lines_but_not_in_a_netns():
    line = "TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:80. Sending cookies."
    klog = [LogLine(990.0, line, "2023-11-14T22:13:09Z")]
    s = sample("synflood", ONCE, NETSTAT.format(0, 0, 0, 0), window=1, klog=klog,
               uptime=1000.0)
    [f] = synflood.detect(s)
    assert f.code == "synflood-log" and f.subject == "port 0.0.0.0:80"
    assert f.severity == Severity.WARNING and f.last_seen == "2023-11-14T22:13:09Z"
    s.netns = True
    assert synflood.detect(s) == []


def test_once_synflood_reads_whole_sysctl_values_here():
    """dash's `read` gets only the first byte of a numeric sysctl: the runner's one grep
    reads them, and the detector gets whole values."""
    import subprocess

    from netfix.doctor import run as drun

    out = subprocess.run(["sh", "-c", drun.build_script([synflood], 0)], capture_output=True,
                         text=True, check=True).stdout
    sample, _ = drun.parse_sample("here", out, [synflood.NAME], mods=[synflood])
    sysctls, _ = synflood._once(sample.once[synflood.NAME])
    for path, field in synflood.SYSCTL.items():
        assert sysctls[field] == int(Path(f"/proc/sys/net/{path}").read_text()), field
