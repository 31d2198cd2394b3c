"""Run plan / apply / rollback / history across hosts: parallel, one script per round trip.

Library API used by the CLI and the tests. Every per-host failure becomes a HostResult
(other hosts carry on); nothing here prints.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from netfix import journal, knobs, transport
from netfix.errors import InputError, NetfixError
from netfix.facts import Facts, Needs, build_script, parse
from netfix.inventory import Host
from netfix.journal import Step, Tx
from netfix.plan import HostPlan, Plan, fingerprint
from netfix.profile import Profile, load_profile
from netfix.util import norm

T = TypeVar("T")
Progress = Callable[[str], None]


@dataclass
class HostResult:
    host: str
    status: str  # applied, no-changes, rolled-back, failed-restored, stale, error, skipped...
    ok: bool
    message: str = ""
    tx: str | None = None
    details: list[str] = field(default_factory=list)


def parallel(hosts: Iterable[Host], fn: Callable[[Host], T], workers: int = 32) -> list[T]:
    hosts = list(hosts)
    if len(hosts) <= 1:
        return [fn(h) for h in hosts]
    with ThreadPoolExecutor(max_workers=min(workers, len(hosts))) as pool:
        return list(pool.map(fn, hosts))


def run_script(host: Host, script: str) -> transport.Result:
    return transport.run(host, script)


def gather(host: Host, needs: Needs) -> Facts:
    res = run_script(host, build_script(needs))
    facts = parse(host.name, res.stdout)
    if facts.uid == -1:
        raise NetfixError(f"fact script failed (exit {res.rc}): {res.stderr.strip()[:300]}")
    if facts.uid != 0:
        raise NetfixError(f"connected as uid {facts.uid}: netfix needs root on the node "
                          "(connect as root or set sudo: true with passwordless sudo)")
    return facts


class Profiles:
    """Loads each profile once per run, whatever number of hosts use it."""

    def __init__(self, override: str | None = None):
        self.override = override
        self._cache: dict[str, Profile] = {}

    def for_host(self, host: Host) -> Profile:
        name = self.override or host.profile
        if not name:
            raise InputError(f"host {host.name} has no profile: give --profile or set "
                             "`profile:` for it in the inventory")
        if name not in self._cache:
            self._cache[name] = load_profile(name)
        return self._cache[name]


def sections(profile: Profile) -> list[tuple[object, dict]]:
    return [(m, profile.data[m.SECTION]) for m in knobs.modules() if profile.data.get(m.SECTION)]


def plan_host(host: Host, profile: Profile) -> HostPlan:
    return diff_host(host, profile)[0]


def needs_for(profile: Profile) -> Needs:
    ctx = knobs.Context(profile.name)
    needs = Needs()
    for mod, section in sections(profile):
        needs.update(mod.needs(section, ctx))
    return needs


def diff_facts(host: str, profile: Profile, facts: Facts) -> HostPlan:
    """Pure: desired state and facts in, the host's plan out (no I/O)."""
    ctx = knobs.Context(profile.name)
    changes = []
    for mod, section in sections(profile):
        changes += mod.diff(section, facts, ctx)
    return HostPlan(host, profile.name, changes, fingerprint(changes), info=facts.summary())


def diff_host(host: Host, profile: Profile, extra: Needs | None = None) -> tuple[HostPlan, Facts]:
    """One round trip: gather what the profile's knobs need (plus `extra`, e.g. the
    journal for drift), then diff. Returns the facts too for callers that read `extra`."""
    needs = needs_for(profile)
    if extra:
        needs.update(extra)
    facts = gather(host, needs)
    return diff_facts(host.name, profile, facts), facts


def make_plan(hosts: list[Host], profile: str | None = None,
              progress: Progress | None = None) -> Plan:
    profiles = Profiles(profile)
    for h in hosts:  # bad profiles are operator errors: fail before touching any node
        profiles.for_host(h)

    def one(host: Host) -> HostPlan:
        try:
            hp = plan_host(host, profiles.for_host(host))
        except NetfixError as e:
            hp = HostPlan(host.name, profiles.for_host(host).name, error=str(e))
        if progress:
            progress(f"{host.name}: " + (hp.error or f"{len(hp.pending)} change(s)"))
        return hp

    return Plan(parallel(hosts, one))


def _result(host: str, tx: Tx, res: transport.Result, done: str) -> HostResult:
    lines = res.stdout.splitlines()
    tagged = [line.split("\t") for line in lines if "\t" in line]
    if res.rc == journal.OK:
        return HostResult(host, done, True, f"{len(tx.steps)} step(s)", tx.id)
    if res.rc == journal.STALE:
        found = {p[1]: p[2] for p in tagged if p[0] == "STALE"}
        details = [f"{s.target}: found {found[s.path]!r}, expected {s.old!r}"
                   for s in tx.steps if s.path in found]
        return HostResult(host, "stale", False, "node changed since the plan; nothing was "
                          "changed: run plan again", None, details)
    if res.rc == journal.FAILED:
        why = next((p[2] for p in tagged if p[0] == "FAILED"), "")
        return HostResult(host, "failed-restored", False,
                          f"{why}; every step already made was undone", tx.id)
    if res.rc == journal.RESTORE_FAILED:
        details = [line for line in lines if line.startswith(("FAILED", "UNDO-FAILED"))]
        return HostResult(host, "restore-incomplete", False, "a step failed AND undoing it "
                          f"failed: check the node by hand (journal {tx.id})", tx.id, details)
    msg = (res.stdout.strip().splitlines() or [""])[-1] + " " + res.stderr.strip()[:300]
    return HostResult(host, "error", False, msg.strip() or f"apply script exit {res.rc}")


def run_tx(host: Host, tx: Tx, check: bool = True, marks: dict[str, str] | None = None,
           done: str = "applied") -> HostResult:
    res = run_script(host, journal.script(tx, check=check, marks=marks))
    return _result(host.name, tx, res, done)


def batches(hosts: list[Host], serial: int | None) -> list[list[Host]]:
    size = serial if serial and serial > 0 else max(1, len(hosts))
    return [hosts[i:i + size] for i in range(0, len(hosts), size)]


def rollout(hosts: list[Host], fn: Callable[[Host], HostResult], serial: int | None,
            max_fail: int | None, progress: Progress | None = None) -> list[HostResult]:
    """Batches of `serial` hosts; once more than `max_fail` hosts failed, the remaining
    batches are not started (a failed host has already restored itself)."""
    results: list[HostResult] = []
    groups = batches(hosts, serial)
    for n, group in enumerate(groups):
        failed = sum(not r.ok for r in results)
        if max_fail is not None and failed > max_fail:
            for rest in groups[n:]:
                results += [HostResult(h.name, "skipped", False, f"not started: {failed} host(s)"
                                       f" failed, more than --max-fail {max_fail}") for h in rest]
            break
        for r in parallel(group, fn):
            if progress:
                progress(f"{r.host}: {r.status} {r.message}")
            results.append(r)
    return results


def apply(hosts: list[Host], plan: Plan, saved: bool = False, serial: int | None = None,
          max_fail: int | None = None, progress: Progress | None = None) -> list[HostResult]:
    by_name = {hp.host: hp for hp in plan.hosts}
    profiles = Profiles()

    def one(host: Host) -> HostResult:
        hp = by_name.get(host.name)
        if hp is None:
            return HostResult(host.name, "error", False, "host is not in the saved plan")
        if hp.error:
            return HostResult(host.name, "error", False, hp.error)
        try:
            if saved:
                profiles.override = hp.profile
                fresh = plan_host(host, profiles.for_host(host))
                if fresh.fingerprint != hp.fingerprint:
                    return HostResult(host.name, "stale", False, "the node changed since the "
                                      "plan was saved; nothing was changed: run plan again")
            steps = [Step(c.knob, c.target, op.kind, op.path, op.old, op.new, op.read, op.set)
                     for c in hp.pending for op in c.ops]
            if not steps:
                return HostResult(host.name, "no-changes", True, "already as planned")
            tx = Tx(journal.new_id(), "apply", host.name, hp.profile, steps,
                    fingerprint=hp.fingerprint)
            return run_tx(host, tx)
        except NetfixError as e:
            return HostResult(host.name, "error", False, str(e))

    return rollout(hosts, one, serial, max_fail, progress)


def read_journal(host: Host) -> list[Tx]:
    facts = gather(host, Needs(scripts={"journal": journal.journal_script()}))
    return journal.parse_journal(facts.scripts.get("journal", ""))


def history(hosts: list[Host]) -> list[tuple[Host, list[Tx] | str]]:
    def one(host: Host) -> tuple[Host, list[Tx] | str]:
        try:
            return host, read_journal(host)
        except NetfixError as e:
            return host, str(e)

    return parallel(hosts, one)


def _pick(txs: list[Tx], tx_id: str | None) -> Tx:
    if tx_id:
        for t in txs:
            if t.id == tx_id:
                if t.status.startswith("rolled-back"):
                    raise NetfixError(f"transaction {tx_id} is already {t.status}")
                return t
        raise NetfixError(f"no transaction {tx_id} in this node's journal")
    for t in reversed(txs):
        if t.kind == "apply" and t.status.startswith("applied"):
            return t
    raise NetfixError("nothing to roll back: no applied transaction in the journal")


def _found(facts: Facts, step: Step) -> str | None:
    if step.kind == "value":
        return facts.value(step.path).value
    if step.kind == "cmd":
        return norm(facts.scripts.get(step.path))
    content = facts.files.get(step.path)
    return None if content is None else base64.b64encode(content).decode()


def rollback_host(host: Host, tx_id: str | None = None, force: bool = False) -> HostResult:
    try:
        target = _pick(read_journal(host), tx_id)
        needs = Needs(paths={s.path for s in target.steps if s.kind == "value"},
                      files={s.path for s in target.steps if s.kind == "file"},
                      scripts={s.path: s.read for s in target.steps
                               if s.kind == "cmd" and s.read})
        facts = gather(host, needs)
        found = {s.path: _found(facts, s) for s in target.steps}
        # Only what netfix wrote may be put back: the last step on a path holds its final value.
        written = {s.path: s for s in target.steps}
        moved = [s for s in written.values() if found[s.path] != s.new]
        if moved and not force:
            details = [f"{s.target}: found {_show(s, found[s.path])}, netfix wrote "
                       f"{_show(s, s.new)}" for s in moved]
            return HostResult(host.name, "changed-since", False,
                              f"{len(moved)} value(s) changed since netfix wrote them; nothing "
                              "restored: rerun with --force to restore them anyway",
                              target.id, details)
        rtx = journal.inverse(target, journal.new_id(), current=found)
        res = run_tx(host, rtx, marks={target.id: f"rolled-back {rtx.id}"}, done="rolled-back")
        res.message = f"restored transaction {target.id} ({len(rtx.steps)} step(s))" \
            if res.ok else res.message
        return res
    except NetfixError as e:
        return HostResult(host.name, "error", False, str(e))


def _show(step: Step, value: str | None) -> str:
    if step.kind != "file":
        return repr(value)
    return "absent" if value is None else f"file of {len(base64.b64decode(value))} bytes"


def rollback(hosts: list[Host], tx_id: str | None = None, force: bool = False,
             serial: int | None = None, max_fail: int | None = None,
             progress: Progress | None = None) -> list[HostResult]:
    return rollout(hosts, lambda h: rollback_host(h, tx_id, force), serial, max_fail, progress)
