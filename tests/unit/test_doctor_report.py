"""Doctor report formats read back by real consumers: the JSON by check-jsonschema against
docs/doctor-report.schema.json, the JUnit by xmlschema against tests/data/junit.xsd, the
Prometheus text by prometheus_client's parser (and promtool where installed); and the
remedy profiles of --fix-profile by netfix's own profile loader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import xmlschema
import yaml
from prometheus_client.parser import text_string_to_metric_families

from netfix.doctor import Finding, Remedy, Severity, fixprofile, synflood
from netfix.doctor import report as dreport
from netfix.doctor.run import DoctorReport, HostDoctor

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "doctor-report.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
JUNIT_XSD = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit.xsd"))
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
NETFIX = str(Path(sys.executable).with_name("netfix"))
DETS = ["addresses", "kubeproxy", "mtu", "synflood"]


def syn_finding(host_drop: int = 500) -> Finding:
    s = synflood
    once = ("/proc/sys/net/ipv4/tcp_syncookies:0\n/proc/sys/net/ipv4/tcp_max_syn_backlog:4096\n"
            "/proc/sys/net/core/somaxconn:4096\n/proc/sys/net/ipv4/tcp_synack_retries:5\n")
    net = ("TcpExt: ListenOverflows ListenDrops TCPReqQFullDoCookies TCPReqQFullDrop\n"
           "TcpExt: 0 0 0 {}\n")
    from netfix.doctor import Sample

    smp = Sample("x", 2.0, once={"synflood": once}, before={"synflood": net.format(0)},
                 after={"synflood": net.format(host_drop)})
    [f] = s.detect(smp)
    f.detector = "synflood"
    return f


def sample_report() -> DoctorReport:
    syn = syn_finding()
    dual = Finding("addresses-static-and-dhcp", Severity.WARNING, "eth1", "two | addresses",
                   "why", {"interface": "eth1", "dynamic": 1},
                   Remedy(action="fix eth1's configuration"), now=True, detector="addresses")
    info = Finding("synflood-since-boot", Severity.INFO, "tcp", "since boot", "why",
                   {"ListenOverflows_since_boot": 3}, detector="synflood")
    n1 = HostDoctor("n1", [syn, dual, info], checked_at=1_700_000_000, duration=2.1, window=2.0,
                    kernel="6.1", detectors=DETS)
    n2 = HostDoctor("n2", [], checked_at=1_700_000_000, duration=2.0, window=2.0,
                    detectors=DETS)
    ghost = HostDoctor("ghost", error="cannot reach 127.0.0.1:9: Connection refused",
                       checked_at=1_700_000_001, detectors=DETS)
    broken = HostDoctor("n3", [], detector_errors={"mtu": "detector mtu failed: boom"},
                        checked_at=1_700_000_000, detectors=DETS)
    return DoctorReport([n1, n2, ghost, broken], window=2.0, started=1_700_000_000,
                        finished=1_700_000_003)


def test_json_is_valid_for_check_jsonschema_and_the_schema_constrains(tmp_path):
    rep = sample_report()
    data = json.loads(dreport.to_json(rep))
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    assert data["schema"] == "netfix-doctor/v1" and data["exit_code"] == 1
    assert [h["status"] for h in data["hosts"]] == ["findings", "ok", "error", "error"]
    first = data["hosts"][0]["findings"][0]
    assert first["severity"] == "critical" and first["code"] == "synflood-syn-drops"
    assert first["evidence"]["TCPReqQFullDrop_delta"] == 500
    if not CHECK_JSONSCHEMA.exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[test]')")
    (tmp_path / "r.json").write_text(json.dumps(data))
    run = [str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA_FILE)]
    res = subprocess.run([*run, str(tmp_path / "r.json")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    data["hosts"][0]["findings"][0]["severity"] = "catastrophic"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    assert subprocess.run([*run, str(tmp_path / "bad.json")],
                          capture_output=True).returncode == 1


def test_junit_has_a_case_per_host_and_detector():
    xml = dreport.junit(sample_report())
    JUNIT_XSD.validate(xml.decode())
    root = ET.fromstring(xml)
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    n1 = {c.get("name"): c for c in suites["n1"].findall("testcase")}
    assert list(n1) == DETS
    assert n1["synflood"].find("failure").get("type") == "synflood-syn-drops"
    assert "TCPReqQFullDrop" in n1["synflood"].find("failure").text
    assert n1["addresses"].find("failure") is not None
    assert n1["mtu"].find("failure") is None and n1["kubeproxy"].find("failure") is None
    assert suites["n1"].get("failures") == "2" and suites["n1"].get("tests") == "4"
    assert suites["ghost"].find("testcase/error") is not None
    n3 = {c.get("name"): c for c in suites["n3"].findall("testcase")}
    assert n3["mtu"].find("error") is not None and suites["n3"].get("errors") == "1"
    assert root.get("failures") == "2" and root.get("errors") == "2"


def test_prometheus_findings_and_raw_gauges(tmp_path):
    text = dreport.prometheus(sample_report())
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(dreport.METRICS) <= set(fams)

    def value(name, **labels):
        hits = [s.value for s in fams[name].samples
                if all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(hits) <= 1, hits
        return hits[0] if hits else None

    assert value("netfix_doctor_finding", host="n1", code="synflood-syn-drops",
                 severity="critical") == 1
    assert value("netfix_doctor_findings", host="n1", severity="warning") == 1
    assert value("netfix_doctor_findings", host="ghost", severity="warning") is None
    assert value("netfix_doctor_check_success", host="ghost") == 0
    assert value("netfix_doctor_check_success", host="n3") == 0
    assert value("netfix_doctor_check_success", host="n2") == 1
    assert value("netfix_doctor_drops_per_second", host="n1", source="TCPReqQFullDrop") == 250
    promtool = shutil.which("promtool")
    if promtool:
        res = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                             capture_output=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_markdown_is_escaped_and_critical_first():
    md = dreport.markdown(sample_report())
    assert md.startswith("### netfix doctor: 4 host(s); 1 critical and 1 warning")
    rows = [line for line in md.splitlines() if line.startswith("| critical") or
            line.startswith("| warning")]
    assert rows[0].startswith("| critical | n1 |") and "two \\| addresses" in rows[1]
    assert "| ghost | **error**: cannot reach" in md


def test_fix_profile_is_valid_commented_and_lists_the_rest(tmp_path):
    rep = sample_report()
    out = tmp_path / "fix.yaml"
    lines = fixprofile.write(rep, out)
    text = out.read_text()
    data = yaml.safe_load(text)
    assert "extends" not in data  # n1 has no profile in the inventory
    assert data["syn_flood"]["syncookies"] == 1 and data["syn_flood"]["max_syn_backlog"] == 8192
    assert "# synflood-syn-drops (critical, n1): TCPReqQFullDrop +500 in 2 s" in text
    assert "addresses-static-and-dhcp" in text and "fix eth1's configuration" in text
    assert any(line.startswith("by hand (no knob fixes it): n1 addresses-static-and-dhcp")
               for line in lines)
    assert any(line.startswith("also by hand: n1 synflood-syn-drops") for line in lines)
    assert any("not checked" in line and "ghost" in line for line in lines)
    hosts = yaml.safe_load((tmp_path / "fix.hosts.yaml").read_text())
    assert hosts == {"hosts": {"n1": {"profile": str(out.resolve())}}}
    res = subprocess.run([NETFIX, "profiles", "show", str(out)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert "somaxconn: 8192" in res.stdout


def test_fix_profile_extends_the_hosts_profile_without_lowering_it(tmp_path):
    rep = sample_report()
    rep.hosts[0].profile = "base"  # base keeps the SYN-flood keys under `sysctl:`
    h2 = HostDoctor("n4", [syn_finding(9000)], profile="base", detectors=DETS,
                    checked_at=1_700_000_000)
    h2.findings[0].remedy.profile["syn_flood"]["somaxconn"] = 16384
    rep.hosts.append(h2)
    fixprofile.write(rep, tmp_path / "fix.yaml")
    one = yaml.safe_load((tmp_path / "fix.yaml").read_text())
    two = yaml.safe_load((tmp_path / "fix-2.yaml").read_text())
    assert one["extends"] == "base" and "syn_flood" not in one or \
        "syncookies" not in one.get("syn_flood", {})
    # moved under sysctl where base owns them, floors kept as floors
    assert one["sysctl"]["net.ipv4.tcp_syncookies"] == 1
    assert one["sysctl"]["net.core.somaxconn"] == ">=8192"
    assert two["sysctl"]["net.core.somaxconn"] == ">=16384"
    hosts = yaml.safe_load((tmp_path / "fix.hosts.yaml").read_text())["hosts"]
    assert set(hosts) == {"n1", "n4"} and hosts["n4"]["profile"].endswith("fix-2.yaml")
    for f in ("fix.yaml", "fix-2.yaml"):
        res = subprocess.run([NETFIX, "profiles", "validate", str(tmp_path / f)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_combine_takes_the_larger_value():
    assert fixprofile.combine(4096, 8192) == 8192
    assert fixprofile.combine(">=4096", 1024) == ">=4096"
    assert fixprofile.combine(1, 0) == 1
    assert fixprofile.merge({"a": {"b": 1}}, {"a": {"b": 3, "c": 2}}) == {"a": {"b": 3, "c": 2}}


def test_doctor_help_lists_every_detector_and_code():
    from netfix.doctor import detectors

    res = subprocess.run([NETFIX, "doctor", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    for mod in detectors():
        assert f"{mod.NAME}:" in res.stdout
        for code in mod.CODES:
            assert code in res.stdout, code
