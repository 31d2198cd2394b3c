"""The agent's decisions with a fake planner and clock (no node): what it enforces, what it
leaves alone and why, the once-per-interval limit, the no-fights bookkeeping, the metrics
text (parsed by prometheus_client, checked by promtool), /healthz; and the shipped alert
rules and Grafana dashboard, checked by promtool."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from netfix import agent as ag
from netfix import drift, engine
from netfix.cli import main
from netfix.plan import Change, HostPlan, Op, Writer
from netfix.status import HostStatus

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "netfix-fleet.json"


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def change(target: str, *flags: str, knob: str = "sysctl", writers=()) -> Change:
    c = Change(knob, target, "1", "2", ops=[Op("value", f"/proc/sys/{target}", "1", "2")],
               writers=list(writers))
    for f in flags:
        c.flag(f, "", f"{target} is {f}")
    return c


class Node:
    """A fake node: the plan it returns next, and the applies it received."""

    def __init__(self, *changes: Change, fixed_by_apply: bool = False):
        self.changes = list(changes)
        self.applied: list[list[str]] = []
        self.result = HostStatus.APPLIED
        self.fail_plan: str | None = None
        self.fixed_by_apply = fixed_by_apply  # else every change stays pending
        self.fixed: set[str] = set()  # targets an apply brought in line
        self.fight: set[str] = set()  # targets a fake writer sets back after each apply

    def plan(self) -> ag.Snapshot:
        if self.fail_plan:
            raise engine.NetfixError(self.fail_plan)
        hp = HostPlan("n1", "p", [c for c in self.changes if c.target not in self.fixed])
        return ag.Snapshot(hp, drift.classify(hp, []), (300, 1000))

    def apply(self, hp: HostPlan) -> engine.HostResult:
        self.applied.append([c.target for c in hp.changes])
        ok = self.result is HostStatus.APPLIED
        if ok and self.fixed_by_apply:
            self.fixed |= {c.target for c in hp.changes} - self.fight
        return engine.HostResult("n1", self.result, ok, "x", "tx-1" if ok else None)


def make(node: Node, clock: Clock, **opts) -> tuple[ag.Agent, io.StringIO]:
    out = io.StringIO()
    options = ag.Options("p", **{"mode": ag.Mode.ENFORCE, "interval": 60.0, **opts})
    return ag.Agent("n1", options, node.plan, node.apply, clock, out), out


def events(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_observe_never_applies_and_logs_the_plan():
    node, clock = Node(change("a"), change("b")), Clock()
    agent, out = make(node, clock, mode=ag.Mode.OBSERVE)
    for _ in range(3):
        agent.cycle()
        clock.t += 60
    assert node.applied == []
    logged = events(out)
    assert [e["event"] for e in logged] == ["plan"] * 3
    assert logged[0]["keys"] == ["a", "b"] and logged[0]["host"] == "n1"
    assert set(logged[0]) >= {"ts", "event", "host", "keys", "tx", "reason", "started"}
    # a plan says when its round began (a change made after that is the next round's)
    assert [e["started"] for e in logged] == [1000.0 + 60 * i for i in range(3)], logged


def test_enforce_leaves_disruptive_error_and_not_settable_changes_alone():
    node = Node(change("a"), change("mtu", "disruptive"), change("bad", "error"),
                change("ro", "not-settable"))
    agent, out = make(node, Clock())
    agent.cycle()
    assert node.applied == [["a"]]
    holds = {e["reason"]: e["keys"] for e in events(out) if e["event"] == "hold"}
    assert holds == {"disruptive": ["mtu"], "error": ["bad"], "not-settable": ["ro"]}
    enforce = next(e for e in events(out) if e["event"] == "enforce")
    assert enforce["tx"] == "tx-1" and enforce["result"] == "applied" and enforce["ok"]


def test_allow_disruptive_applies_them():
    node = Node(change("a"), change("mtu", "disruptive"))
    agent, _ = make(node, Clock(), allow_disruptive=True)
    agent.cycle()
    assert node.applied == [["a", "mtu"]]


def test_at_most_one_apply_per_interval():
    node, clock = Node(change("a")), Clock()
    agent, out = make(node, clock)
    assert agent.cycle() is None
    clock.t += 5  # an event wakes the agent before the interval is over
    assert agent.cycle("link") == 1060.0  # deferred to one interval after the last apply
    assert node.applied == [["a"]]
    assert events(out)[-1]["event"] == "defer"
    clock.t = 1060.0
    agent.cycle()
    assert node.applied == [["a"], ["a"]]


def test_third_setback_within_the_window_is_a_conflict_naming_the_writer():
    kp = Writer("kube-proxy", "start", "131072", source="pid 42")
    ct = change("net.netfilter.nf_conntrack_max", knob="conntrack", writers=[kp])
    other = change("net.core.somaxconn")
    node, clock = Node(ct, other, fixed_by_apply=True), Clock()
    node.fight = {ct.target}
    agent, out = make(node, clock, interval=2.0)
    for _ in range(3):  # applied, then found set back: 1st, 2nd time (applied again)
        agent.cycle()
        clock.t += 2
    assert node.applied == [[ct.target, other.target], [ct.target], [ct.target]]
    assert not agent.conflicts.found
    agent.cycle()  # the third set-back
    conflict = [e for e in events(out) if e["event"] == "conflict"]
    assert len(conflict) == 1 and conflict[0]["writer"] == "kube-proxy"
    assert conflict[0]["keys"] == ["net.netfilter.nf_conntrack_max"]
    assert len(node.applied) == 3  # the key is left alone
    node.fixed.discard(other.target)  # a hand edit of another key: still enforced
    clock.t += 2
    agent.cycle()
    assert node.applied[-1] == [other.target]
    text = agent.metrics()
    assert ('netfix_agent_conflict{host="n1",knob="conntrack",target='
            '"net.netfilter.nf_conntrack_max",writer="kube-proxy"} 1') in text
    assert 'netfix_agent_held_changes{host="n1",reason="conflict"} 1' in text


def test_setbacks_outside_the_window_do_not_add_up():
    clock = Clock()
    c = ag.Conflicts(3, 1800, clock)
    ch = change("k")
    for _ in range(5):  # one set-back every 1000 s: never 3 within 1800 s
        c.wrote([("sysctl", "k")])
        clock.t += 1000
        assert c.seen(ch) is None
    c.wrote([("sysctl", "k")])
    clock.t += 1  # three within the window now
    found = c.seen(ch)
    assert found and found.writer == "unknown" and found.setbacks == 3
    assert c.blocked(("sysctl", "k"))


def test_a_key_not_applied_by_the_agent_is_never_a_setback():
    clock = Clock()
    c = ag.Conflicts(1, 1800, clock)
    assert c.seen(change("k")) is None  # pending from the start: plain drift
    c.wrote([("sysctl", "k")])
    assert c.seen(change("other")) is None
    assert c.seen(change("k")) is not None


def test_failed_apply_is_counted_and_not_taken_as_written():
    node = Node(change("a"))
    node.result = HostStatus.STALE
    agent, _ = make(node, Clock())
    agent.cycle()
    assert agent.conflicts.applied == set()
    fams = parse(agent.metrics())
    assert sample(fams, "netfix_agent_enforce_actions", result="stale") == 1
    assert sample(fams, "netfix_agent_enforce_ok") == 0


def test_plan_error_is_logged_counted_and_makes_the_agent_unhealthy():
    node, clock = Node(change("a")), Clock()
    agent, out = make(node, clock, interval=10.0)
    assert not agent.healthy()  # nothing planned yet
    agent.cycle()
    assert agent.healthy()
    node.fail_plan = "fact script failed (exit 1)"
    for _ in range(4):
        clock.t += 10
        agent.cycle()
    assert events(out)[-1]["event"] == "error"
    assert events(out)[-1]["reason"] == "fact script failed (exit 1)"
    assert not agent.healthy()  # last success 40 s ago: more than 3 intervals
    fams = parse(agent.metrics())
    assert sample(fams, "netfix_agent_errors") == 4
    assert sample(fams, "netfix_agent_healthy") == 0


def parse(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict, name: str, **labels: str) -> float:
    found = [s.value for s in fams[name].samples
             if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, fams[name].samples)
    return found[0]


def test_metrics_text_has_drift_by_kind_conntrack_and_timestamps():
    node, clock = Node(change("a"), change("mtu", "disruptive")), Clock()
    agent, _ = make(node, clock)
    agent.cycle()
    fams = parse(agent.metrics())
    assert sample(fams, "netfix_drift_items", host="n1") == 2  # report.prometheus's family
    assert sample(fams, "netfix_agent_drift_kind_items", kind="live") == 2
    assert sample(fams, "netfix_agent_drift_kind_items", kind="persisted") == 0
    assert sample(fams, "netfix_agent_pending_changes") == 2
    assert sample(fams, "netfix_agent_held_changes", reason="disruptive") == 1
    assert sample(fams, "netfix_conntrack_entries") == 300
    assert sample(fams, "netfix_conntrack_max") == 1000
    assert sample(fams, "netfix_agent_last_plan_timestamp_seconds") == 1000.0
    assert sample(fams, "netfix_agent_last_apply_timestamp_seconds") == 1000.0
    assert sample(fams, "netfix_agent_enforce_actions", result="applied") == 1
    assert fams["netfix_agent_enforce_actions"].type == "counter"
    assert sample(fams, "netfix_agent_wakeups", event="timer") == 1
    assert sample(fams, "netfix_agent_info", mode="enforce", profile="p") == 1


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and promtool is missing (scripts/setup.sh installs it)")
        pytest.skip("promtool not installed (scripts/setup.sh installs it)")
    return found


def test_metrics_pass_promtool_check_metrics():
    node = Node(change("a", writers=[Writer("kube-proxy", "start")]), change("b", "error"))
    agent, _ = make(node, Clock())
    agent.cycle()
    agent.cycle()  # deferred: the counters and gauges of a second round
    p = subprocess.run([promtool(), "check", "metrics"], input=agent.metrics(),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_http_metrics_and_healthz():
    node, clock = Node(change("a")), Clock()
    agent, _ = make(node, clock, mode=ag.Mode.OBSERVE, interval=10.0)
    server = ag.serve(agent, "127.0.0.1:0")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(base + path, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        assert get("/healthz")[0] == 503  # no plan yet
        agent.cycle()
        assert get("/healthz") == (200, "ok\n")
        status, text = get("/metrics")
        assert status == 200 and sample(parse(text), "netfix_agent_pending_changes") == 1
        clock.t += 31
        assert get("/healthz")[0] == 503
        assert get("/nope")[0] == 404
    finally:
        server.shutdown()


def test_kube_proxy_pids_are_read_from_proc(tmp_path):
    for pid, comm in ((1, "systemd"), (42, "kube-proxy"), (43, "kube-proxyx")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    (tmp_path / "self").mkdir()
    seen = ag.process_pids("kube-proxy", tmp_path)
    assert seen == {1: False, 42: True, 43: False}
    (tmp_path / "42" / "comm").write_text("reused?\n")  # known pids are not read again
    assert ag.process_pids("kube-proxy", tmp_path, seen)[42] is True


def test_wake_collects_reasons_once():
    wake = ag.Wake()
    wake.set("kube-proxy")
    wake.set("link")
    wake.set("link")
    assert wake.wait(5, settle=0) == ["kube-proxy", "link"]
    assert wake.wait(0.01) == []  # consumed: the next wait is the timer's
    threading.Timer(0.05, wake.set, ("link",)).start()
    assert wake.wait(5, settle=0) == ["link"]


def test_cli_needs_a_profile_and_a_good_listen_address(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["agent"])
    assert r.exit_code == 2 and "--profile NAME is required" in r.output
    r = runner.invoke(main, ["agent", "--profile", "base", "--listen", "nowhere"])
    assert r.exit_code == 2 and "expected ADDR:PORT" in r.output
    r = runner.invoke(main, ["agent", "--profile", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 1 and "Traceback" not in r.output and "missing.yaml" in r.output


@pytest.mark.parametrize("option, value", [("--interval", "0.5"), ("--conflict-limit", "0"),
                                           ("--conflict-window", "0"),
                                           ("--doctor-every", "-1"), ("--mode", "fix")])
def test_cli_refuses_out_of_range_options_before_starting(option, value):
    r = CliRunner().invoke(main, ["agent", "--profile", "base", option, value])
    assert r.exit_code == 2 and option in r.output and "Traceback" not in r.output, r.output


# ------------------------------------------------------------- alert rules and dashboard


def test_alert_rules_pass_promtool_check_and_unit_tests():
    tool = promtool()
    p = subprocess.run([tool, "check", "rules", str(PROM / "netfix-alerts.yml")],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "SUCCESS: 8 rules found" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([tool, "test", "rules", "netfix-alerts.test.yml"], cwd=PROM,
                       capture_output=True, text=True)
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr


def test_alerts_and_dashboard_only_use_metrics_netfix_exports():
    from netfix import report
    from netfix.doctor.report import METRICS as DOCTOR

    names = set(re.findall(r"\b(netfix_[a-z_]+)", (PROM / "netfix-alerts.yml").read_text()))
    dash = set(re.findall(r"\b(netfix_[a-z_]+)", DASHBOARD.read_text()))
    exported = {*ag.AGENT_METRICS, *report.METRICS, *DOCTOR}
    assert dash - exported == set()
    assert names - exported == set()


def test_dashboard_is_valid_json_and_its_queries_parse(tmp_path):
    tool = promtool()
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "netfix-fleet" and dash["panels"]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert any("netfix_conntrack_entries" in e for e in exprs)
    assert any("netfix_agent_enforce_actions_total" in e for e in exprs)
    assert any("netfix_drift_items" in e for e in exprs)
    # Grafana's variables are not PromQL: put in what Grafana would.
    rules = [{"record": f"netfix:dashboard_panel_{n}",
              "expr": e.replace("$__rate_interval", "5m").replace("$host", ".*")}
             for n, e in enumerate(exprs)]
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    p = subprocess.run([tool, "check", "rules", str(f)], capture_output=True, text=True)
    assert p.returncode == 0 and f"SUCCESS: {len(rules)} rules found" in p.stdout, \
        p.stdout + p.stderr


def test_doctor_findings_join_the_metrics_and_the_log():
    from netfix.doctor import Finding, Severity
    from netfix.doctor.run import HostDoctor

    node = Node(change("a"))
    agent, out = make(node, Clock(), mode=ag.Mode.OBSERVE)
    agent.cycle()
    hd = HostDoctor("n1", [Finding("conntrack-full", Severity.CRITICAL, "conntrack",
                                   "table full", "drops")], checked_at=1000.0)
    agent.doctor_done(hd)
    fams = parse(agent.metrics())
    assert sample(fams, "netfix_doctor_findings", host="n1", severity="critical") == 1
    assert sample(fams, "netfix_agent_pending_changes") == 1  # both in one exposition
    logged = events(out)[-1]
    assert logged["event"] == "doctor" and logged["findings"] == {"critical": 1}
    assert logged["keys"] == ["conntrack-full"]
