"""Run plan / apply / rollback / history across hosts: parallel, one script per round trip.

Library API used by the CLI and the tests. Every per-host failure becomes a HostResult
(other hosts carry on); nothing here prints.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
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
           done: str = "applied", arm: str | None = None, pre: str | None = None) -> HostResult:
    res = run_script(host, journal.script(tx, check=check, marks=marks, arm=arm, pre=pre))
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
          max_fail: int | None = None, progress: Progress | None = None,
          confirm: int | None = None, auto_confirm: bool = False,
          allow_disruptive: bool = False) -> list[HostResult]:
    """`confirm` SECONDS: the node reverts each transaction by itself unless confirmed in
    time (see confirm_window); `auto_confirm` confirms over a new SSH connection.
    A host whose plan has a disruptive change on the interface carrying netfix's own SSH
    session is refused (nothing changed there) unless `allow_disruptive`."""
    by_name = {hp.host: hp for hp in plan.hosts}
    profiles = Profiles()

    def one(host: Host) -> HostResult:
        hp = by_name.get(host.name)
        if hp is None:
            return HostResult(host.name, "error", False, "host is not in the saved plan")
        if hp.error:
            return HostResult(host.name, "error", False, hp.error)
        risky = [] if allow_disruptive else cuts_off_ssh(hp)
        if risky:
            return HostResult(host.name, "refused", False, f"{len(risky)} disruptive change(s) "
                              "on the interface carrying netfix's SSH session; nothing was "
                              "changed: rerun with --allow-disruptive to make them anyway",
                              None, risky)
        try:
            if saved:
                profiles.override = hp.profile
                fresh = plan_host(host, profiles.for_host(host))
                if fresh.fingerprint != hp.fingerprint:
                    return HostResult(host.name, "stale", False, "the node changed since the "
                                      "plan was saved; nothing was changed: run plan again")
            steps = [Step(**asdict(op), knob=c.knob, target=c.target)
                     for c in hp.pending for op in c.ops]
            if not steps:
                return HostResult(host.name, "no-changes", True, "already as planned")
            tx = Tx(journal.new_id(), "apply", host.name, hp.profile, steps,
                    fingerprint=hp.fingerprint)
            if confirm:
                return confirm_window(host, tx, confirm, auto_confirm)
            return run_tx(host, tx)
        except NetfixError as e:
            return HostResult(host.name, "error", False, str(e))

    return rollout(hosts, one, serial, max_fail, progress)


def cuts_off_ssh(hp: HostPlan) -> list[str]:
    """Pending changes that may reset the link netfix itself talks to the node over."""
    from netfix.ifaces import MANAGEMENT
    from netfix.plan import DISRUPTIVE

    return [f"{c.knob} {c.target}: {c.current} -> {c.desired}" for c in hp.pending
            if DISRUPTIVE in c.flags and MANAGEMENT in c.flags]


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
                if t.status.startswith(("rolled-back", journal.REVERTED)):
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
        # An unconfirmed target still has its automatic revert armed: the rollback disarms
        # it under the same lock, so the two can never both run.
        pre = journal.disarm_script(target.id) \
            if target.status.startswith(journal.UNCONFIRMED) else None
        res = run_tx(host, rtx, marks={target.id: f"rolled-back {rtx.id}"}, done="rolled-back",
                     pre=pre)
        if res.status == "error" and f"REVERTING {target.id}" in res.message:
            res.status = "reverting"
            res.message = (f"the node is reverting transaction {target.id} by itself right now "
                           "(its confirm window ran out); nothing else was done: see history")
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


# --------------------------------------------------------------------------- confirmed apply


def confirm_window(host: Host, tx: Tx, seconds: int, auto_confirm: bool) -> HostResult:
    """Apply `tx` with a revert armed on the node, then reach the node over a NEW SSH
    connection: that is the proof the change did not cut the controller off. With
    `auto_confirm` the same round trip confirms it; else the operator runs `netfix confirm`."""
    res = run_tx(host, tx, arm=journal.arm_script(tx, seconds), done=journal.UNCONFIRMED)
    if not res.ok:
        return res
    try:
        probe = run_script(host, journal.confirm_script(tx.id) if auto_confirm
                           else journal.status_script(tx.id))
    except NetfixError as e:  # unreachable, or the new session failed: same meaning here
        return HostResult(host.name, "unreachable", False,
                          f"applied, but a new SSH connection failed ({e}): the change may have "
                          f"cut this controller off; the node reverts it by itself within "
                          f"{seconds}s unless confirmed (netfix history shows the outcome)",
                          tx.id)
    if auto_confirm:
        return _confirm_result(host.name, probe, tx.id)
    status = probe.stdout.strip()
    if status.startswith(journal.REVERTED):
        return HostResult(host.name, "reverted", False, "the node reverted the transaction "
                          f"before a new connection got through ({status})", tx.id)
    return HostResult(host.name, journal.UNCONFIRMED, True,
                      f"{len(tx.steps)} step(s); reachable over a new SSH connection; confirm "
                      f"within {seconds}s (netfix confirm --tx {tx.id}) or the node reverts it",
                      tx.id)


def _confirm_result(host: str, res: transport.Result, tx_id: str | None) -> HostResult:
    out, _, listing = res.stdout.partition("@@JOURNAL\n")
    rows = [line.split(" ", 2) for line in out.splitlines() if " " in line]
    if res.rc != 0 or "@@JOURNAL" not in res.stdout:
        msg = (out.strip().splitlines() or [""])[-1] + " " + res.stderr.strip()[:300]
        return HostResult(host, "error", False, msg.strip() or f"confirm script exit {res.rc}")
    confirmed = [r[1] for r in rows if r[0] == "CONFIRMED"]
    reverting = [r[1] for r in rows if r[0] == "REVERTING"]
    if reverting:
        return HostResult(host, "reverting", False, "too late: the node is reverting "
                          f"{', '.join(reverting)} by itself (its confirm window ran out)",
                          reverting[0], [f"confirmed {c}" for c in confirmed])
    if confirmed:
        return HostResult(host, "confirmed", True, f"confirmed {', '.join(confirmed)}: the "
                          "automatic revert is disarmed", confirmed[-1])
    if any(r[0] == "NOTFOUND" for r in rows):
        return HostResult(host, "error", False, f"no transaction {tx_id} in this node's journal")
    txs = journal.parse_journal(listing)
    if tx_id:
        last = next((t for t in txs if t.id == tx_id), None)
    else:
        last = next((t for t in reversed(txs) if t.kind == "apply"), None)
    if last and last.status.startswith(journal.REVERTED):
        return HostResult(host, "reverted", False, f"transaction {last.id} was not confirmed in "
                          f"time and the node reverted it ({last.status}): it is not in place",
                          last.id)
    what = f"transaction {last.id} is {last.status or 'unknown'}" if last else "no transactions"
    return HostResult(host, "nothing-to-confirm", True, f"nothing to confirm: {what}",
                      last.id if last else None)


def confirm_host(host: Host, tx_id: str | None = None) -> HostResult:
    try:
        return _confirm_result(host.name, run_script(host, journal.confirm_script(tx_id)), tx_id)
    except NetfixError as e:
        return HostResult(host.name, "error", False, str(e))


def confirm(hosts: list[Host], tx_id: str | None = None,
            progress: Progress | None = None) -> list[HostResult]:
    """Disarm the automatic revert of applied-unconfirmed transactions (all of them, or
    `tx_id`), and report hosts whose node already reverted its last one."""
    if tx_id is not None and not re.fullmatch(r"[0-9A-Za-z-]{1,64}", tx_id):
        raise InputError(f"--tx {tx_id!r} is not a transaction id (see netfix history)")
    return rollout(hosts, lambda h: confirm_host(h, tx_id), None, None, progress)
