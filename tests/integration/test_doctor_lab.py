"""netfix doctor on real netns lab nodes with real symptoms: a healthy node at rest, a
static plus a DHCP address, kubelet without kube-proxy, 25,000 iptables rules, and a SYN
flood between two lab nodes (raw SYNs from node1 to a listener with a backlog of 1 on
node2, syncookies off there) whose remedy profile is then planned. The JSON is checked by
check-jsonschema, the JUnit by the JUnit XSD, the Prometheus text by promtool where
installed, else prometheus_client's parser. Traffic only between lab node addresses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "docs" / "doctor-report.schema.json"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
JUNIT_XSD = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit.xsd"))

pytestmark = pytest.mark.integration


def doctor(lab, *args: str, rc: int | None = None) -> tuple[dict, subprocess.CompletedProcess]:
    p = lab.netfix("doctor", "--json", *args, check_rc=rc)
    return json.loads(p.stdout), p


def findings(report: dict, host: str) -> dict[str, dict]:
    h = next(h for h in report["hosts"] if h["host"] == host)
    return {f["code"]: f for f in h["findings"]}


def problems(report: dict) -> list[tuple[str, str]]:
    return [(h["host"], f["code"]) for h in report["hosts"] for f in h["findings"]
            if f["severity"] != "info"]


def check_json(path: Path) -> None:
    if not CHECK_JSONSCHEMA.exists():
        pytest.fail("check-jsonschema is not installed (pip install -e '.[test]')")
    res = subprocess.run([str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA), str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def check_prometheus(path: Path) -> dict:
    text = path.read_text()
    promtool = shutil.which("promtool")
    if promtool:
        res = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                             capture_output=True)
        assert res.returncode == 0, res.stdout + res.stderr
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_healthy_nodes_at_rest_have_no_finding(lab, tmp_path):
    t0 = time.monotonic()
    report, p = doctor(lab, "--window", "1", "--junit", str(tmp_path / "d.xml"),
                       "--prometheus", str(tmp_path / "d.prom"), "--markdown",
                       str(tmp_path / "d.md"), rc=0)
    took = time.monotonic() - t0
    assert problems(report) == [] and report["exit_code"] == 0
    assert [h["host"] for h in report["hosts"]] == ["node1", "node2", "node3"]
    for h in report["hosts"]:
        assert h["status"] == "ok" and h["netns"] is True and 0.9 <= h["window_seconds"] < 2
        assert any("network namespace" in n for n in h["notes"])
    assert took < 4, f"window 1 on 3 hosts took {took:.1f} s"
    (tmp_path / "d.json").write_text(p.stdout)
    check_json(tmp_path / "d.json")
    xml = (tmp_path / "d.xml").read_bytes()
    JUNIT_XSD.validate(xml.decode())
    cases = ET.fromstring(xml).findall("testsuite/testcase")
    assert len(cases) == 3 * len(report["hosts"][0]["detectors"])
    assert all(c.find("failure") is None for c in cases)
    fams = check_prometheus(tmp_path / "d.prom")
    ok = {s.labels["host"]: s.value for s in fams["netfix_doctor_check_success"].samples}
    assert ok == {"node1": 1, "node2": 1, "node3": 1}
    assert "no finding at warning or above" in (tmp_path / "d.md").read_text()
    # the table, on stdout, exit code 0
    assert "no finding at warning or above" in lab.netfix("doctor", "--window", "0").stdout


def test_static_and_dynamic_address_on_one_interface(lab):
    lab.sh("node1", "ip addr add 10.252.1.77/24 dev eth1 valid_lft 3600 preferred_lft 3600")
    try:
        report, p = doctor(lab, "--window", "0", rc=2)
        assert problems(report) == [("node1", "addresses-static-and-dhcp")], problems(report)
        f = findings(report, "node1")["addresses-static-and-dhcp"]
        assert f["subject"] == "eth1" and f["evidence"]["dynamic"] == 1
        assert f["evidence"]["same_subnet"] == 1 and "10.252.1.77/24 dynamic" in f["summary"]
        assert f["remedy"]["action"] and f["remedy"]["profile"] == {}
    finally:
        lab.sh("node1", "ip addr del 10.252.1.77/24 dev eth1")
    assert problems(doctor(lab, "--window", "0", rc=0)[0]) == []


def start(lab, node: str, argv: str) -> str:
    """A background process inside the node; returns its pid there."""
    return lab.sh(node, f"setsid {argv} >/dev/null 2>&1 < /dev/null & echo $!").strip()


def test_kubelet_without_kube_proxy_is_critical(lab):
    fake = lab.dir / "kubelet"
    shutil.copy("/bin/sleep", fake)
    pid = start(lab, "node2", f"{fake} 300")
    try:
        report, p = doctor(lab, "--window", "0", rc=2)
        assert problems(report) == [("node2", "kubeproxy-missing")], problems(report)
        f = findings(report, "node2")["kubeproxy-missing"]
        assert f["severity"] == "critical" and "Services unreachable" in f["summary"]
        assert "critical" in lab.netfix("doctor", "--window", "0", check_rc=2).stdout
        # with a kube-proxy next to it, nothing to report
        kp = lab.dir / "kube-proxy"
        shutil.copy("/bin/sleep", kp)
        kpid = start(lab, "node2", f"{kp} 300")
        try:
            assert problems(doctor(lab, "--window", "0", rc=0)[0]) == []
        finally:
            lab.sh("node2", f"kill {kpid}")
            kp.unlink()
    finally:
        lab.sh("node2", f"kill {pid}")
        fake.unlink()  # the lab's dir holds only the lab's files: lab down removes it


def iptables_rules(n: int) -> str:
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]",
             "-A PREROUTING -j KUBE-SERVICES", "COMMIT", "*filter", ":INPUT ACCEPT [0:0]",
             ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":KUBE-BLOAT - [0:0]"]
    lines += [f"-A KUBE-BLOAT -d 10.96.{i // 250}.{i % 250 + 1}/32 -p tcp --dport 80 -j RETURN"
              for i in range(n)]
    return "\n".join(lines + ["COMMIT", ""])


def test_iptables_rule_bloat(lab):
    """Invariant: the rules are counted (and bloat reported) where kube-proxy runs in
    iptables mode; on a node running neither kubelet nor kube-proxy, or kube-proxy in IPVS
    mode, the dumps are not run (they are the script's most expensive part)."""
    if not shutil.which("iptables-restore"):
        skip_or_fail("iptables is not installed (scripts/setup.sh installs it)", "rule bloat")
    lab._labmod.node_exec(lab.nodes["node3"], ["iptables-restore"],
                          input=iptables_rules(25_000).encode())
    kp = lab.dir / "kube-proxy"
    shutil.copy("/bin/sleep", kp)
    pid = start(lab, "node3", f"{kp} 300")
    try:
        report, p = doctor(lab, "--window", "0", "--limit", "node3", rc=2)
        f = findings(report, "node3")["kubeproxy-rule-bloat"]
        assert f["severity"] == "warning" and f["evidence"]["rules"] >= 25_000
        assert f["evidence"]["kube_chains"] >= 1 and "IPVS" in f["remedy"]["action"]
        assert problems(report) == [("node3", "kubeproxy-rule-bloat")]
        lab.sh("node3", f"kill {pid}")
        # sleep takes no flags: the mode goes into its argv[0] (cmdline), comm stays
        pid = start(lab, "node3", f"bash -c 'exec -a \"kube-proxy --proxy-mode=ipvs\" {kp} 300'")
        assert "--proxy-mode=ipvs" in lab.sh("node3", f"tr '\\0' ' ' < /proc/{pid}/cmdline")
        assert problems(doctor(lab, "--window", "0", "--limit", "node3", rc=0)[0]) == []
        lab.sh("node3", f"kill {pid}")
        pid = None
        assert problems(doctor(lab, "--window", "0", "--limit", "node3", rc=0)[0]) == []
    finally:
        if pid:
            lab.sh("node3", f"kill {pid}")
        kp.unlink()
        for table in ("filter", "nat"):
            lab.sh("node3", f"iptables -t {table} -F && iptables -t {table} -X")
    assert problems(doctor(lab, "--window", "0", "--limit", "node3", rc=0)[0]) == []


SYN_SENDER = r"""
import random, socket, struct, sys, time
src, dst, port, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
end = time.time() + secs
while time.time() < end:
    tcp = struct.pack("!HHIIBBHHH", random.randint(20000, 60000), port,
                      random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = struct.pack("!4s4sBBH", socket.inet_aton(src), socket.inet_aton(dst), 0, 6,
                         len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    raw.sendto(tcp, (dst, 0))
    time.sleep(0.001)
"""
LISTENER = ("import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
            "socket.SO_REUSEADDR, 1); s.bind(({addr!r}, 8080)); s.listen(1); time.sleep(60)")


def test_syn_flood_is_reported_and_its_remedy_planned(lab, tmp_path):
    """node2 has profile `base` in the inventory and is in sync with it; then its
    syncookies are turned off by hand and it is flooded. The remedy profile extends base and
    its plan holds exactly the remedies."""
    src, dst = lab.nodes["node1"].address, lab.nodes["node2"].address
    inv = tmp_path / "inv.yaml"
    inv.write_text(lab.inventory.read_text().replace("vars:\n", "vars:\n  profile: base\n", 1))
    lab.netfix("apply", "--yes", "-i", str(inv), "--limit", "node2")
    (lab.dir / "syn.py").write_text(SYN_SENDER)
    (lab.dir / "listen.py").write_text(LISTENER.format(addr=dst))
    assert lab.sysctl("node2", "net.ipv4.tcp_syncookies") == "1"
    lab.sh("node2", "sysctl -qw net.ipv4.tcp_syncookies=0")
    # node1 never answers node2's SYN-ACKs (no RST), so the half-open entries stay queued
    lab.sh("node1", "nft add table inet ndtest && nft add chain inet ndtest in '{ type filter "
           "hook input priority 0; }' && nft add rule inet ndtest in tcp sport 8080 drop")
    listener = start(lab, "node2", f"python3 {lab.dir / 'listen.py'}")
    sender = None
    try:
        time.sleep(0.3)
        sender = start(lab, "node1", f"python3 {lab.dir / 'syn.py'} {src} {dst} 8080 8")
        time.sleep(0.5)
        fix = tmp_path / "fix.yaml"
        report, p = doctor(lab, "-i", str(inv), "--window", "2", "--limit", "node2",
                           "--fix-profile", str(fix), "--junit", str(tmp_path / "s.xml"),
                           "--prometheus", str(tmp_path / "s.prom"), rc=2)
    finally:
        if sender:
            lab.sh("node1", f"kill {sender}", check=False)
        lab.sh("node2", f"kill {listener}", check=False)
        lab.sh("node1", "nft delete table inet ndtest")
        for name in ("syn.py", "listen.py"):
            (lab.dir / name).unlink()
    try:
        got = findings(report, "node2")
        drop = got["synflood-syn-drops"]
        assert drop["severity"] == "critical" and drop["now"] is True
        assert drop["evidence"]["TCPReqQFullDrop_delta"] > 50, drop["evidence"]
        assert drop["evidence"]["drops_per_second"] > 25
        assert drop["evidence"]["smallest_backlog"] == 1
        assert "synflood-accept-overflow" in got  # ListenDrops counted with the SYN drops
        (tmp_path / "s.json").write_text(p.stdout)
        check_json(tmp_path / "s.json")
        xml = (tmp_path / "s.xml").read_bytes()
        JUNIT_XSD.validate(xml.decode())
        case = [c for c in ET.fromstring(xml).iter("testcase") if c.get("name") == "synflood"]
        assert "synflood-syn-drops" in case[0].find("failure").get("type")
        fams = check_prometheus(tmp_path / "s.prom")
        rate = {s.labels["source"]: s.value
                for s in fams["netfix_doctor_drops_per_second"].samples}
        assert rate["TCPReqQFullDrop"] > 25
        # the remedy profile: extends base, syncookies on, larger backlogs, each commented;
        # base owns syncookies and the backlogs under `sysctl:`, so they stay there
        text = fix.read_text()
        prof = yaml.safe_load(text)
        assert prof["extends"] == "base", text
        sysctl = prof["sysctl"]
        assert sysctl["net.ipv4.tcp_syncookies"] == 1, text
        assert sysctl["net.core.somaxconn"] == ">=8192"
        assert sysctl["net.ipv4.tcp_max_syn_backlog"] == ">=8192"
        assert prof["syn_flood"] == {"synack_retries": 3}
        assert "# synflood-syn-drops (critical, node2): TCPReqQFullDrop +" in text
        hosts = yaml.safe_load((tmp_path / "fix.hosts.yaml").read_text())
        assert hosts == {"hosts": {"node2": {"profile": str(fix.resolve())}}}
        lab.netfix("profiles", "show", str(fix), inventory=False)
        plan = json.loads(lab.netfix("plan", "--json", "-i", str(inv), "--profile", str(fix),
                                     "--limit", "node2").stdout)
        changes = {c["target"]: c for c in plan["hosts"][0]["changes"]
                   if c["action"] != "ok" and not c["target"].startswith("/")}
        assert set(changes) == {"net.ipv4.tcp_syncookies", "net.core.somaxconn",
                                "net.ipv4.tcp_max_syn_backlog",
                                "net.ipv4.tcp_synack_retries"}, changes
        assert (changes["net.ipv4.tcp_syncookies"]["current"],
                changes["net.ipv4.tcp_syncookies"]["desired"]) == ("0", "1")
        assert changes["net.core.somaxconn"]["desired"] == "8192"
        assert changes["net.ipv4.tcp_max_syn_backlog"]["desired"] == "8192"
        assert changes["net.ipv4.tcp_synack_retries"]["desired"] == "3"
    finally:
        lab.sh("node2", "sysctl -qw net.ipv4.tcp_syncookies=1")
        lab.netfix("rollback", "--yes", "--force", "-i", str(inv), "--limit", "node2")


def test_overlay_mtu_above_its_underlay(lab):
    lab.sh("node3", "ip link add vxlan.calico type vxlan id 42 dev eth1 dstport 4789 && "
           "ip link set vxlan.calico mtu 1450 up && ip link set eth1 mtu 1400")
    try:
        report, _ = doctor(lab, "--window", "0", "--limit", "node3", rc=2)
        f = findings(report, "node3")["mtu-overlay-too-large"]
        assert f["subject"] == "vxlan.calico"
        assert (f["evidence"]["overlay_mtu"], f["evidence"]["limit"]) == (1450, 1350)
        assert "1400 - 50" in f["summary"]
    finally:
        lab.sh("node3", "ip link del vxlan.calico; ip link set eth1 mtu 1500")


def test_probe_mtu_finds_the_black_hole_between_lab_nodes(lab):
    if not shutil.which("ping"):
        skip_or_fail("ping is not installed (scripts/setup.sh installs iputils-ping)",
                     "--probe-mtu")
    # node1 sends 9000-byte frames; its veth peer on the lab bridge carries 1500: dropped
    # without an ICMP error, while small packets (and TCP, clamped by the peer's MSS) pass.
    lab.sh("node1", "ip link set eth0 mtu 9000")
    try:
        report, _ = doctor(lab, "--window", "0", "--limit", "node1,node2", "--probe-mtu",
                           rc=2)
        assert problems(report) == [("node1", "mtu-black-hole")], problems(report)
        f = findings(report, "node1")["mtu-black-hole"]
        assert f["severity"] == "critical" and f["evidence"]["peer"] == "10.251.0.12"
        assert f["evidence"]["mtu"] == 9000
    finally:
        lab.sh("node1", "ip link set eth0 mtu 1500")
    report, _ = doctor(lab, "--window", "0", "--limit", "node1,node2", "--probe-mtu", rc=0)
    assert problems(report) == []


def test_fleet_outliers_mtu_and_sysctl_with_the_majority(lab, tmp_path):
    """One of the three lab nodes (inventory group `lab`) with another eth1 MTU, one with
    another somaxconn (per network namespace): each is the outlier, named against the other
    two; the sysctl's remedy profile plans exactly that key back to the majority."""
    mtu = lab.sh("node2", "cat /sys/class/net/eth1/mtu").strip()
    somaxconn = lab.sysctl("node3", "net.core.somaxconn")
    assert lab.sysctl("node1", "net.core.somaxconn") == somaxconn
    lab.sh("node2", "ip link set eth1 mtu 1400")
    lab.sh("node3", "sysctl -qw net.core.somaxconn=1024")
    fix = tmp_path / "fix.yaml"
    try:
        report, _ = doctor(lab, "--window", "0", "--fix-profile", str(fix), rc=2)
        assert sorted(problems(report)) == [("node2", "fleet-outlier"),
                                            ("node3", "fleet-outlier")], problems(report)
        f = findings(report, "node2")["fleet-outlier"]
        assert f["detector"] == "fleet" and f["severity"] == "warning"
        assert f["subject"] == "eth1 mtu"
        assert f["evidence"] == {"value": 1400, "majority_value": int(mtu),
                                 "majority_count": 2, "group_size": 3, "group": "lab",
                                 "interface": "eth1", "driver": "veth"}
        assert f["summary"] == (f"node2 eth1 mtu 1400; 2 of 3 hosts in group lab with eth1 "
                                f"on veth have mtu {mtu}")
        assert f["remedy"]["profile"] == {} and f"mtu: {mtu}" in f["remedy"]["action"]
        f = findings(report, "node3")["fleet-outlier"]
        assert f["subject"] == "net.core.somaxconn"
        assert (f["evidence"]["value"], f["evidence"]["majority_value"],
                f["evidence"]["majority_count"]) == (1024, int(somaxconn), 2)
        assert f["remedy"]["profile"] == {"syn_flood": {"somaxconn": int(somaxconn)}}
        # the remedy profile for node3 plans somaxconn back to the majority, nothing else
        prof = yaml.safe_load(fix.read_text())
        assert prof["syn_flood"] == {"somaxconn": int(somaxconn)}, fix.read_text()
        assert "fleet-outlier (warning, node3): 1024 on node3" in fix.read_text()
        plan = json.loads(lab.netfix("plan", "--json", "--profile", str(fix), "--limit",
                                     "node3").stdout)
        changes = {c["target"]: c for c in plan["hosts"][0]["changes"]
                   if c["action"] != "ok" and not c["target"].startswith("/")}
        assert set(changes) == {"net.core.somaxconn"}, changes
        assert (changes["net.core.somaxconn"]["current"],
                changes["net.core.somaxconn"]["desired"]) == ("1024", somaxconn)
        # two nodes agree with neither: no majority of the three for that key any more
        lab.sh("node1", "sysctl -qw net.core.somaxconn=2048")
        report, _ = doctor(lab, "--window", "0", rc=2)
        assert sorted(problems(report)) == [("node2", "fleet-outlier")], problems(report)
        # with two nodes only, nobody is judged
        report, _ = doctor(lab, "--window", "0", "--limit", "node1,node2", rc=0)
    finally:
        lab.sh("node2", f"ip link set eth1 mtu {mtu}")
        for node in ("node1", "node3"):
            lab.sh(node, f"sysctl -qw net.core.somaxconn={somaxconn}")
    assert problems(doctor(lab, "--window", "0", rc=0)[0]) == []


def test_trace_drops_is_not_run_in_a_network_namespace(lab, tmp_path):
    """The lab nodes are network namespaces of this machine's kernel: skb:kfree_skb would
    see the host's drops. Doctor says so (a note and an info finding) and never enables
    it there: no drops-reason finding, no tracefs instance of its own."""
    report, p = doctor(lab, "--window", "0", "--trace-drops", "1", rc=0)
    for h in report["hosts"]:
        codes = {f["code"]: f for f in h["findings"]}
        assert codes["drops-trace-unavailable"]["evidence"]["state"] == "netns", codes
        assert codes["drops-trace-unavailable"]["severity"] == "info"
        assert "drops-reason" not in codes
        assert any("--trace-drops not run" in n for n in h["notes"]), h["notes"]
    for top in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")):
        if (top / "instances").is_dir():
            assert not [d for d in (top / "instances").iterdir()
                        if d.name.startswith("netfix-doctor")]
    (tmp_path / "d.json").write_text(p.stdout)
    check_json(tmp_path / "d.json")
