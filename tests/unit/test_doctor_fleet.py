"""Fleet outliers (netfix.doctor.fleet): majority per inventory group and driver, on
synthetic host sets (ties, small groups, drivers, missing values, nested groups), the
values read from the detectors' sh output, the remedy fragments (owned by the right
section, valid as a --fix-profile) and the runner's hook."""

from __future__ import annotations

import json

import yaml

from netfix.doctor import Finding, Sample, Severity, detectors, fleet
from netfix.doctor import run as drun
from netfix.doctor.fleet import HostValues, Key
from netfix.inventory import Host


def hv(name: str, groups=("workers",), drivers=None, **values) -> HostValues:
    """values: sysctl keys with `_` for `.`, or `IFACE__KEY` for interface values."""
    out = HostValues(name, list(groups), drivers=dict(drivers or {}))
    for k, v in values.items():
        if "__" in k:
            iface, key = k.split("__")
            out.values[Key(key, iface)] = str(v)
        elif k == "kernel":
            out.values[Key("kernel")] = str(v)
        else:
            out.values[Key(k.replace("_", ".", 2))] = str(v)
    return out


def codes(found: dict[str, list[Finding]]) -> dict[str, list[str]]:
    return {h: [f.subject for f in fs] for h, fs in found.items() if fs}


def test_the_odd_mtu_is_named_with_the_majority():
    hosts = [hv(f"node{i}", drivers={"eth0": "ixgbe"}, eth0__mtu=1500) for i in range(1, 20)]
    hosts.append(hv("node20", drivers={"eth0": "ixgbe"}, eth0__mtu=9000))
    found = fleet.outliers_of(hosts)
    assert codes(found) == {"node20": ["eth0 mtu"]}
    f = found["node20"][0]
    assert f.code == "fleet-outlier" and f.severity == Severity.WARNING
    assert f.evidence == {"value": 9000, "majority_value": 1500, "majority_count": 19,
                          "group_size": 20, "group": "workers", "interface": "eth0",
                          "driver": "ixgbe"}
    assert f.summary == ("node20 eth0 mtu 9000; 19 of 20 hosts in group workers with eth0 "
                         "on ixgbe have mtu 1500")
    assert "mtu: 1500" in f.remedy.action and f.remedy.profile == {}
    assert f.code in fleet.CODES


def test_offload_off_on_one_node():
    hosts = [hv(f"n{i}", drivers={"eth0": "mlx5_core"}, eth0__gro="on") for i in range(5)]
    hosts[3].values[Key("gro", "eth0")] = "off"
    f = fleet.outliers_of(hosts)["n3"][0]
    assert f.summary.startswith("n3 eth0 gro off; 4 of 5 hosts in group workers")
    assert f.evidence["majority_value"] == "on" and "offloads" in f.remedy.action


def test_a_tie_or_no_strict_majority_reports_nothing():
    two_two = [hv("a", eth0__mtu=1500), hv("b", eth0__mtu=1500), hv("c", eth0__mtu=9000),
               hv("d", eth0__mtu=9000)]
    assert codes(fleet.outliers_of(two_two)) == {}
    three_ways = [hv("a", kernel="6.1"), hv("b", kernel="6.1"), hv("c", kernel="6.6"),
                  hv("d", kernel="6.8"), hv("e", kernel="5.15")]  # 2 of 5: no majority
    assert codes(fleet.outliers_of(three_ways)) == {}
    # 3 of 5 is a strict majority: both others are outliers
    three_ways[2].values[Key("kernel")] = "6.1"
    assert codes(fleet.outliers_of(three_ways)) == {"d": ["kernel"], "e": ["kernel"]}


def test_groups_below_three_hosts_are_not_judged():
    assert codes(fleet.outliers_of([hv("a", eth0__mtu=1500), hv("b", eth0__mtu=9000)])) == {}
    three = [hv("a", eth0__mtu=1500), hv("b", eth0__mtu=1500), hv("c", eth0__mtu=9000)]
    assert codes(fleet.outliers_of(three)) == {"c": ["eth0 mtu"]}
    assert codes(fleet.outliers_of(three, min_group=4)) == {}


def test_interface_values_are_compared_per_driver():
    ixgbe = [hv(f"i{n}", drivers={"eth0": "ixgbe"}, eth0__driver="ixgbe", eth0__mtu=1500,
                eth0__ring_rx=4096) for n in range(3)]
    # one node with another NIC: its MTU and rings are not judged against ixgbe's ...
    mlx = hv("m0", drivers={"eth0": "mlx5_core"}, eth0__driver="mlx5_core", eth0__mtu=9000,
             eth0__ring_rx=1024)
    found = fleet.outliers_of([*ixgbe, mlx])
    # ... but its driver is an outlier among the hosts that have an eth0
    assert codes(found) == {"m0": ["eth0 driver"]}
    f = found["m0"][0]
    assert f.evidence["majority_value"] == "ixgbe" and "driver" not in f.evidence
    # among the ixgbe hosts, a smaller ring is
    ixgbe[1].values[Key("ring_rx", "eth0")] = "512"
    found = fleet.outliers_of([*ixgbe, mlx])
    assert codes(found) == {"i1": ["eth0 ring_rx"], "m0": ["eth0 driver"]}
    assert found["i1"][0].evidence["group_size"] == 3


def test_missing_values_are_not_counted_and_never_outliers():
    hosts = [hv("a", net_core_somaxconn=4096), hv("b", net_core_somaxconn=4096),
             hv("c")]  # c's file is absent (or c not checked): 2 values, too few
    assert codes(fleet.outliers_of(hosts)) == {}
    hosts.append(hv("d", net_core_somaxconn=128))
    found = fleet.outliers_of(hosts)
    assert codes(found) == {"d": ["net.core.somaxconn"]}
    assert (found["d"][0].evidence["majority_count"],
            found["d"][0].evidence["group_size"]) == (2, 3)
    # an interface only one host has: nothing to compare it with
    hosts[0].values[Key("mtu", "cali1234")] = "1440"
    assert "a" not in codes(fleet.outliers_of(hosts))


def test_groups_apart_most_specific_first_and_all_only_for_the_ungrouped():
    masters = [hv(f"m{i}", groups=["masters"], net_core_somaxconn=65535) for i in range(3)]
    workers = [hv(f"w{i}", groups=["workers"], net_core_somaxconn=4096) for i in range(3)]
    # each group agrees with itself; all 6 together would be a tie anyway
    assert codes(fleet.outliers_of(masters + workers)) == {}
    workers.append(hv("w3", groups=["workers"], net_core_somaxconn=65535))
    found = fleet.outliers_of(masters + workers)
    assert codes(found) == {"w3": ["net.core.somaxconn"]}
    assert found["w3"][0].evidence["group"] == "workers"
    # nested: workers (parent) then gpu (child); the child group decides for its members
    gpu = [hv(f"g{i}", groups=["workers", "gpu"], eth0__mtu=9000) for i in range(3)]
    cpu = [hv(f"c{i}", groups=["workers"], eth0__mtu=1500) for i in range(4)]
    found = fleet.outliers_of(gpu + cpu)
    assert codes(found) == {}  # gpu agrees within gpu; cpu hosts 4 of 7 in workers
    gpu[0].values[Key("mtu", "eth0")] = "1500"
    found = fleet.outliers_of(gpu + cpu)
    assert codes(found) == {"g0": ["eth0 mtu"]}
    assert found["g0"][0].evidence["group"] == "gpu"
    # a child group too small to judge: the parent's majority decides
    small = [hv("s0", groups=["workers", "tiny"], eth0__mtu=9000),
             hv("s1", groups=["workers", "tiny"], eth0__mtu=1500)]
    found = fleet.outliers_of(small + cpu)
    assert codes(found) == {"s0": ["eth0 mtu"]}
    assert found["s0"][0].evidence["group"] == "workers"
    # hosts in no group: compared as group all
    loose = [hv(f"x{i}", groups=[], kernel="6.1.0") for i in range(3)]
    loose.append(hv("x3", groups=[], kernel="5.10.0"))
    found = fleet.outliers_of(loose)
    assert codes(found) == {"x3": ["kernel"]} and found["x3"][0].evidence["group"] == "all"
    assert "kernel" in found["x3"][0].remedy.action


def test_sysctl_remedies_are_fragments_in_the_owning_section():
    def remedy(key, value):
        return fleet.sysctl_remedy(key, value, "note")

    assert remedy("net.core.netdev_max_backlog", "1000").profile == {
        "sysctl": {"net.core.netdev_max_backlog": 1000}}
    assert remedy("net.core.netdev_max_backlog", "1000").comments == {
        "sysctl.net.core.netdev_max_backlog": "note"}
    assert remedy("net.core.somaxconn", "4096").profile == {"syn_flood": {"somaxconn": 4096}}
    assert remedy("net.ipv4.tcp_syncookies", "1").profile == {"syn_flood": {"syncookies": 1}}
    assert remedy("net.netfilter.nf_conntrack_max", "262144").profile == {
        "conntrack": {"max": 262144, "auto": None}}
    r = remedy("net.netfilter.nf_conntrack_tcp_timeout_established", "86400")
    assert r.profile == {"conntrack": {"timeouts": {"tcp_established": 86400}}}
    assert r.comments == {"conntrack.timeouts.tcp_established": "note"}
    r = remedy("net.netfilter.nf_conntrack_buckets", "65536")
    assert r.profile == {} and "conntrack.buckets" in r.action


def test_the_remedy_profile_of_outliers_validates_next_to_other_remedies(tmp_path):
    from netfix.doctor import fixprofile

    hosts = [hv(f"n{i}", groups=["lab"], net_core_somaxconn=4096,
                net_core_netdev_max_backlog=1000,
                net_netfilter_nf_conntrack_max=262144) for i in range(3)]
    odd = hosts[2].values
    odd[Key("net.core.somaxconn")] = "128"
    odd[Key("net.core.netdev_max_backlog")] = "100"
    odd[Key("net.netfilter.nf_conntrack_max")] = "1024"
    found = fleet.outliers_of(hosts)["n2"]
    assert sorted(f.subject for f in found) == [
        "net.core.netdev_max_backlog", "net.core.somaxconn", "net.netfilter.nf_conntrack_max"]
    for f in found:
        f.detector = "fleet"
    # the SYN-flood detector asks for a larger somaxconn on the same host: the larger wins
    from netfix.doctor import Remedy

    syn = Finding("synflood-cookies", Severity.WARNING, "TCPReqQFullDoCookies", "s", "w",
                  remedy=Remedy(profile={"syn_flood": {"somaxconn": 8192}},
                                comments={"syn_flood.somaxconn": "cookies"}),
                  detector="synflood")
    h = drun.HostDoctor("n2", findings=drun.sort_findings(found + [syn]))
    out = tmp_path / "fix.yaml"
    fixprofile.write(drun.DoctorReport([h]), out)
    text = out.read_text()
    prof = yaml.safe_load(text)
    assert prof["syn_flood"] == {"somaxconn": 8192}
    assert prof["sysctl"] == {"net.core.netdev_max_backlog": 1000}
    assert prof["conntrack"] == {"max": 262144, "auto": None}
    assert "# fleet-outlier (warning, n2): 100 on n2; 2 of 3 hosts in group lab have 1000" \
        in text


NIC_ONCE = """== ifaces
eth0 kind hw
eth0 driver ixgbe
veth1 kind virtual
== ring eth0
Ring parameters for eth0:
Pre-set maximums:
RX:\t\t4096
TX:\t\t4096
Current hardware settings:
RX:\t\t512
TX:\t\t1024
== irqbalance
running 1
"""
FLEET_ONCE = """== info eth0
driver: ixgbe
version: 6.1.0-18-amd64
firmware-version: 0x800009e0
bus-info: 0000:01:00.0
== offload eth0
Features for eth0:
rx-checksumming: on
tcp-segmentation-offload: on
generic-segmentation-offload: on
generic-receive-offload: off
large-receive-offload: off [fixed]
"""


def test_values_are_read_from_what_the_detectors_printed():
    links = [{"ifname": "lo", "mtu": 65536}, {"ifname": "eth0", "mtu": 9000},
             {"ifname": "veth1", "mtu": 1500, "linkinfo": {"info_kind": "veth"}}]
    s = Sample("n1", 0, groups=["workers"], kernel="6.1.0-18-amd64", once={
        "mtu": "== link\n" + json.dumps(links) + "\n== addr\n[]\n",
        "nic": NIC_ONCE, "fleet": FLEET_ONCE,
        "synflood": "/proc/sys/net/ipv4/tcp_syncookies:1\n/proc/sys/net/core/somaxconn:4096\n"
                    "/proc/sys/net/ipv4/tcp_synack_retries:5\n"
                    "LISTEN 0      128    0.0.0.0:22 0.0.0.0:*\n",
        "softnet": "== settings\n/proc/sys/net/core/netdev_max_backlog:1000\n"
                   "/proc/sys/net/core/netdev_budget:300\n",
        "conntrack": "== settings\n/proc/sys/net/netfilter/nf_conntrack_buckets:65536\n"
                     "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established:432000\n"
                     "/proc/sys/net/netfilter/nf_conntrack_udp_timeout:30\n"
                     "mem_total_kb:16000000\n"},
        before={"conntrack": "== counts\n/proc/sys/net/netfilter/nf_conntrack_count:12\n"
                             "/proc/sys/net/netfilter/nf_conntrack_max:262144\n"})
    v = fleet.host_values(s)
    assert v.host == "n1" and v.groups == ["workers"]
    assert v.drivers == {"eth0": "ixgbe", "veth1": "veth"}
    assert {k.subject: val for k, val in v.values.items()} == {
        "kernel": "6.1.0-18-amd64",
        "net.ipv4.tcp_syncookies": "1", "net.core.somaxconn": "4096",
        "net.core.netdev_max_backlog": "1000", "net.core.netdev_budget": "300",
        "net.netfilter.nf_conntrack_buckets": "65536",
        "net.netfilter.nf_conntrack_tcp_timeout_established": "432000",
        "net.netfilter.nf_conntrack_max": "262144",
        "eth0 driver": "ixgbe", "eth0 mtu": "9000", "eth0 ring_rx": "512",
        "eth0 ring_tx": "1024", "eth0 driver_version": "6.1.0-18-amd64",
        "eth0 firmware": "0x800009e0", "eth0 gro": "off", "eth0 lro": "off",
        "eth0 tso": "on", "eth0 gso": "on",
        "veth1 driver": "veth", "veth1 mtu": "1500"}
    assert fleet.detect(s) == []


def test_fleet_is_a_detector_with_its_sh():
    assert "fleet" in [m.NAME for m in detectors()]
    script = drun.build_script(detectors(), 0)
    assert "once_fleet" in script and "ethtool -k" in script


def local(name: str, groups: list[str]) -> Host:
    return Host(name, groups, {"connection": "local"})


def test_runner_fills_groups_and_adds_outliers_after_all_hosts(monkeypatch):
    # three reads of this machine, one of them told its somaxconn is different
    real = drun.parse_sample

    def parse(host, text, *args, **kwargs):
        if host == "odd":
            text = text.replace("/core/somaxconn:", "/core/somaxconn:7")
        return real(host, text, *args, **kwargs)

    monkeypatch.setattr(drun, "parse_sample", parse)
    rep = drun.run([local("a", ["lab"]), local("b", ["lab"]), local("odd", ["x", "lab"])], 0)
    by = {h.host: h for h in rep.hosts}
    assert [h.error for h in rep.hosts] == [None] * 3
    assert by["a"].sample.groups == ["lab"] and by["odd"].sample.groups == ["x", "lab"]
    out = [f for f in by["odd"].findings if f.code == "fleet-outlier"]
    assert [(f.subject, f.detector) for f in out] == [("net.core.somaxconn", "fleet")]
    assert out[0].evidence["group"] == "lab" and out[0].evidence["majority_count"] == 2
    assert out[0].remedy.profile == {"syn_flood": {"somaxconn": out[0].evidence[
        "majority_value"]}}
    assert not [f for h in ("a", "b") for f in by[h].findings if f.code == "fleet-outlier"]
    assert rep.exit_code in (1, 2) and by["odd"].problems


def test_no_outliers_without_the_fleet_module(monkeypatch):
    real = drun.parse_sample

    def parse(host, text, *args, **kwargs):
        if host == "c":
            text = text.replace("/core/somaxconn:", "/core/somaxconn:7")
        return real(host, text, *args, **kwargs)

    monkeypatch.setattr(drun, "parse_sample", parse)
    mods = [m for m in detectors() if m.NAME != "fleet"]
    rep = drun.run([local(n, ["lab"]) for n in ("a", "b", "c")], 0, mods=mods)
    assert [h.error for h in rep.hosts] == [None] * 3
    assert not [f for h in rep.hosts for f in h.findings if f.code == "fleet-outlier"]
