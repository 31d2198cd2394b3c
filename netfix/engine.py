"""Run plan / apply / rollback / history across hosts: parallel, one script per round trip.

Library API used by the CLI and the tests. Every per-host failure becomes a HostResult
(other hosts carry on); nothing here prints.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from netfix import journal, knobs, rendercache, transport, writers
from netfix.errors import InputError, NetfixError
from netfix.facts import Facts, Needs, build_script, parse
from netfix.inventory import Host
from netfix.journal import Step, Tx
from netfix.plan import HostPlan, Plan, fingerprint
from netfix.profile import Profile, load_profile
from netfix.rendercache import NodeRenders
from netfix.status import UNDONE, HostStatus, TxStatus
from netfix.util import norm

T = TypeVar("T")
Progress = Callable[[str], None]


@dataclass
class HostResult:
    host: str
    status: HostStatus
    ok: bool
    message: str = ""
    tx: str | None = None
    details: list[str] = field(default_factory=list)


# One thread per host up to this many: a worker spends its time waiting on the network
# (the handshake's round trips, the node's script), so with 32 workers 100 hosts over a
# 50 ms link took four waves of round trips instead of one.
MAX_WORKERS = 256


def parallel(hosts: Iterable[Host], fn: Callable[[Host], T],
             workers: int | None = None) -> list[T]:
    hosts = list(hosts)
    if len(hosts) <= 1:
        return [fn(h) for h in hosts]
    # Hosts whose transport must stay on this thread (see transport.Transport) run here,
    # one after the other, while the pool runs the others.
    pinned = [transport.transport_for(h).main_thread for h in hosts]
    with ThreadPoolExecutor(max_workers=min(workers or MAX_WORKERS, len(hosts))) as pool:
        if not any(pinned):
            return list(pool.map(fn, hosts))
        both = list(zip(hosts, pinned, strict=True))
        futures = [None if pin else pool.submit(fn, h) for h, pin in both]
        here = [fn(h) if pin else None for h, pin in both]
        return [f.result() if f else r for f, r in zip(futures, here, strict=True)]


def run_script(host: Host, script: str, staged: bool = False) -> transport.Result:
    return transport.run(host, script, staged=staged)


def gather(host: Host, needs: Needs, recover: bool = True) -> Facts:
    """One read-only round trip. A transaction the node reports as still `applying` is
    finished first (see recover), and the facts read again: they described a half state."""
    res = run_script(host, build_script(needs))
    try:
        facts = parse(host.name, res.stdout)
    except ValueError as e:  # a torn read: a file changed while the script read it
        raise NetfixError(f"the node's facts did not parse ({e}); run again") from e
    facts.host_key = res.host_key
    if facts.uid == -1:
        if host.sudo and "password is required" in res.stderr:
            raise NetfixError(f"sudo on {host.name}: a password is required for {host.user}, "
                              "and netfix runs `sudo -n` (never asks): give that user a "
                              "NOPASSWD rule, or connect as root")
        raise NetfixError(f"fact script failed (exit {res.rc}): {res.stderr.strip()[:300]}")
    if facts.uid != 0:
        raise NetfixError(f"connected as uid {facts.uid}: netfix needs root on the node "
                          "(connect as root or set sudo: true with passwordless sudo)")
    if facts.interrupted and recover:
        notes = recover_interrupted(host, facts.interrupted)
        facts = gather(host, needs, recover=False)
        facts.recovered = notes
    return facts


def recover_interrupted(host: Host, records: dict[str, bytes]) -> list[str]:
    """Undo what each interrupted transaction made, under the node lock, as a database does
    after a crash. Returns one line per transaction for the operator."""
    notes = []
    for tx_id, raw in sorted(records.items()):
        try:
            tx = Tx.from_record(raw)
        except (ValueError, TypeError, KeyError) as e:
            notes.append(f"transaction {tx_id} was interrupted and its journal is unreadable "
                         f"({type(e).__name__}): it cannot be undone automatically; "
                         + journal.Unreadable(tx_id, "applying", str(e)).advice())
            continue
        res = run_script(host, journal.recover_script(tx), staged=True)
        words = (res.stdout.strip().splitlines() or [""])[-1].split()
        if res.rc == journal.LOCKED:
            notes.append(f"transaction {tx_id} is applying: another netfix run holds the "
                         "node lock")
        elif words[:1] == ["RECOVERED"]:
            notes.append(f"transaction {tx_id} had been interrupted after step {words[2]} of "
                         f"{len(tx.steps)}: undid those steps, newest first "
                         f"(now {TxStatus.INTERRUPTED})")
        elif words[:1] == ["RECOVER-INCOMPLETE"]:
            notes.append(f"transaction {tx_id} had been interrupted; undoing its steps FAILED "
                         f"({TxStatus.INTERRUPTED_INCOMPLETE}): check the node by hand: "
                         + "; ".join(res.stdout.splitlines()[:-1])[:500])
        elif words[:1] != ["NOT-INTERRUPTED"]:  # else: it was running, and has finished
            notes.append(f"could not recover transaction {tx_id}: "
                         f"{' '.join(words) or res.stderr.strip()[:300] or res.rc}")
    return notes


class Profiles:
    """Loads each profile once per run, whatever number of hosts use it. Safe to share
    between worker threads: nothing in it changes per host."""

    def __init__(self, override: str | None = None):
        self.override = override
        self._cache: dict[str, Profile] = {}
        self._lock = threading.Lock()

    def for_host(self, host: Host) -> Profile:
        name = self.override or host.profile
        if not name:
            raise InputError(f"host {host.name} has no profile: give --profile or set "
                             "`profile:` for it in the inventory")
        return self.get(name)

    def get(self, name: str) -> Profile:
        with self._lock:
            if name not in self._cache:
                self._cache[name] = load_profile(name)
            return self._cache[name]


def sections(profile: Profile) -> list[tuple[object, dict]]:
    return [(m, profile.data[m.SECTION]) for m in knobs.modules() if profile.data.get(m.SECTION)]


def plan_host(host: Host, profile: Profile) -> HostPlan:
    return diff_host(host, profile)[0]


def needs_for(profile: Profile, renders: NodeRenders | None = None) -> Needs:
    ctx = knobs.Context(profile.name, renders=renders)
    needs = Needs()
    for mod, section in sections(profile):
        needs.update(mod.needs(section, ctx))
    for writer in writers.modules():
        needs.update(writer.needs(profile.data))
    return needs


def diff_facts(host: str, profile: Profile, facts: Facts,
               renders: NodeRenders | None = None) -> HostPlan:
    """Pure: desired state and facts in, the host's plan out (no I/O but `renders`, the
    firewall's cache, which learns the node's fresh renders)."""
    ctx = knobs.Context(profile.name, renders=renders)
    changes = []
    for mod, section in sections(profile):
        changes += mod.diff(section, facts, ctx)
    for writer in writers.modules():
        writer.annotate(changes, facts)
    return HostPlan(host, profile.name, changes, fingerprint(changes), info=facts.summary())


def diff_host(host: Host, profile: Profile, extra: Needs | None = None) -> tuple[HostPlan, Facts]:
    """One round trip: gather what the profile's knobs need (plus `extra`, e.g. the
    journal for drift), then diff. Returns the facts too for callers that read `extra`."""
    needs, renders = host_reads(host, profile, extra)
    facts = gather(host, needs)
    hp = diff_facts(host.name, profile, facts, renders)
    hp.identity = identity(host, facts)
    hp.profile_path, hp.profile_sha256 = profile.path, profile.sha256
    hp.notices = list(facts.recovered) + transport.limitations(host)
    return hp, facts


def host_reads(host: Host, profile: Profile,
               extra: Needs | None = None) -> tuple[Needs, NodeRenders]:
    """What diff_host's one round trip reads, and the node's firewall render cache."""
    renders = rendercache.for_node(f"{host.name}@{address(host)}")
    needs = needs_for(profile, renders)
    if extra:
        needs.update(extra)
    return needs, renders


def address(host: Host) -> str:
    return "local" if host.is_local else f"{host.address}:{host.port}"


def identity(host: Host, facts: Facts) -> dict[str, str]:
    """What makes this node this machine: a saved plan is applied only where these match."""
    return {"address": address(host),
            "host_key": facts.host_key or "", "machine_id": facts.machine_id}


def host_error(e: Exception) -> str:
    """Any exception while handling one host is that host's error, never the run's."""
    if isinstance(e, NetfixError):
        return str(e)
    return f"internal error ({type(e).__name__}: {e}); the other hosts were not affected"


def make_plan(hosts: list[Host], profile: str | None = None,
              progress: Progress | None = None) -> Plan:
    profiles = Profiles(profile)
    for h in hosts:  # bad profiles are operator errors: fail before touching any node
        profiles.for_host(h)

    def one(host: Host) -> HostPlan:
        try:
            hp = plan_host(host, profiles.for_host(host))
        except Exception as e:
            hp = HostPlan(host.name, profiles.for_host(host).name, error=host_error(e))
        if progress:
            progress(f"{host.name}: " + (hp.error or f"{len(hp.pending)} change(s)"))
        return hp

    return Plan(parallel(hosts, one))


def _result(host: str, tx: Tx, res: transport.Result, done: HostStatus) -> HostResult:
    lines = res.stdout.splitlines()
    tagged = [line.split("\t") for line in lines if "\t" in line]
    if res.rc == journal.OK:
        return HostResult(host, done, True, f"{len(tx.steps)} step(s)", tx.id)
    if res.rc == journal.STALE:
        found = {p[1]: p[2] for p in tagged if p[0] == "STALE"}
        if tx.rolls_back:  # a rollback's check: against what netfix wrote, not a plan
            moved = {s.path: s for s in tx.steps if s.path in found}.values()
            return HostResult(host, HostStatus.CHANGED_SINCE, False, f"{len(moved)} value(s) "
                              "changed since netfix wrote them; nothing restored: rerun with "
                              "--force to restore them anyway", tx.rolls_back,
                              [f"{s.target}: found {_seen(s, found[s.path])}, netfix wrote "
                               f"{_seen(s, journal.sha(s.old) if s.kind == 'file' else s.old)}"
                               for s in moved])
        details = [f"{s.target}: found {_seen(s, found[s.path])}, expected "
                   f"{_seen(s, journal.sha(s.old) if s.kind == 'file' else s.old)}"
                   for s in tx.steps if s.path in found]
        return HostResult(host, HostStatus.STALE, False, "node changed since the plan; nothing was "
                          "changed: run plan again", None, details)
    if res.rc == journal.FAILED:
        why = next((p[2] for p in tagged if p[0] == "FAILED"), "")
        return HostResult(host, HostStatus.FAILED_RESTORED, False,
                          f"{why}; every step already made was undone", tx.id)
    if res.rc == journal.RESTORE_FAILED:
        details = [line for line in lines if line.startswith(("FAILED", "UNDO-FAILED"))]
        return HostResult(
            host, HostStatus.RESTORE_INCOMPLETE, False, "a step failed AND undoing it "
            f"failed: check the node by hand (journal {tx.id})", tx.id, details)
    if res.rc == journal.REVERTING:  # only a rollback's disarm step (journal.disarm_script)
        return HostResult(host, HostStatus.REVERTING, False, "the node is reverting "
                          f"transaction {tx.rolls_back} by itself right now (its confirm window "
                          "ran out); nothing else was done: see history")
    if res.rc == transport.INCOMPLETE:
        return HostResult(host, HostStatus.NOT_APPLIED, False, "the script did not reach the node "
                          "whole, so the node ran none of it: nothing was changed")
    msg = (res.stdout.strip().splitlines() or [""])[-1] + " " + res.stderr.strip()[:300]
    return HostResult(host, HostStatus.ERROR, False, msg.strip() or f"apply script exit {res.rc}")


def _seen(step: Step, value: str | None) -> str:
    """A stale value as the operator compares it: files by sha256 on both sides."""
    if step.kind != "file" or value in (None, "absent", "masked"):
        return repr(value) if step.kind != "file" else str(value or "absent")
    return f"sha256:{value[:16]}"


def run_tx(host: Host, tx: Tx, script: str | None = None,
           done: HostStatus = HostStatus.APPLIED) -> HostResult:
    """Run transaction `tx` (its script: `script`, else the plain apply) on `host`."""
    script = script or journal.apply_script(tx)
    try:
        res = run_script(host, script, staged=True)
    except transport.ConnectionLost as e:
        return outcome(host, tx, done, str(e))
    if res.rc == transport.VANISHED:
        return outcome(host, tx, done, "the node's run of the script was killed")
    return _result(host.name, tx, res, done)


def outcome(host: Host, tx: Tx, done: HostStatus, why: str) -> HostResult:
    """The connection broke after the node had the whole script: reconnect once and read
    what really happened from the node's journal (waiting for the run to finish)."""
    try:
        res = run_script(host, journal.outcome_script(tx.id))
    except NetfixError as e:
        return HostResult(
            host.name, HostStatus.UNKNOWN, False, f"{why}; reconnecting failed too ({e}): "
            f"the outcome of transaction {tx.id} is unknown; `netfix history` "
            "shows it once the node answers", tx.id)
    status = res.stdout.strip() or "absent"
    state = TxStatus.of(status)
    if status == "absent":
        return HostResult(
            host.name, HostStatus.NOT_APPLIED, False, f"{why}; reconnected: the node never "
            f"started transaction {tx.id}, nothing was changed")
    if state is TxStatus.APPLYING:  # under the lock: its run died mid-way
        notes = recover_interrupted(host, {tx.id: tx.record()})
        return HostResult(host.name, HostStatus.INTERRUPTED, False, f"{why}; reconnected: "
                          f"{' '.join(notes)}", tx.id)
    if state in (TxStatus.APPLIED, TxStatus.UNCONFIRMED):
        return HostResult(host.name, done, True, f"{len(tx.steps)} step(s); {why}, but on "
                          f"reconnecting the node's journal says {status}", tx.id)
    return HostResult(host.name, HostStatus.of_tx(state), False, f"{why}; reconnected: transaction "
                      f"{tx.id} ended {status}", tx.id)


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
                results += [HostResult(
                    h.name, HostStatus.SKIPPED, False, f"not started: {failed} host(s)"
                    f" failed, more than --max-fail {max_fail}") for h in rest]
            break
        for r in parallel(group, fn):
            if progress:
                progress(f"{r.host}: {r.status} {r.message}")
            results.append(r)
    return results


@dataclass(frozen=True)
class ApplyOptions:
    """How `apply` runs, from `netfix apply`'s options (the defaults: all hosts at once)."""

    serial: int | None = None  # hosts at a time; None: all in parallel
    max_fail: int | None = None  # stop starting batches once more than this many failed
    confirm_secs: int | None = None  # commit-confirmed: the node reverts unless confirmed
    auto_confirm: bool = False  # with confirm_secs: confirm over a new SSH connection
    allow_disruptive: bool = False  # also cut into the interface carrying our SSH session
    saved: bool = False  # the plan came from a file: re-plan each host and compare


def apply(hosts: list[Host], plan: Plan, options: ApplyOptions = ApplyOptions(),
          progress: Progress | None = None) -> list[HostResult]:
    """`options.confirm_secs` SECONDS: the node reverts each transaction by itself unless
    confirmed in time (see confirm_window); `auto_confirm` confirms over a new SSH
    connection. A host whose plan has a disruptive change on the interface carrying
    netfix's own SSH session is refused (nothing changed there) unless `allow_disruptive`.
    `saved`: `plan` came from a file. It is never run as such: each host is planned again
    and only the freshly computed steps run, and only if they equal the saved ones."""
    by_name = {hp.host: hp for hp in plan.hosts}
    profiles = Profiles()

    def one(host: Host) -> HostResult:
        hp = by_name.get(host.name)
        if hp is None:
            return HostResult(host.name, HostStatus.ERROR, False, "host is not in the saved plan")
        if hp.error:
            return HostResult(host.name, HostStatus.ERROR, False, hp.error)
        try:
            if options.saved:
                fresh = replan_saved(host, hp, profiles)
                if isinstance(fresh, HostResult):
                    return fresh
                hp = fresh
            risky = [] if options.allow_disruptive else cuts_off_ssh(hp)
            blind = [] if options.allow_disruptive else unguarded(host, hp)
            if blind:
                return HostResult(host.name, HostStatus.REFUSED, False, f"{len(blind)} disruptive "
                                  f"change(s), and transport {transport.describe(host)} cannot "
                                  "tell which interface carries the connection; nothing was "
                                  "changed: rerun with --allow-disruptive to make them anyway",
                                  None, blind)
            if risky:
                return HostResult(host.name, HostStatus.REFUSED, False, f"{len(risky)} disruptive "
                                  "change(s) on the interface carrying netfix's SSH session; "
                                  "nothing was changed: rerun with --allow-disruptive to make "
                                  "them anyway", None, risky)
            errors = plan_errors(hp)
            if errors:
                return HostResult(host.name, HostStatus.REFUSED, False, f"{len(errors)} change(s) "
                                  "the plan marks as errors; nothing was changed: fix the "
                                  "profile for this node and plan again", None, errors)
            tx = apply_tx(hp)
            if tx is None:
                return HostResult(host.name, HostStatus.NO_CHANGES, True, "already as planned")
            if options.confirm_secs and not transport.transport_for(host).proves_reachability:
                return HostResult(host.name, HostStatus.REFUSED, False, "--confirm needs proof "
                                  "that the node is still reachable after the change, and "
                                  f"transport {transport.describe(host)} cannot give it; nothing "
                                  "was changed: apply without --confirm, or reach this host over "
                                  "ssh")
            if options.confirm_secs:
                return confirm_window(host, tx, options.confirm_secs, options.auto_confirm)
            return run_tx(host, tx)
        except Exception as e:
            return HostResult(host.name, HostStatus.ERROR, False, host_error(e))

    return rollout(hosts, one, options.serial, options.max_fail, progress)


def apply_tx(hp: HostPlan) -> Tx | None:
    """The transaction that makes `hp`'s pending changes, with a new id; None: none pending."""
    steps = [Step(**asdict(op), knob=c.knob, target=c.target)
             for c in hp.pending for op in c.ops]
    if not steps:
        return None
    return Tx(journal.new_id(), "apply", hp.host, hp.profile, steps, fingerprint=hp.fingerprint)


def replan_saved(host: Host, saved: HostPlan, profiles: Profiles) -> HostPlan | HostResult:
    """Plan `host` again from the saved plan's own profile and check the result against the
    file: same machine, same profile bytes, same facts, same steps. Returns the fresh plan,
    or the refusal (nothing is changed on a refused host)."""
    def refuse(status: HostStatus, why: str) -> HostResult:
        return HostResult(host.name, status, False, f"{why}; nothing was changed")

    source = saved.profile_path or saved.profile or ""
    try:
        profile = profiles.get(source)
    except InputError as e:
        return refuse(HostStatus.ERROR, f"the plan's profile cannot be loaded ({e})")
    if saved.profile_sha256 and profile.sha256 != saved.profile_sha256:
        return refuse(HostStatus.STALE, f"profile {source} changed since the plan was made (sha256 "
                      f"{saved.profile_sha256[:12]} then, {profile.sha256[:12]} now): plan again")
    fresh = plan_host(host, profile)
    if fresh.error:
        return refuse(HostStatus.ERROR, fresh.error)
    for key, was in saved.identity.items():
        now = fresh.identity.get(key)
        if key != "address" and was and now != was:
            return refuse("wrong-machine", f"the plan for {host.name} was made on another "
                          f"machine ({key} {was} then, {now} now, at "
                          f"{fresh.identity.get('address')}): plan again for this machine")
    if fresh.fingerprint != saved.fingerprint:
        return refuse(HostStatus.STALE, "the node changed since the plan was saved: plan again")
    diff = first_difference(saved, fresh)
    if diff:
        return refuse(HostStatus.REFUSED, f"the saved plan does not match what netfix computes for "
                      f"this node now ({diff}): the plan file was edited, or made by another "
                      "netfix version; plan again")
    return fresh


def first_difference(saved: HostPlan, fresh: HostPlan) -> str | None:
    old = [(c.knob, c.target, op) for c in saved.pending for op in c.ops]
    new = [(c.knob, c.target, op) for c in fresh.pending for op in c.ops]
    for n, ((knob, target, a), (_, _, b)) in enumerate(zip(old, new, strict=False), 1):
        for name in ("kind", "path", "old", "new", "read", "set"):
            x, y = getattr(a, name), getattr(b, name)
            if x != y:
                return (f"step {n}, {knob} {target}: `{name}` is {_clip(x)} in the file, "
                        f"{_clip(y)} computed")
    if len(old) != len(new):
        return f"{len(old)} step(s) in the file, {len(new)} computed"
    return None


def _clip(value: object, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."


def plan_errors(hp: HostPlan) -> list[str]:
    """Pending changes flagged `error` (e.g. kubelet with protectKernelDefaults would refuse
    to start): apply never makes a change its own plan calls an error."""
    from netfix.plan import Code

    return [f"{c.knob} {c.target}: {c.reason(Code.ERROR).message}" for c in hp.pending
            if Code.ERROR in c.flags]


def cuts_off_ssh(hp: HostPlan) -> list[str]:
    """Pending changes that may reset the link netfix itself talks to the node over."""
    from netfix.ifaces import MANAGEMENT
    from netfix.plan import DISRUPTIVE

    return [f"{c.knob} {c.target}: {c.current} -> {c.desired}" for c in hp.pending
            if DISRUPTIVE in c.flags and MANAGEMENT in c.flags]


def unguarded(host: Host, hp: HostPlan) -> list[str]:
    """Disruptive pending changes on a host whose transport cannot tell the management
    interface: any of them may be on it, so the guard treats them all as if they were."""
    from netfix.plan import DISRUPTIVE

    if transport.transport_for(host).sees_ssh_session:
        return []
    return [f"{c.knob} {c.target}: {c.current} -> {c.desired}" for c in hp.pending
            if DISRUPTIVE in c.flags]


def read_journal(host: Host, needs: Needs | None = None) -> journal.Journal:
    facts = gather(host, journal.needs() if needs is None else needs)
    found = journal.from_facts(facts)
    found.notices = facts.recovered + found.notices
    return found


def history(hosts: list[Host]) -> list[tuple[Host, journal.Journal | str]]:
    def one(host: Host) -> tuple[Host, journal.Journal | str]:
        try:
            return host, read_journal(host)
        except Exception as e:
            return host, host_error(e)

    return parallel(hosts, one)


# A transaction in one of these states has nothing in force to roll back.


def _pick(found: journal.Journal, tx_id: str | None) -> Tx:
    if tx_id:
        bad = next((u for u in found.unreadable if u.id == tx_id), None)
        if bad:
            raise NetfixError(bad.advice())
        for t in found.txs:
            if t.id == tx_id:
                if t.state in UNDONE:
                    raise NetfixError(f"transaction {tx_id} is already {t.status}: nothing "
                                      "of it is in force")
                return t
        raise NetfixError(f"no transaction {tx_id} in this node's journal")
    picked = next((t for t in reversed(found.txs)
                   if t.kind == "apply" and t.state in (TxStatus.APPLIED, TxStatus.UNCONFIRMED)),
                  None)
    # Ids start with the time: an unreadable record newer than the pick may be the change
    # that is really in force, so rolling back past it would not restore the node.
    newer = [u for u in found.unreadable if picked is None or u.id > picked.id]
    if newer:
        raise NetfixError(newer[-1].advice() + (
            f"; to roll back the older transaction anyway: --tx {picked.id}" if picked else ""))
    if picked is None:
        raise NetfixError("nothing to roll back: no applied transaction in the journal")
    return picked


def _found(facts: Facts, step: Step) -> str | None:
    if step.kind == "value":
        return facts.value(step.path).value
    if step.kind == "cmd":
        return norm(facts.scripts.get(step.path))
    content = facts.files.get(step.path)
    return None if content is None else base64.b64encode(content).decode()


def rollback_host(host: Host, tx_id: str | None = None, force: bool = False) -> HostResult:
    # Its round trips (journal, the rollback transaction; with --force the current values
    # between them) share one SSH connection: one handshake.
    with transport.session(host):
        return _rollback_host(host, tx_id, force)


def rollback_reads(tx_id: str | None) -> Needs:
    """The journal rollback reads. The latest applied transaction is always among the
    records that may be in force (facts.sh J), and every record holds the bytes of the files
    it wrote: reading them all made each rollback grow with the node's history. --tx may
    name a rollback, whose own record J leaves out."""
    return journal.needs(in_force=tx_id is None)


def rollback_tx(target: Tx, current: dict[str, str | None] | None = None) -> Tx:
    """The transaction that undoes `target`. Only what netfix wrote may be put back: by
    default the node must still hold what `target` wrote (the last step on a path holds its
    final value); the rollback's own check, under the node lock, refuses otherwise."""
    if current is None:
        current = {s.path: s.new for s in target.steps}
    return journal.inverse(target, journal.new_id(), current=current)


def _rollback_host(host: Host, tx_id: str | None, force: bool) -> HostResult:
    history = None
    try:
        history = read_journal(host, rollback_reads(tx_id))
        target = _pick(history, tx_id)
        current = None
        if force:  # what the node holds now, recorded as such
            needs = Needs(paths={s.path for s in target.steps if s.kind == "value"},
                          files={s.path for s in target.steps if s.kind == "file"},
                          scripts={s.path: s.read for s in target.steps
                                   if s.kind == "cmd" and s.read})
            facts = gather(host, needs)
            current = {s.path: _found(facts, s) for s in target.steps}
        rtx = rollback_tx(target, current)
        res = run_tx(host, rtx, journal.rollback_script(rtx, target),
                     done=HostStatus.ROLLED_BACK)
        res.message = f"restored transaction {target.id} ({len(rtx.steps)} step(s))" \
            if res.ok else res.message
        res.details = history.notices + res.details
        return res
    except Exception as e:
        return HostResult(host.name, HostStatus.ERROR, False, host_error(e), None,
                          history.notices if history else [])


def rollback(hosts: list[Host], tx_id: str | None = None, force: bool = False,
             serial: int | None = None, max_fail: int | None = None,
             progress: Progress | None = None) -> list[HostResult]:
    return rollout(hosts, lambda h: rollback_host(h, tx_id, force), serial, max_fail, progress)


# --------------------------------------------------------------------------- confirmed apply


def confirm_window(host: Host, tx: Tx, seconds: int, auto_confirm: bool) -> HostResult:
    """Apply `tx` with a revert armed on the node, then reach the node over a NEW SSH
    connection: that is the proof the change did not cut the controller off. With
    `auto_confirm` the same round trip confirms it; else the operator runs `netfix confirm`."""
    res = run_tx(host, tx, journal.apply_script(tx, arm=journal.arm_script(tx, seconds)),
                 done=HostStatus.UNCONFIRMED)
    if not res.ok:
        return res
    try:
        transport.transport_for(host).reconnect(host)  # the proof needs a connection of its own
        probe = run_script(host, journal.confirm_script(tx.id), staged=True) if auto_confirm \
            else run_script(host, journal.status_script(tx.id))
    except NetfixError as e:  # unreachable, or the new session failed: same meaning here
        return HostResult(host.name, HostStatus.UNREACHABLE, False,
                          f"applied, but a new SSH connection failed ({e}): the change may have "
                          f"cut this controller off; the node reverts it by itself within "
                          f"{seconds}s unless confirmed (netfix history shows the outcome)",
                          tx.id)
    if auto_confirm:
        return _confirm_result(host.name, probe, tx.id)
    status = probe.stdout.strip()
    if TxStatus.of(status) is TxStatus.REVERTED:
        return HostResult(
            host.name, HostStatus.REVERTED, False, "the node reverted the transaction "
            f"before a new connection got through ({status})", tx.id)
    return HostResult(host.name, HostStatus.UNCONFIRMED, True,
                      f"{len(tx.steps)} step(s); reachable over a new SSH connection; confirm "
                      f"within {seconds}s (netfix confirm --tx {tx.id}) or the node reverts it",
                      tx.id)


def _confirm_result(host: str, res: transport.Result, tx_id: str | None) -> HostResult:
    out, _, listing = res.stdout.partition("@@JOURNAL\n")
    rows = [line.split(" ", 2) for line in out.splitlines() if " " in line]
    if res.rc != 0 or "@@JOURNAL" not in res.stdout:
        msg = (out.strip().splitlines() or [""])[-1] + " " + res.stderr.strip()[:300]
        return HostResult(
            host, HostStatus.ERROR, False, msg.strip() or f"confirm script exit {res.rc}")
    confirmed = [r[1] for r in rows if r[0] == "CONFIRMED"]
    reverting = [r[1] for r in rows if r[0] == "REVERTING"]
    if reverting:
        return HostResult(host, HostStatus.REVERTING, False, "too late: the node is reverting "
                          f"{', '.join(reverting)} by itself (its confirm window ran out)",
                          reverting[0], [f"confirmed {c}" for c in confirmed])
    if confirmed:
        return HostResult(
            host, HostStatus.CONFIRMED, True, f"confirmed {', '.join(confirmed)}: the "
            "automatic revert is disarmed", confirmed[-1])
    if any(r[0] == "NOTFOUND" for r in rows):
        return HostResult(
            host, HostStatus.ERROR, False, f"no transaction {tx_id} in this node's journal")
    txs = journal.parse_journal(listing).txs
    if tx_id:
        last = next((t for t in txs if t.id == tx_id), None)
    else:
        last = next((t for t in reversed(txs) if t.kind == "apply"), None)
    if last and last.state is TxStatus.REVERTED:
        return HostResult(
            host, HostStatus.REVERTED, False, f"transaction {last.id} was not confirmed in "
            f"time and the node reverted it ({last.status}): it is not in place",
            last.id)
    what = f"transaction {last.id} is {last.status or 'unknown'}" if last else "no transactions"
    return HostResult(host, HostStatus.NOTHING_TO_CONFIRM, True, f"nothing to confirm: {what}",
                      last.id if last else None)


def confirm_host(host: Host, tx_id: str | None = None) -> HostResult:
    try:
        res = run_script(host, journal.confirm_script(tx_id), staged=True)
        return _confirm_result(host.name, res, tx_id)
    except Exception as e:
        return HostResult(host.name, HostStatus.ERROR, False, host_error(e))


def confirm(hosts: list[Host], tx_id: str | None = None,
            progress: Progress | None = None) -> list[HostResult]:
    """Disarm the automatic revert of applied-unconfirmed transactions (all of them, or
    `tx_id`), and report hosts whose node already reverted its last one."""
    if tx_id is not None and not re.fullmatch(r"[0-9A-Za-z-]{1,64}", tx_id):
        raise InputError(f"--tx {tx_id!r} is not a transaction id (see netfix history)")
    return rollout(hosts, lambda h: confirm_host(h, tx_id), None, None, progress)
