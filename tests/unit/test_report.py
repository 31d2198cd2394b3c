"""Drift classification and the report formats, from recorded facts and journals (no root).

The JUnit output is validated against tests/data/junit.xsd, the JSON against the schema
documented in docs/, and the Prometheus text is read back with prometheus_client's parser.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import xmlschema
from prometheus_client.parser import text_string_to_metric_families

from netfix import drift, report
from netfix.drift import DriftItem, DriftReport, HostDrift
from netfix.errors import NetfixError
from netfix.facts import DirEntry, Facts, Value
from netfix.inventory import Host
from netfix.journal import Step, Tx
from netfix.knobs import Context, conntrack, sysctl
from netfix.plan import HostPlan
from netfix.util import sysctl_path
from netfix.writers import kubeproxy

ROOT = Path(__file__).resolve().parents[2]
JUNIT_XSD = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit.xsd"))
JSON_SCHEMA = json.loads((ROOT / "docs" / "drift-report.schema.json").read_text())
NETFIX = str(Path(sys.executable).with_name("netfix"))
CTX = Context("test")
SOMAXCONN = "net.core.somaxconn"
SYNACK = "net.ipv4.tcp_synack_retries"
EST = conntrack.TIMEOUTS["tcp_established"]
UDP = conntrack.TIMEOUTS["udp"]

KUBE_PROXY = "PID 77\nARG kube-proxy\nARG --conntrack-tcp-timeout-established=24h0m0s\n"


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def make_facts(files: dict[str, bytes | None], dirs: dict[str, dict[str, DirEntry]] | None = None,
               kube_proxy: str = "") -> Facts:
    f = Facts(host="n1", cpus=4, mem_bytes=8 * 2**30, uid=0,
              scripts={"kube-proxy": kube_proxy} if kube_proxy else {})
    values = {SOMAXCONN: ("4096", True), SYNACK: ("3", True), EST: ("432000", True),
              UDP: ("15", True), conntrack.MAX: ("262144", False),
              conntrack.BUCKETS: ("65536", False), conntrack.HASHSIZE: ("65536", False)}
    for key, (value, writable) in values.items():
        path = key if key.startswith("/") else sysctl_path(key)
        f.values[path] = Value(True, writable, value)
    f.files.update(files)
    f.dirs.update(dirs or {})
    return f


SYSCTL = {SOMAXCONN: "8192", SYNACK: "3"}
CONNTRACK = {"max": 524288, "timeouts": {"tcp_established": 3600, "udp": 15}}


def host_plan(f: Facts) -> HostPlan:
    changes = sysctl.diff(SYSCTL, f, CTX) + conntrack.diff(CONNTRACK, f, CTX)
    kubeproxy.annotate(changes, f)  # the writer model runs after the knobs, as in the engine
    return HostPlan("n1", "test", changes)


def wanted(path: str) -> bytes:
    """What netfix writes to `path` for the profile above (computed by the knobs)."""
    hp = host_plan(make_facts({}))
    op = next(op for c in hp.changes for op in c.ops if op.path == path)
    return base64.b64decode(op.new)


def apply_tx(written: dict[str, bytes | None], status: str = "applied 2026-01-01T00:00:00Z",
             when: float = 1000.0, tx_id: str = "20260101T000000Z-aaaaaa") -> Tx:
    steps = [Step("file", p, None, b64(c), knob="sysctl", target=p) for p, c in written.items()]
    return Tx(tx_id, "apply", "n1", "test", steps, time=when, controller="ctl", user="ops",
              status=status)


def kinds(hd: HostDrift) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for i in hd.items:
        out.setdefault((i.knob, i.target), []).append(i.kind)
    return out


# ---------------------------------------------------------------- classification


def test_every_kind_is_classified_from_facts_and_journal():
    persisted = wanted(sysctl.PERSIST)
    edited = persisted.replace(b"net.core.somaxconn = 8192", b"net.core.somaxconn = 1024")
    ct_files = {conntrack.PERSIST: wanted(conntrack.PERSIST),
                conntrack.MODULES_LOAD: wanted(conntrack.MODULES_LOAD)}
    shadow = {"99-zz-local.conf": DirEntry(b"net.ipv4.tcp_synack_retries = 5\n")}
    f = make_facts({sysctl.PERSIST: edited, **ct_files}, {"/etc/sysctl.d": shadow},
                   kube_proxy=KUBE_PROXY)
    unconfirmed = apply_tx({}, status="applied-unconfirmed 2026-01-02T00:00:00Z", when=2000,
                           tx_id="20260102T000000Z-bbbbbb")
    txs = [apply_tx({sysctl.PERSIST: persisted, **ct_files}), unconfirmed]

    hd = drift.classify(host_plan(f), txs)
    k = kinds(hd)
    assert k[("sysctl", SOMAXCONN)] == ["live"]
    assert k[("sysctl", sysctl.PERSIST)] == ["edited"]
    assert k[("sysctl", SYNACK)] == ["shadowed"]
    assert k[("conntrack", EST)] == ["live", "other-writer"]
    assert k[("journal", unconfirmed.id)] == ["unconfirmed"]
    assert ("conntrack", UDP) not in k and ("conntrack", conntrack.PERSIST) not in k
    assert hd.status == "drift"

    by = {(i.target, i.kind): i for i in hd.items}
    live = by[(SOMAXCONN, "live")]
    assert (live.host, live.expected, live.actual) == ("n1", "8192", "4096")
    ed = by[(sysctl.PERSIST, "edited")]
    assert "-net.core.somaxconn = 8192" in ed.detail and "+net.core.somaxconn = 1024" in ed.detail
    assert "20260101T000000Z-aaaaaa" in ed.detail
    sh = by[(SYNACK, "shadowed")]
    assert sh.actual == "5" and "/etc/sysctl.d/99-zz-local.conf" in sh.detail
    assert "kube-proxy (pid 77)" in by[(EST, "other-writer")].detail
    assert "rollback --tx 20260102T000000Z-bbbbbb" in by[(unconfirmed.id, "unconfirmed")].detail

    # not settable in a network namespace: info, never drift
    info = {i.target: i.kind for i in hd.info}
    assert info[conntrack.MAX] == "not-settable"
    assert all(i.target != conntrack.MAX for i in hd.items)
    # every target looked at is listed, drifted or not
    assert ("conntrack", UDP) in hd.checked and ("sysctl", SOMAXCONN) in hd.checked


def test_unfinished_transactions_are_incomplete_drift():
    f = make_facts({})
    txs = [apply_tx({}, status="applying 2026-01-03T00:00:00Z", tx_id="20260103T000000Z-cccccc"),
           apply_tx({}, status="failed-restore-incomplete 2026-01-04T00:00:00Z", when=3000,
                    tx_id="20260104T000000Z-dddddd"),
           apply_tx({}, status="failed-restored 2026-01-05T00:00:00Z", when=4000,
                    tx_id="20260105T000000Z-eeeeee")]
    k = kinds(drift.classify(host_plan(f), txs))
    assert k[("journal", "20260103T000000Z-cccccc")] == ["incomplete"]
    assert k[("journal", "20260104T000000Z-dddddd")] == ["incomplete"]
    assert ("journal", "20260105T000000Z-eeeeee") not in k  # cleanly restored: not drift


def test_file_kinds_depend_on_what_netfix_last_wrote():
    persisted = wanted(sysctl.PERSIST)
    old_profile = persisted.replace(b"8192", b"4096")

    def file_kind(current: bytes | None, txs: list[Tx]) -> DriftItem:
        hd = drift.classify(host_plan(make_facts({sysctl.PERSIST: current})), txs)
        return next(i for i in hd.items if i.target == sysctl.PERSIST)

    # never applied: the file is simply missing
    missing = file_kind(None, [])
    assert missing.kind == "persisted" and "missing" in missing.detail
    # netfix wrote it for an older profile and nobody touched it: persisted, not edited
    older = file_kind(old_profile, [apply_tx({sysctl.PERSIST: old_profile})])
    assert older.kind == "persisted" and "+net.core.somaxconn = 8192" in older.detail
    # deleted by hand after netfix wrote it
    gone = file_kind(None, [apply_tx({sysctl.PERSIST: persisted})])
    assert gone.kind == "edited" and gone.detail.startswith("deleted by hand")
    # a rolled-back apply is not netfix's content any more
    rolled = apply_tx({sysctl.PERSIST: persisted}, status="rolled-back 20260103T0-cc 2026")
    assert file_kind(b"junk\n", [rolled]).kind == "persisted"
    # the latest applied transaction wins over an older one
    both = [apply_tx({sysctl.PERSIST: b"first\n"}),
            apply_tx({sysctl.PERSIST: old_profile}, when=3000, tx_id="t2")]
    assert file_kind(old_profile, both).kind == "persisted"
    assert file_kind(b"first\n", both).kind == "edited"


def test_in_sync_host_has_no_drift_and_exit_codes():
    files = {p: wanted(p) for p in (sysctl.PERSIST, conntrack.PERSIST, conntrack.MODULES_LOAD)}
    f = make_facts(files)
    f.values[sysctl_path(SOMAXCONN)].value = "8192"
    f.values[sysctl_path(EST)].value = "3600"
    clean = drift.classify(host_plan(f), [apply_tx(files)])
    assert clean.items == [] and clean.status == "ok" and clean.info  # info does not count
    dirty = drift.classify(host_plan(make_facts(files)), [])
    broken = HostDrift("ghost", "test", error="cannot reach 10.0.0.9:22: refused")
    assert DriftReport([clean]).exit_code == 0
    assert DriftReport([clean, dirty]).exit_code == 2
    assert DriftReport([clean, dirty, broken]).exit_code == 1  # an error is never hidden
    assert DriftReport([broken]).exit_code == 1


# --------------------------------------------------------------------- reports


def sample_report() -> DriftReport:
    f = make_facts({}, {"/etc/sysctl.d": {"99-zz-local.conf": DirEntry(
        b"net.ipv4.tcp_synack_retries = 5\n")}}, kube_proxy=KUBE_PROXY)
    hd = drift.classify(host_plan(f), [], checked_at=1_700_000_000.5)
    hd.duration = 0.25
    files = {p: wanted(p) for p in (sysctl.PERSIST, conntrack.PERSIST, conntrack.MODULES_LOAD)}
    ok_facts = make_facts(files)
    ok_facts.values[sysctl_path(SOMAXCONN)].value = "8192"
    ok_facts.values[sysctl_path(EST)].value = "3600"
    ok = drift.classify(HostPlan("n2", "test", host_plan(ok_facts).changes), [],
                        checked_at=1_700_000_001)
    bad = HostDrift("ghost", "test", error="cannot reach 10.251.0.99:22: <refused> & \x01",
                    checked_at=1_700_000_002)
    return DriftReport([hd, ok, bad], started=1_700_000_000, finished=1_700_000_003,
                       profile="test")


def test_json_follows_the_documented_versioned_schema():
    rep = sample_report()
    data = json.loads(report.to_json(rep))
    jsonschema.Draft202012Validator(JSON_SCHEMA).validate(data)
    assert data["schema"] == "netfix-drift/v1" and data["exit_code"] == 1
    assert [h["status"] for h in data["hosts"]] == ["drift", "ok", "error"]
    assert data["summary"]["by_kind"]["shadowed"] == 1
    live = next(i for i in data["hosts"][0]["items"] if i["target"] == SOMAXCONN)
    assert (live["kind"], live["expected"], live["actual"]) == ("live", "8192", "4096")
    # the schema really constrains: a made-up kind is rejected
    data["hosts"][0]["items"][0]["kind"] = "mystery"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(JSON_SCHEMA).validate(data)


def test_junit_is_valid_and_has_a_case_per_host_and_target():
    rep = sample_report()
    xml = report.junit(rep)
    JUNIT_XSD.validate(xml.decode())
    root = ET.fromstring(xml)
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["n1", "n2", "ghost"]
    assert [s.get("id") for s in suites.values()] == ["0", "1", "2"]
    n1 = suites["n1"]
    cases = {(c.get("classname"), c.get("name")): c for c in n1.findall("testcase")}
    assert len(cases) == len(rep.hosts[0].checked)
    fail = cases[("n1.sysctl", SOMAXCONN)].find("failure")
    assert fail.get("type") == "live" and "expected 8192, actual 4096" in fail.get("message")
    assert cases[("n1.conntrack", EST)].find("failure").get("type") == "live,other-writer"
    assert cases[("n1.conntrack", conntrack.MAX)].find("skipped") is not None
    drifted = {(i.knob, i.target) for i in rep.hosts[0].items}
    assert n1.get("failures") == str(len(drifted)) and n1.get("errors") == "0"
    assert suites["n2"].get("failures") == "0" and int(suites["n2"].get("tests")) > 3
    err = suites["ghost"].find("testcase/error")
    assert "cannot reach" in err.get("message") and suites["ghost"].get("errors") == "1"
    assert root.get("errors") == "1" and root.get("failures") == str(len(drifted))


def test_junit_schema_rejects_what_ci_systems_would_not_read():
    bad = ('<testsuites><testsuite name="h" tests="1" failures="2" errors="0">'
           '<testcase name="x"><failure message="a"/><failure message="b"/></testcase>'
           '</testsuite></testsuites>')
    assert not JUNIT_XSD.is_valid(bad)
    assert not JUNIT_XSD.is_valid('<testsuites><testsuite name="h" tests="1" failures="0" '
                                  'errors="0"><testcase classname="c"/></testsuite></testsuites>')


def test_prometheus_text_parses_and_escapes_labels():
    rep = sample_report()
    odd = 'we"ird\\host\nname'
    rep.hosts.append(HostDrift(odd, "test", items=[DriftItem(odd, "sysctl", "k", "live", "1",
                                                             "2")], checked_at=5.0))
    rep.hosts[-1].items.append(rep.hosts[-1].items[0])  # a duplicate series must not appear
    text = report.prometheus(rep)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(fams) == set(report.METRICS)
    assert all(f.type == "gauge" and f.documentation for f in fams.values())

    def value(name: str, **labels) -> float | None:
        hits = [s.value for s in fams[name].samples if all(s.labels.get(k) == v
                                                              for k, v in labels.items())]
        assert len(hits) <= 1, hits
        return hits[0] if hits else None

    assert value("netfix_drift", host="n1", knob="sysctl", target=SOMAXCONN, kind="live") == 1
    assert value("netfix_drift", host="n1", knob="conntrack", target=EST,
                 kind="other-writer") == 1
    assert value("netfix_drift_items", host="n1") == len(rep.hosts[0].items)
    assert value("netfix_drift_items", host="n2") == 0
    assert value("netfix_check_success", host="n2") == 1
    # a failed check: success 0, and no drift count that could read as "no drift"
    assert value("netfix_check_success", host="ghost") == 0
    assert value("netfix_drift_items", host="ghost") is None
    assert value("netfix_last_check_timestamp_seconds", host="ghost") == 1_700_000_002
    # quotes, backslashes and newlines survive the round trip; one series per label set
    assert value("netfix_drift", host=odd, kind="live") == 1
    assert value("netfix_drift_items", host=odd) == 2


def test_markdown_summary_is_short_and_escaped():
    rep = sample_report()
    rep.hosts[0].items.append(DriftItem("n1", "sysctl", "a|b", "live", "x|y", "z", "d"))
    md = report.markdown(rep)
    assert md.startswith("### netfix drift: drift on 1 of 3 host(s)")
    assert "could not be checked" in md
    assert "| n1 | test | **drift**:" in md and "| n2 | test | ok |" in md
    assert "| ghost | test | **error**: cannot reach" in md and "\\<refused\\>" in md
    assert "\x01" not in md
    assert "`a\\|b`" in md and "`x\\|y`" in md  # a pipe would split the table row
    row = next(line for line in md.splitlines() if "`a\\|b`" in line)
    assert row.replace("\\|", "").count("|") == 8  # still exactly 7 cells
    short = report.markdown(rep, max_rows=2)
    assert f"and {len(rep.items) - 2} more item(s)" in short


def test_write_reports_is_atomic_and_replaces(tmp_path):
    rep = sample_report()
    paths = [tmp_path / "out" / "drift.xml", tmp_path / "out" / "drift.prom",
             tmp_path / "out" / "summary.md"]
    paths[1].parent.mkdir()
    paths[1].write_text("stale\n")
    written = report.write_reports(rep, *paths)
    assert written == paths
    assert paths[0].read_bytes() == report.junit(rep)
    assert paths[1].read_text() == report.prometheus(rep)
    assert paths[2].read_text() == report.markdown(rep)
    assert sorted(p.name for p in paths[0].parent.iterdir()) == sorted(p.name for p in paths)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(NetfixError, match="cannot write report"):
        report.write_reports(rep, junit_path=blocker / "drift.xml")


# ------------------------------------------------------- unreachable hosts, watch


def unreachable(name: str = "ghost") -> Host:
    # Port 1 on loopback: refused at once, no root and no lab needed.
    return Host(name, [], {"ssh_host": "127.0.0.1", "ssh_port": 1, "profile": "base",
                           "connect_timeout": 2})


def test_unreachable_host_is_an_error_never_no_drift():
    rep = drift.check([unreachable("a"), unreachable("b")])
    assert [h.status for h in rep.hosts] == ["error", "error"]
    assert all("127.0.0.1" in h.error for h in rep.hosts)
    assert rep.exit_code == 1 and not rep.has_drift


def test_watch_rechecks_on_a_timer_until_count():
    seen: list[tuple[int, int]] = []
    sleeps: list[float] = []
    now = [0.0]

    def clock() -> float:
        now[0] += 0.5  # every clock read: half a second passes
        return now[0]

    last = drift.watch([unreachable()], None, 10.0, 3,
                       lambda r, n: seen.append((n, r.exit_code)), sleep=sleeps.append,
                       clock=clock)
    assert seen == [(1, 1), (2, 1), (3, 1)]
    assert sleeps == [9.5, 9.5]  # interval measured start to start, no sleep after the last
    assert last.hosts[0].host == "ghost"


# ----------------------------------------------------------------------- the CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NETFIX_INVENTORY"}
    return subprocess.run([NETFIX, *args], capture_output=True, text=True, env=env)


def test_cli_unreachable_writes_every_report_and_exits_1(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(textwrap.dedent("""\
        vars: {profile: base, connect_timeout: 2}
        hosts:
          ghost: {ssh_host: 127.0.0.1, ssh_port: 1}
        """))
    out = {k: tmp_path / f"r.{k}" for k in ("xml", "prom", "md")}
    r = cli("drift", "-i", str(inv), "--json", "--junit", str(out["xml"]),
            "--prometheus", str(out["prom"]), "--markdown", str(out["md"]))
    assert r.returncode == 1, r.stderr
    assert "drift check failed on ghost" in r.stderr
    data = json.loads(r.stdout)
    assert data["hosts"][0]["status"] == "error" and data["exit_code"] == 1
    JUNIT_XSD.validate(out["xml"].read_text())
    assert ET.parse(out["xml"]).getroot().get("errors") == "1"
    assert 'netfix_check_success{host="ghost"} 0' in out["prom"].read_text()
    assert "could not be checked" in out["md"].read_text()


def test_cli_watch_count_and_usage_errors_exit_1(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text("vars: {profile: base}\nhosts:\n  ghost: {ssh_host: 127.0.0.1, ssh_port: 1}\n")
    r = cli("drift", "-i", str(inv), "--watch", "0.05", "--count", "2", "--json")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(json.loads(x)["exit_code"] == 1 for x in lines)
    assert "check 1/2" in r.stderr and "check 2/2" in r.stderr
    # usage errors must not look like drift (2) to a pipeline
    assert cli("drift", "--no-such-option").returncode == 1
    r = cli("drift", "--count", "2")
    assert r.returncode == 1 and "--count needs --watch" in r.stderr
    assert cli("drift", "--watch", "0").returncode == 1
