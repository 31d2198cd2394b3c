"""The on-node loop: plan this node against its profile every interval (and at once when
an event may have undone something), report in `observe` mode, apply in `enforce` mode.

Enforcement is an ordinary journaled transaction (engine.apply on the local transport:
`netfix history` shows it, `netfix rollback` undoes it), at most one per interval. It never
makes a disruptive change (rings, channels, MTU) unless allowed, never a change with an
error or not-settable reason, and never a key it lost a fight over (Conflicts). Every
decision is one JSON log line on stdout; /metrics, /healthz and an optional textfile say
the same to Prometheus.

The apply takes a HostPlan whose changes are filtered to what may be enforced. That is
sound without any engine option: a fresh (not saved) plan is applied as it stands, and the
stale check is per step on the node (each op's `old` is compared under the node lock), so
a step left out is simply not compared and not run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from netfix import __version__, drift, engine, journal, report
from netfix.facts import Needs
from netfix.inventory import Host
from netfix.plan import DISRUPTIVE, NOT_SETTABLE, Change, Code, HostPlan, Plan, When
from netfix.status import GOOD, HostStatus
from netfix.util import atomic_write

COUNT, MAX = "net.netfilter.nf_conntrack_count", "net.netfilter.nf_conntrack_max"
Key = tuple[str, str]  # (knob, target): what the agent enforces and counts set-backs of


class Mode(StrEnum):
    OBSERVE = "observe"
    ENFORCE = "enforce"


@dataclass(frozen=True)
class Options:
    profile: str
    mode: Mode = Mode.OBSERVE
    interval: float = 60.0
    allow_disruptive: bool = False
    conflict_limit: int = 3
    conflict_window: float = 1800.0
    textfile: Path | None = None
    doctor_every: float = 300.0  # 0: never; each run costs ~0.15 s of CPU (measured)


# ----------------------------------------------------------------------- no fights


@dataclass
class Conflict:
    knob: str
    target: str
    writer: str  # from Change.writers, else "unknown"
    since: float
    setbacks: int


class Conflicts:
    """Set-back bookkeeping. A key the agent applied that shows up pending again was set
    back by someone else; `limit` set-backs within `window` seconds and the agent stops
    enforcing that key (for as long as it runs: a fight is for a person to settle)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]):
        self.limit, self.window, self.clock = limit, window, clock
        self.applied: set[Key] = set()  # applied by us, not yet seen set back
        self.setbacks: dict[Key, deque[float]] = {}
        self.found: dict[Key, Conflict] = {}

    def blocked(self, key: Key) -> bool:
        return key in self.found

    def wrote(self, keys: list[Key]) -> None:
        self.applied.update(keys)

    def seen(self, change: Change) -> Conflict | None:
        """Call with every pending change of a new plan: returns the conflict it starts."""
        key = (change.knob, change.target)
        if key not in self.applied or key in self.found:
            return None
        self.applied.discard(key)
        now = self.clock()
        times = self.setbacks.setdefault(key, deque())
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            return None
        # The boot applier writes the key only at boot: never the one setting it back now.
        writer = ", ".join(w.name for w in change.writers if w.when != When.BOOT) or "unknown"
        self.found[key] = Conflict(change.knob, change.target, writer, now, len(times))
        return self.found[key]


# ----------------------------------------------------------------------- one cycle


@dataclass
class Snapshot:
    """What one plan of this node found."""

    plan: HostPlan
    drift: drift.HostDrift
    conntrack: tuple[int, int] | None = None  # (entries, max) as the plan read them


Planner = Callable[[], Snapshot]
Applier = Callable[[HostPlan], engine.HostResult]


def local_host(name: str | None = None) -> Host:
    """This machine through the local transport, named as the fleet knows it (the
    DaemonSet passes the node name in NODE_NAME)."""
    return Host(name or os.environ.get("NODE_NAME") or socket.gethostname(), [],
                {"connection": "local"})


def planner(host: Host, profile_name: str) -> Planner:
    """Plan, journal and conntrack fill in one local round trip; drift classified as
    `netfix drift` does."""
    profile = engine.Profiles().get(profile_name)  # a bad profile fails at start
    extra = Needs(sysctls={COUNT, MAX})
    extra.update(journal.needs(in_force=True))  # what drift.classify reads, as drift does

    def plan() -> Snapshot:
        hp, facts = engine.diff_host(host, profile, extra)
        hd = drift.classify(hp, journal.from_facts(facts))
        count, cmax = facts.sysctl(COUNT).value, facts.sysctl(MAX).value
        ct = (int(count), int(cmax)) if count and cmax and count.isdigit() \
            and cmax.isdigit() else None
        return Snapshot(hp, hd, ct)

    return plan


def applier(host: Host, allow_disruptive: bool) -> Applier:
    def apply(hp: HostPlan) -> engine.HostResult:
        return engine.apply([host], Plan([hp]),
                            engine.ApplyOptions(allow_disruptive=allow_disruptive))[0]
    return apply


def why_not(change: Change, options: Options, conflicts: Conflicts) -> str | None:
    """Why the agent leaves a pending change alone (None: it enforces it)."""
    if any(code in change.flags for code in (Code.ERROR, NOT_SETTABLE)):
        return "not-settable" if NOT_SETTABLE in change.flags else "error"
    if DISRUPTIVE in change.flags and not options.allow_disruptive:
        return "disruptive"
    if conflicts.blocked((change.knob, change.target)):
        return "conflict"
    return None


@dataclass
class State:
    """What /metrics and /healthz report; changed only under Agent.lock."""

    snapshot: Snapshot | None = None
    last_plan: float = 0.0
    last_success: float = 0.0
    last_apply: float = 0.0
    last_apply_ok: bool = False
    actions: dict[str, int] = field(default_factory=dict)  # enforce results -> count
    errors: int = 0
    events: dict[str, int] = field(default_factory=dict)  # wake-up reasons -> count
    held: dict[str, int] = field(default_factory=dict)  # changes left alone, by why


class Agent:
    def __init__(self, host: str, options: Options, plan: Planner, apply: Applier,
                 clock: Callable[[], float] = time.time, out: IO[str] | None = None):
        self.host, self.options, self.plan, self.apply = host, options, plan, apply
        self.clock, self.out = clock, out or sys.stdout
        self.conflicts = Conflicts(options.conflict_limit, options.conflict_window, clock)
        self.state = State()
        self.lock = threading.Lock()
        self.doctor_text = ""  # the last doctor run's families (netfix/doctor/report.py)
        self._log_lock = threading.Lock()  # the doctor's thread logs too: whole lines only

    def log(self, event: str, keys: list[str] | None = None, tx: str | None = None,
            reason: str = "", **extra: Any) -> None:
        line = {"ts": round(self.clock(), 3), "event": event, "host": self.host,
                "keys": keys or [], "tx": tx, "reason": reason, **extra}
        with self._log_lock:
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()

    def cycle(self, why: str = "timer") -> float | None:
        """One plan (and, enforcing, at most one apply). Returns when the next apply is
        allowed if changes wait for the once-per-interval limit, else None."""
        now = self.clock()
        with self.lock:
            self.state.events[why] = self.state.events.get(why, 0) + 1
        try:
            snap = self.plan()
        except Exception as e:  # the loop outlives any one bad round
            return self._failed(now, why, engine.host_error(e))
        if snap.plan.error:
            return self._failed(now, why, snap.plan.error)
        pending = snap.plan.pending
        self.log("plan", [c.target for c in pending], reason=why, started=round(now, 3),
                 pending=len(pending), drift=len(snap.drift.items), mode=self.options.mode)
        for c in pending:
            found = self.conflicts.seen(c)
            if found:
                self.log("conflict", [c.target], reason=f"set back {found.setbacks} "
                         f"times within {self.options.conflict_window:g}s: no longer enforced",
                         writer=found.writer)
        held: dict[str, list[str]] = {}
        chosen = []
        for c in pending:
            why_held = why_not(c, self.options, self.conflicts)
            if why_held:
                held.setdefault(why_held, []).append(c.target)
            else:
                chosen.append(c)
        for reason, keys in held.items():
            self.log("hold", keys, reason=reason)
        with self.lock:
            self.state.snapshot, self.state.last_plan = snap, now
            self.state.last_success = now
            self.state.held = {k: len(v) for k, v in held.items()}
        if self.options.mode is Mode.OBSERVE or not chosen:
            return None
        allowed = self.state.last_apply + self.options.interval
        if self.state.last_apply and now < allowed:
            self.log("defer", [c.target for c in chosen],
                     reason="at most one apply per interval")
            return allowed
        self._enforce(snap.plan, chosen, now)
        return None

    def _failed(self, now: float, why: str, message: str) -> None:
        with self.lock:
            self.state.errors += 1
            self.state.last_plan = now
        self.log("error", reason=message, wake=why)
        return None

    def _enforce(self, hp: HostPlan, chosen: list[Change], now: float) -> None:
        keys = [(c.knob, c.target) for c in chosen]
        try:
            res = self.apply(replace(hp, changes=chosen))
        except Exception as e:
            res = engine.HostResult(self.host, HostStatus.ERROR, False, engine.host_error(e))
        result = str(res.status)
        with self.lock:
            self.state.actions[result] = self.state.actions.get(result, 0) + 1
            self.state.last_apply, self.state.last_apply_ok = now, res.status in GOOD
        if res.status is HostStatus.APPLIED:
            self.conflicts.wrote(keys)
        self.log("enforce", [c.target for c in chosen], tx=res.tx, reason=res.message,
                 result=result, ok=res.status in GOOD)

    def doctor_done(self, hd: Any) -> None:  # a netfix.doctor.run.HostDoctor
        """Keep a doctor run's metrics for /metrics, and log what it found."""
        from netfix.doctor import report as doctor_report
        from netfix.doctor import run as doctor

        text = doctor_report.prometheus(doctor.DoctorReport([hd]))
        with self.lock:
            self.doctor_text = text
        by = {}
        for f in hd.findings:
            by[str(f.severity)] = by.get(str(f.severity), 0) + 1
        self.log("doctor", [f.code for f in hd.findings], reason=hd.error or "",
                 findings=by, seconds=round(hd.duration, 3))

    # ------------------------------------------------------------------ reporting

    def healthy(self) -> bool:
        with self.lock:
            return fresh(self.state, self.options, self.clock())

    def metrics(self) -> str:
        with self.lock:
            s = replace(self.state, actions=dict(self.state.actions),
                        events=dict(self.state.events), held=dict(self.state.held))
            conflicts = list(self.conflicts.found.values())
            doctor_text = self.doctor_text
        return metrics_text(self.host, self.options, s, conflicts, self.clock()) + doctor_text


AGENT_METRICS: dict[str, tuple[str, str]] = {
    "netfix_agent_info": ("gauge", "1, with the agent's mode, profile and netfix version."),
    "netfix_agent_healthy": ("gauge", "1 if the agent's last plan succeeded within three "
                             "intervals (what /healthz answers), else 0."),
    "netfix_agent_interval_seconds": ("gauge", "The agent's planning interval."),
    "netfix_agent_drift_kind_items": ("gauge", "Drift items of each kind in the last plan."),
    "netfix_agent_pending_changes": ("gauge", "Changes the last plan would make."),
    "netfix_agent_held_changes": ("gauge", "Pending changes the agent leaves alone, by why "
                                  "(disruptive, conflict, not-settable, error)."),
    "netfix_agent_last_plan_timestamp_seconds": ("gauge", "Unix time of the last plan, "
                                                 "successful or not."),
    "netfix_agent_last_success_timestamp_seconds": ("gauge", "Unix time of the last "
                                                    "successful plan."),
    "netfix_agent_last_apply_timestamp_seconds": ("gauge", "Unix time of the last enforce "
                                                  "transaction (absent before the first)."),
    "netfix_agent_conflict": ("gauge", "1 for each key the agent stopped enforcing because "
                              "another writer kept setting it back."),
    "netfix_agent_conflicts": ("gauge", "Keys in conflict (no longer enforced)."),
    "netfix_agent_enforce_ok": ("gauge", "1 if the agent's last enforce transaction "
                                "succeeded, 0 if not (absent before the first)."),
    "netfix_agent_enforce_actions_total": ("counter", "Enforce transactions, by result "
                                           "(applied, stale, failed-restored, error, ...)."),
    "netfix_agent_errors_total": ("counter", "Plans that failed."),
    "netfix_agent_wakeups_total": ("counter", "Plans, by what started them (timer, link, "
                                   "kube-proxy, start)."),
    "netfix_conntrack_entries": ("gauge", "nf_conntrack_count as the last plan read it."),
    "netfix_conntrack_max": ("gauge", "nf_conntrack_max as the last plan read it."),
}


def fresh(s: State, options: Options, now: float) -> bool:
    """Healthy: the last plan succeeded within three intervals."""
    return bool(s.last_success) and now - s.last_success <= 3 * options.interval


def metrics_text(host: str, options: Options, s: State, conflicts: list[Conflict],
                 now: float) -> str:
    """Prometheus text: the drift families of `netfix drift` (report.prometheus) and the
    agent's own."""
    h = {"host": host}
    rows: dict[str, list[str]] = {name: [] for name in AGENT_METRICS}

    def put(name: str, value: float | int | str, **labels: str) -> None:
        rows[name].append(report.sample(name, {**h, **labels}, value))

    put("netfix_agent_info", 1, mode=str(options.mode), profile=options.profile,
        version=__version__)
    put("netfix_agent_healthy", int(fresh(s, options, now)))
    put("netfix_agent_interval_seconds", f"{options.interval:g}")
    put("netfix_agent_errors_total", s.errors)
    for result, n in sorted(s.actions.items()):
        put("netfix_agent_enforce_actions_total", n, result=result)
    for event, n in sorted(s.events.items()):
        put("netfix_agent_wakeups_total", n, event=event)
    if s.last_plan:
        put("netfix_agent_last_plan_timestamp_seconds", f"{s.last_plan:.3f}")
    if s.last_success:
        put("netfix_agent_last_success_timestamp_seconds", f"{s.last_success:.3f}")
    if s.last_apply:
        put("netfix_agent_last_apply_timestamp_seconds", f"{s.last_apply:.3f}")
        put("netfix_agent_enforce_ok", int(s.last_apply_ok))
    for c in conflicts:
        put("netfix_agent_conflict", 1, knob=c.knob, target=c.target, writer=c.writer)
    put("netfix_agent_conflicts", len(conflicts))
    drift_text = ""
    if s.snapshot is not None:
        hd = s.snapshot.drift
        kinds = {k: 0 for k in drift.KINDS}
        for i in hd.items:
            kinds[i.kind] = kinds.get(i.kind, 0) + 1
        for kind, n in kinds.items():
            put("netfix_agent_drift_kind_items", n, kind=str(kind))
        put("netfix_agent_pending_changes", len(s.snapshot.plan.pending))
        for why in ("disruptive", "conflict", "not-settable", "error"):
            put("netfix_agent_held_changes", s.held.get(why, 0), reason=why)
        if s.snapshot.conntrack:
            put("netfix_conntrack_entries", s.snapshot.conntrack[0])
            put("netfix_conntrack_max", s.snapshot.conntrack[1])
        drift_text = report.prometheus(drift.DriftReport([hd]))
    out = []
    for name, (kind, text) in AGENT_METRICS.items():
        if rows[name]:
            out += report.family(name, kind, text, rows[name])
    return drift_text + "\n".join(out) + "\n"


# ----------------------------------------------------------------------- events


class Wake:
    """What wakes the loop before its timer: a reason and an event, set from watcher
    threads or a signal handler."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reasons: list[str] = []
        self.stop = False
        self._lock = threading.Lock()

    def set(self, reason: str) -> None:
        with self._lock:
            if reason not in self.reasons:
                self.reasons.append(reason)
        self.event.set()

    def wait(self, timeout: float, settle: float = 0.2) -> list[str]:
        """Reasons that woke us ([] on timeout). Waits `settle` more after a wake-up so a
        burst of link events (a driver re-registering several devices) is one plan."""
        if self.event.wait(max(0.0, timeout)) and not self.stop:
            time.sleep(settle)
        with self._lock:
            reasons, self.reasons = self.reasons, []
            self.event.clear()
        return reasons


def watch_links(wake: Wake, stopped: threading.Event) -> subprocess.Popen | None:
    """`ip monitor link`: a new interface or a driver re-registration (its devices go and
    come back) wakes the loop. "Deleted" lines do not: nothing is left to tune."""
    try:
        proc = subprocess.Popen(["ip", "monitor", "link"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return None

    def run() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if stopped.is_set():
                return
            if line.strip() and not line.startswith("Deleted"):
                wake.set("link")

    threading.Thread(target=run, name="netfix-agent-links", daemon=True).start()
    return proc


def process_pids(name: str, proc: Path = Path("/proc"), known: dict[int, bool] | None = None
                 ) -> dict[int, bool]:
    """pid -> is `name`, for every process; `known` pids keep their answer (pids are
    not reused while the process lives), so a poll reads /proc/PID/comm of new pids only."""
    known = known or {}
    out: dict[int, bool] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in known:
            out[pid] = known[pid]
            continue
        try:
            out[pid] = (proc / entry / "comm").read_text().strip() == name
        except OSError:  # it exited meanwhile
            continue
    return out


def watch_kube_proxy(wake: Wake, stopped: threading.Event, every: float = 1.0) -> None:
    """A new kube-proxy pid (a start or restart) wakes the loop: kube-proxy writes the
    conntrack sysctls as it starts, so planning at once catches what it set back."""
    def run() -> None:
        seen = process_pids("kube-proxy")
        while not stopped.wait(every):
            now = process_pids("kube-proxy", known=seen)
            if any(is_kp and pid not in seen for pid, is_kp in now.items()):
                wake.set("kube-proxy")
            seen = now

    threading.Thread(target=run, name="netfix-agent-kube-proxy", daemon=True).start()


DOCTOR_WINDOW = 5.0  # seconds between the doctor's two counter samples (its default)


def watch_doctor(agent: Agent, host: Host, every: float, stopped: threading.Event) -> None:
    """Run the doctor (read-only, one local round trip of about DOCTOR_WINDOW seconds)
    every `every` seconds, first at start, for its findings in /metrics."""
    from netfix.doctor import run as doctor

    def run() -> None:
        while not stopped.is_set():
            agent.doctor_done(doctor.check_host(host, DOCTOR_WINDOW))
            if stopped.wait(every):
                return

    threading.Thread(target=run, name="netfix-agent-doctor", daemon=True).start()


# ----------------------------------------------------------------------- HTTP


def serve(agent: Agent, listen: str) -> ThreadingHTTPServer:
    """/metrics and /healthz on ADDR:PORT, in a daemon thread."""
    addr, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, agent.metrics(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                ok = agent.healthy()
                self._send(200 if ok else 503, "ok\n" if ok else "stale\n", "text/plain")
            else:
                self._send(404, "see /metrics and /healthz\n", "text/plain")

        def _send(self, code: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # stdout carries the JSON log only
            pass

    host = addr.strip("[]") or "0.0.0.0"

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    server = Server((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="netfix-agent-http",
                     daemon=True).start()
    return server


# ----------------------------------------------------------------------- the loop


def run(options: Options, listen: str | None = None, host_name: str | None = None) -> int:
    """The agent's process: until SIGTERM or SIGINT. Returns the exit code."""
    host = local_host(host_name)
    agent = Agent(host.name, options, planner(host, options.profile),
                  applier(host, options.allow_disruptive))
    wake, stopped = Wake(), threading.Event()

    def stop(signum: int, _frame: object) -> None:
        wake.stop = True
        stopped.set()
        wake.set(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = serve(agent, listen) if listen else None
    links = watch_links(wake, stopped)
    watch_kube_proxy(wake, stopped)
    if options.doctor_every:
        watch_doctor(agent, host, options.doctor_every, stopped)
    agent.log("start", reason=f"mode {options.mode}, profile {options.profile}, every "
              f"{options.interval:g}s", listen=listen, links=links is not None)
    why, next_plan = "start", 0.0
    try:
        while not stopped.is_set():
            deferred = agent.cycle(why)
            if options.textfile:
                try:
                    atomic_write(options.textfile, agent.metrics().encode())
                except OSError as e:  # a full or read-only disk: report, keep the loop
                    agent.log("error", reason=f"cannot write {options.textfile}: {e}")
            now = time.time()
            next_plan = min(now + options.interval, deferred or now + options.interval)
            reasons = wake.wait(next_plan - time.time())
            why = "+".join(reasons) if reasons else "timer"
    finally:
        stopped.set()
        if links:
            links.terminate()
            links.wait(5)
        if server:
            server.shutdown()
        agent.log("stop", reason=why)
    return 0
