"""`netfix agent` running inside netns lab nodes (entered with nsenter, as the node's own
root, through the local transport): observe changes nothing while /metrics (scraped from
the host at the node's lab address, checked by promtool) reports the drift and the
doctor's findings; enforce puts a
hand edit back within one interval as a journaled transaction, holds a disruptive change,
turns the third set-back by a fake writer into a conflict and leaves that key alone while
still enforcing another; an interface added with `ip link add` and a kube-proxy start each
trigger a plan without waiting for the timer, and --allow-disruptive lets an MTU through.

The agent runs on the system python3 with this worktree and its venv's site-packages on
PYTHONPATH: the venv's interpreter lives under /root/.pyenv, and /root is private inside
a lab node. Every test leaves its node as it found it: values and files are compared with
the state before the test, after the agent's transactions are rolled back newest first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import skip_or_fail
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
    / "site-packages"
PORT = 9877
KEYS = ("net.ipv4.tcp_synack_retries", "net.core.somaxconn",
        "net.netfilter.nf_conntrack_udp_timeout")
ETC = ("/etc/sysctl.d", "/etc/netfix", "/etc/systemd/system", "/etc/udev/rules.d")

PROFILE = """\
description: the agent's lab profile
sysctl:
  net.ipv4.tcp_synack_retries: 3
  net.core.somaxconn: 8192
nic:
  interfaces:
    - match: {name: eth1}
      mtu: 1400
"""

LINK_PROFILE = """\
description: the agent's lab profile for interfaces that come later
conntrack:
  timeouts: {udp: 15}
nic:
  interfaces:
    - match: {name: "vag*"}
      txqueuelen: 3000
      mtu: 1400
"""


def system_python() -> str:
    """A python3 of the same minor version as the venv's, outside /root."""
    for exe in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(exe).exists():
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True).stdout.strip()
            if out == str(tuple(sys.version_info[:2])):
                return exe
    skip_or_fail(f"no system python3 {sys.version_info[:2]} to run the agent inside a "
                 "lab node", "the agent lab tests")
    raise AssertionError("unreachable")


class Agent:
    """`netfix agent` started inside a lab node; its JSON log read from a host file."""

    def __init__(self, lab, node: str, log: Path, *args: str):
        self.lab, self.node, self.log_path = lab, node, log
        code = "import sys; sys.argv[0] = 'netfix'; from netfix.cli import main; main()"
        self.address = lab.nodes[node].address
        argv = ["nsenter", "-t", str(lab.nodes[node].pid), "-n", "-m", "-p", "-u", "--",
                system_python(), "-c", code, "agent", "--node-name", node,
                "--listen", f"{self.address}:{PORT}", *args]
        self.out = open(log, "w")
        self.proc = subprocess.Popen(
            argv, stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd="/", env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                          "HOME": "/tmp", "LANG": "C.UTF-8",
                          "PYTHONPATH": f"{ROOT}:{SITE}"})

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"not a JSON log line: {line!r}\n"
                                     + self.log_path.read_text()) from None
        return out

    def wait_for(self, pred, timeout: float, what: str) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent exited ({self.proc.returncode}):\n"
                                     + self.log_path.read_text())
            found = [e for e in self.events() if pred(e)]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout}s:\n" + self.log_path.read_text())

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.address}:{PORT}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self) -> int:
        """SIGTERM to the agent itself (nsenter's child), as systemd stop sends it."""
        if self.proc.poll() is None:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            for pid in pids:
                os.kill(int(pid), signal.SIGTERM)
            if not pids:
                self.proc.terminate()
        try:
            rc = self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.out.close()
        return rc


@contextmanager
def running(lab, node: str, tmp_path: Path, *args: str):
    agent = Agent(lab, node, tmp_path / f"agent-{node}.log", *args)
    try:
        agent.wait_for(lambda e: e["event"] == "plan", 30, "first plan")
        yield agent
    finally:
        rc = agent.stop()
    assert rc == 0, agent.log_path.read_text()
    assert agent.events()[-1]["event"] == "stop", agent.log_path.read_text()


def state(lab, node: str) -> tuple:
    values = {k: lab.sysctl(node, k) for k in KEYS}
    links = lab.sh(node, "ip -o link show | sed 's/^[0-9]*: //; s/ link\\/.*//' | sort")
    return values, links, lab.files(node, ETC)


def history(lab, node: str) -> list[dict]:
    return json.loads(lab.netfix("history", "--limit", node, "--json").stdout)[node]


def roll_back_since(lab, node: str, known: set[str]) -> None:
    """Undo every transaction applied since `known` (the test changed values behind
    netfix's back, hence --force), newest first."""
    for tx in reversed(history(lab, node)):
        if tx["id"] not in known and tx["kind"] == "apply" and \
                tx["status"].startswith("applied"):
            lab.netfix("rollback", "--yes", "--limit", node, "--tx", tx["id"], "--force")


def metrics(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_observe_changes_nothing_while_metrics_report_the_drift(lab, tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        skip_or_fail("promtool is missing (scripts/setup.sh installs it)", "promtool")
    prof = tmp_path / "agent.yaml"
    prof.write_text(PROFILE)
    before, txs = state(lab, "node2"), history(lab, "node2")
    textfile = tmp_path / "textfile" / "netfix-agent.prom"
    with running(lab, "node2", tmp_path, "--profile", str(prof), "--interval", "1",
                 "--doctor-every", "600", "--textfile", str(textfile)) as agent:
        doctor = agent.wait_for(lambda e: e["event"] == "doctor", 15, "the doctor's run")
        assert doctor["reason"] == "", doctor  # the node could be checked
        status, text = agent.get("/metrics")
        assert status == 200
        assert agent.get("/healthz") == (200, "ok\n")
    plans = [e for e in agent.events() if e["event"] == "plan"]
    assert len(plans) >= 4 and all(e["mode"] == "observe" for e in plans)
    assert not [e for e in agent.events() if e["event"] == "enforce"]
    assert state(lab, "node2") == before and history(lab, "node2") == txs

    fams = metrics(text)
    drift = {s.labels["target"]: s.labels["kind"] for s in fams["netfix_drift"].samples}
    assert drift["net.ipv4.tcp_synack_retries"] == "live"
    assert drift["/etc/sysctl.d/90-netfix.conf"] == "persisted"
    items = [s.value for s in fams["netfix_drift_items"].samples if s.labels["host"] == "node2"]
    assert items == [len(drift)] and len(drift) >= 4
    pending = fams["netfix_agent_pending_changes"].samples[0].value
    held = {s.labels["reason"]: s.value for s in fams["netfix_agent_held_changes"].samples}
    assert pending >= 4 and held["disruptive"] == 1  # eth1 mtu
    assert {s.labels["severity"] for s in fams["netfix_doctor_findings"].samples} == \
        {"critical", "warning", "info"}
    for exposition in (text, textfile.read_text()):
        p = subprocess.run([promtool, "check", "metrics"], input=exposition,
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
    written = metrics(textfile.read_text())  # the last round's, written atomically
    assert written["netfix_agent_pending_changes"].samples[0].value == pending


def test_enforce_restores_holds_disruptive_and_stops_fighting(lab, tmp_path):
    prof = tmp_path / "agent.yaml"
    prof.write_text(PROFILE)
    node = "node1"
    before, known = state(lab, node), {t["id"] for t in history(lab, node)}
    writer_pid = tmp_path / "writer.pid"
    try:
        with running(lab, node, tmp_path, "--profile", str(prof), "--mode", "enforce",
                     "--interval", "2", "--doctor-every", "0") as agent:
            first = agent.wait_for(lambda e: e["event"] == "enforce", 10, "first enforce")
            assert first["result"] == "applied" and first["tx"], first
            assert "eth1 mtu" not in first["keys"]
            hold = agent.wait_for(lambda e: e["event"] == "hold", 5, "hold")
            assert hold["reason"] == "disruptive" and hold["keys"] == ["eth1 mtu"]
            assert lab.sysctl(node, "net.ipv4.tcp_synack_retries") == "3"

            # A hand edit is back within one interval, as a transaction in the journal.
            time.sleep(1)
            lab.sh(node, "sysctl -q -w net.core.somaxconn=128")
            t0 = time.time()
            fixed = agent.wait_for(lambda e: e["event"] == "enforce" and e["ts"] > t0
                                   and e["keys"] == ["net.core.somaxconn"], 4.0,
                                   "the hand edit put back")
            back = fixed["ts"] - t0
            assert lab.sysctl(node, "net.core.somaxconn") == "8192"
            assert back <= 2.0 + 1.0, back  # one interval, plus a plan's run time
            assert fixed["tx"] in {t["id"] for t in history(lab, node)}
            print(f"\nhand edit put back after {back:.2f}s (interval 2s)")

            # A fake writer sets another key back again and again: its third set-back is a
            # conflict.
            lab.sh(node, f"sh -c 'echo $$ > {writer_pid}; while :; do "
                   "sysctl -q -w net.ipv4.tcp_synack_retries=5; sleep 0.3; done' "
                   ">/dev/null 2>&1 &")
            conflict = agent.wait_for(lambda e: e["event"] == "conflict", 20, "conflict")
            assert conflict["keys"] == ["net.ipv4.tcp_synack_retries"]
            assert conflict["writer"] == "unknown"  # no writer model knows this loop
            lab.sh(node, f"kill $(cat {writer_pid})")
            writer_pid.unlink()
            enforced = [e for e in agent.events() if e["event"] == "enforce"
                        and "net.ipv4.tcp_synack_retries" in e["keys"]]
            # Applied at start and after the writer's first and second set-backs only.
            assert len(enforced) == 3, enforced

            # Left alone now, while another key is still enforced.
            lab.sh(node, "sysctl -q -w net.core.somaxconn=100")
            t1 = time.time()
            agent.wait_for(lambda e: e["event"] == "enforce" and e["ts"] > t1
                           and e["keys"] == ["net.core.somaxconn"], 5, "somaxconn put back")
            assert lab.sysctl(node, "net.core.somaxconn") == "8192"
            time.sleep(2.5)
            assert lab.sysctl(node, "net.ipv4.tcp_synack_retries") == "5"
            assert lab.sh(node, "cat /sys/class/net/eth1/mtu").strip() == "1500"
            fams = metrics(agent.get("/metrics")[1])
            [c] = fams["netfix_agent_conflict"].samples
            assert (c.labels["target"], c.labels["writer"]) == \
                ("net.ipv4.tcp_synack_retries", "unknown")
            applied = [s for s in fams["netfix_agent_enforce_actions"].samples
                       if s.labels.get("result") == "applied"]
            assert applied[0].value == len([e for e in agent.events()
                                            if e["event"] == "enforce"])
    finally:
        if writer_pid.exists():
            lab.sh(node, f"kill $(cat {writer_pid})", check=False)
        roll_back_since(lab, node, known)
    assert state(lab, node) == before


def test_new_interface_and_kube_proxy_start_trigger_a_plan_at_once(lab, tmp_path):
    prof = tmp_path / "link.yaml"
    prof.write_text(LINK_PROFILE)
    node = "node3"
    before, known = state(lab, node), {t["id"] for t in history(lab, node)}
    kp = tmp_path / "kube-proxy"  # comm is the script's name, as for the real binary
    kp.write_text("#!/bin/sh\n# a kube-proxy stand-in: writes a conntrack sysctl as it starts\n"
                  f"echo $$ > {tmp_path}/kp.pid\n"
                  "sysctl -q -w net.netfilter.nf_conntrack_udp_timeout=30\n"
                  "while :; do sleep 1; done\n")
    kp.chmod(0o755)
    try:
        # Converged first, so the agent's start has nothing to apply.
        lab.netfix("apply", "--yes", "--profile", str(prof), "--limit", node)
        with running(lab, node, tmp_path, "--profile", str(prof), "--mode", "enforce",
                     "--interval", "60", "--doctor-every", "0", "--allow-disruptive") as agent:
            assert agent.events()[1]["pending"] == 0
            t0 = time.time()
            lab.sh(node, "ip link add vag0 type veth peer name vag1")
            plan = agent.wait_for(lambda e: e["event"] == "plan" and "link" in e["reason"]
                                  and "vag0 txqueuelen" in e["keys"], 5, "a link plan")
            enforce = agent.wait_for(lambda e: e["event"] == "enforce", 5, "enforce")
            assert {"vag0 txqueuelen", "vag1 txqueuelen", "vag0 mtu"} <= set(enforce["keys"])
            assert enforce["result"] == "applied"
            link = json.loads(lab.sh(node, "ip -j link show vag0"))[0]
            assert (link["txqlen"], link["mtu"]) == (3000, 1400)  # mtu: --allow-disruptive
            reaction, applied = plan["ts"] - t0, enforce["ts"] - t0
            print(f"\nip link add -> plan {reaction:.2f}s, -> enforce logged {applied:.2f}s "
                  "(timer 60s)")
            assert reaction < 3.0

            t1 = time.time()
            lab.sh(node, f"{kp} >/dev/null 2>&1 &")
            plan = agent.wait_for(lambda e: e["event"] == "plan" and "kube-proxy" in
                                  e["reason"], 5, "a kube-proxy plan")
            print(f"kube-proxy start -> plan {plan['ts'] - t1:.2f}s (polled each second)")
            assert "net.netfilter.nf_conntrack_udp_timeout" in plan["keys"]
            # Applied an interval after the link's transaction at the earliest.
            defer = agent.wait_for(lambda e: e["event"] == "defer", 2, "defer")
            assert "net.netfilter.nf_conntrack_udp_timeout" in defer["keys"]
    finally:
        if (tmp_path / "kp.pid").exists():
            lab.sh(node, f"kill $(cat {tmp_path}/kp.pid)", check=False)
        roll_back_since(lab, node, known)  # while vag0 is there: its steps are undone too
        lab.sh(node, "ip link del vag0 2>/dev/null || true")
    assert state(lab, node) == before
