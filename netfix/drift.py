"""Drift: where nodes no longer match their profile or what netfix last wrote.

A drift check is a plan computed read-only, with the node's journal read in the same
round trip, and every change classified by why it exists:

- live         the running value differs from the profile
- persisted    a file netfix persists to differs from the profile (or is missing):
               the node changes at its next reboot
- edited       a file netfix manages no longer holds what netfix last wrote to it
- shadowed     another sysctl.d file sorts later and wins at boot (the file is named)
- other-writer another program (kube-proxy) will overwrite the value at its next start,
               or already did: a live value equal to what a modelled writer writes names
               that writer, its version and when it wrote (its process start time); when
               it started after netfix's last apply of the key, the item is the conflict,
               with the fix to make in the other writer's configuration
- unconfirmed  a transaction applied with --confirm that was never confirmed
- incomplete   a transaction that never finished (controller cut off mid-way) or whose
               undo failed: the node may hold part of it

Changes that cannot be made on this node (not settable, no usable target) are not drift:
they are kept as info so a report shows them without failing a pipeline. Nothing here
writes to a node.
"""

from __future__ import annotations

import base64
import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from netfix import engine, journal, writers
from netfix.inventory import Host
from netfix.journal import Tx
from netfix.plan import (
    NOT_SETTABLE,
    OTHER_WRITER,
    SHADOWED,
    SKIP,
    UPDATE,
    Change,
    HostPlan,
    Writer,
)
from netfix.profile import Profile
from netfix.status import INCOMPLETE as INCOMPLETE_TX
from netfix.status import TxStatus
from netfix.util import norm

SCHEMA = "netfix-drift/v1"
VERSION = 1



class Kind(StrEnum):
    """What a drift item is (the report schema's `kind`); the info kinds never count."""

    LIVE = "live"
    PERSISTED = "persisted"
    EDITED = "edited"
    SHADOWED = SHADOWED
    OTHER_WRITER = OTHER_WRITER
    UNCONFIRMED = "unconfirmed"  # an applied-unconfirmed transaction (TxStatus.UNCONFIRMED)
    INCOMPLETE = "incomplete"
    INFO_NOT_SETTABLE = NOT_SETTABLE
    INFO_SKIPPED = "skipped"


LIVE, PERSISTED, EDITED = Kind.LIVE, Kind.PERSISTED, Kind.EDITED
SHADOWED_KIND, OTHER_WRITER_KIND = Kind.SHADOWED, Kind.OTHER_WRITER
UNCONFIRMED, INCOMPLETE = Kind.UNCONFIRMED, Kind.INCOMPLETE
KINDS = (LIVE, PERSISTED, EDITED, SHADOWED_KIND, OTHER_WRITER_KIND, UNCONFIRMED, INCOMPLETE)
INFO_NOT_SETTABLE, INFO_SKIPPED = Kind.INFO_NOT_SETTABLE, Kind.INFO_SKIPPED

# Exit codes: the interface CI jobs and alerting rely on.
EXIT_OK, EXIT_ERROR, EXIT_DRIFT = 0, 1, 2

JOURNAL_KNOB = "journal"


@dataclass
class DriftItem:
    host: str
    knob: str
    target: str
    kind: str
    expected: str | None
    actual: str | None
    detail: str = ""


@dataclass
class HostDrift:
    host: str
    profile: str | None
    items: list[DriftItem] = field(default_factory=list)
    error: str | None = None
    checked_at: float = 0.0
    info: list[DriftItem] = field(default_factory=list)
    # Every (knob, target) the check looked at, in sync or not: a JUnit report lists them
    # all, so a target that stops drifting shows up as a passing test, not a vanished one.
    checked: list[tuple[str, str]] = field(default_factory=list)
    duration: float = 0.0
    notices: list[str] = field(default_factory=list)  # e.g. an interrupted tx recovered
    # The changes that would bring the node back (what `drift --diff` shows): not in the
    # JSON report, whose schema is the CI interface.
    pending: list[Change] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        return "drift" if self.items else "ok"


@dataclass
class DriftReport:
    hosts: list[HostDrift]
    version: int = VERSION
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    profile: str | None = None  # the --profile override, if any

    @property
    def items(self) -> list[DriftItem]:
        return [i for h in self.hosts for i in h.items]

    @property
    def has_drift(self) -> bool:
        return any(h.items for h in self.hosts)

    @property
    def has_errors(self) -> bool:
        return any(h.error for h in self.hosts)

    @property
    def exit_code(self) -> int:
        # An error wins over drift: a host that could not be checked must never let the
        # run look better than it is, and 2 would claim every host was checked.
        if self.has_errors:
            return EXIT_ERROR
        return EXIT_DRIFT if self.has_drift else EXIT_OK


def _decode(b64: str | None) -> bytes | None:
    return None if b64 is None else base64.b64decode(b64)


def last_written(txs: list[Tx]) -> dict[str, tuple[str, str | None]]:
    """path -> (transaction id, base64 content or None) of what netfix last wrote to each
    file, from applied transactions that were not rolled back (`txs` oldest first).

    A rolled-back apply does not count: its rollback put the old bytes back, and those are
    not netfix's content any more."""
    out: dict[str, tuple[str, str | None]] = {}
    for tx in txs:
        if tx.kind != "apply" or tx.state not in (TxStatus.APPLIED, TxStatus.UNCONFIRMED):
            continue
        for step in tx.steps:
            if step.kind == "file":
                out[step.path] = (tx.id, step.new)
    return out


def diff_summary(old: bytes | None, new: bytes | None, limit: int = 4) -> str:
    """The changed lines from `old` to `new`, '-' removed and '+' added, at most `limit`."""
    a = (old or b"").decode(errors="replace").splitlines()
    b = (new or b"").decode(errors="replace").splitlines()
    lines = [line for line in difflib.unified_diff(a, b, lineterm="", n=0)
             if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    text = "; ".join(lines[:limit])
    if len(lines) > limit:
        text += f"; ... {len(lines) - limit} more line(s)"
    return text


def _message(change: Change, code: str) -> str:
    reason = change.reason(code)
    return reason.message if reason else ""


def _file_item(host: str, change: Change, current_b64: str | None, desired_b64: str | None,
               written: tuple[str, str | None] | None) -> DriftItem:
    current, desired = _decode(current_b64), _decode(desired_b64)
    if written is not None and _decode(written[1]) != current:
        tx_id, wrote = written[0], _decode(written[1])
        what = "deleted" if current is None else "changed"
        detail = f"{what} by hand since netfix wrote it (transaction {tx_id})"
        if current is not None:
            detail += ": " + diff_summary(wrote, current)
        return DriftItem(host, change.knob, change.target, EDITED, change.desired,
                         change.current, detail)
    if current is None:
        detail = "missing: the values it persists are lost at the next reboot"
    elif desired is None:
        detail = "the profile no longer needs this file; it still applies at the next reboot"
    else:
        detail = "differs from the profile, the node changes at its next reboot: " + \
            diff_summary(current, desired)
    return DriftItem(host, change.knob, change.target, PERSISTED, change.desired,
                     change.current, detail)


def last_applied(txs: list[Tx]) -> dict[str, Tx]:
    """target -> the last apply transaction (in force, not rolled back) that changed it."""
    out: dict[str, Tx] = {}
    for tx in txs:
        if tx.kind == "apply" and tx.state in (TxStatus.APPLIED, TxStatus.UNCONFIRMED):
            for step in tx.steps:
                out[step.target] = tx
    return out


def stamp(epoch: float) -> str:
    """Minute-precision UTC, as drift details print times."""
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(epoch))


def _fix(change: Change, writer: Writer) -> str:
    """The sentence of the writer's own other-writer reason that says what to set."""
    text = next((r.message for r in change.reasons
                 if r.code == OTHER_WRITER and r.detail == writer.name), "")
    _, sep, fix = text.partition("; set ")
    return f"set {fix}" if sep else f"configure {writer.name} to leave this key alone"


def writer_item(host: str, c: Change, applied: Tx | None,
                started: dict[str, float]) -> DriftItem | None:
    """A live value equal to what a modelled writer writes: that writer put it there. If it
    started after netfix's last apply of the key, the key flipped back: a conflict."""
    w = next((w for w in c.writers
              if w.value is not None and w.value == norm(c.current) != c.desired), None)
    if w is None:
        return None
    who = f"{w.name} {w.version}" if w.version and w.version != "unknown" else w.name
    start = started.get(w.name)
    when = f" at {stamp(start)} (process start time)" if start else f" ({w.when})"
    detail = f"{who} wrote {w.value}{when}"
    if start and applied is not None and applied.time < start:
        detail = (f"conflict: netfix set {c.desired} at {stamp(applied.time)} (transaction "
                  f"{applied.id}), then {who} ({w.source}) started at {stamp(start)} and "
                  f"wrote {w.value} back; {_fix(c, w)}, restart it, then netfix apply")
    return DriftItem(host, c.knob, c.target, OTHER_WRITER_KIND, c.desired, c.current, detail)


def classify(hp: HostPlan, record: journal.Journal | list[Tx],
             checked_at: float | None = None,
             started: dict[str, float] | None = None) -> HostDrift:
    """Turn one host's plan and journal into drift items (see the module doc for kinds).
    `started`: writer name -> its process start time (epoch), for naming who wrote a value."""
    if isinstance(record, list):
        record = journal.Journal(record)
    txs = record.txs
    written = last_written(txs)
    applied = last_applied(txs)
    hd = HostDrift(hp.host, hp.profile, checked_at=checked_at or time.time())
    for c in hp.changes:
        hd.checked.append((c.knob, c.target))
        if c.action == SKIP:
            kind = INFO_NOT_SETTABLE if NOT_SETTABLE in c.flags else INFO_SKIPPED
            hd.info.append(DriftItem(hp.host, c.knob, c.target, kind, c.desired, c.current,
                                     "; ".join(c.notes)))
            continue
        found: dict[str, DriftItem] = {}  # one item per kind, however many ops a change has
        if c.action == UPDATE:
            for op in c.ops:
                if op.kind == "file":
                    item = _file_item(hp.host, c, op.old, op.new, written.get(op.path))
                else:
                    item = writer_item(hp.host, c, applied.get(c.target), started or {}) \
                        or DriftItem(hp.host, c.knob, c.target, LIVE, c.desired, c.current,
                                     "live value differs from the profile")
                found.setdefault(item.kind, item)
        if SHADOWED in c.flags:
            found.setdefault(SHADOWED_KIND, DriftItem(
                hp.host, c.knob, c.target, SHADOWED_KIND, c.desired, c.boot,
                _message(c, SHADOWED) or "another file sets this key later at boot"))
        if OTHER_WRITER in c.flags:
            found.setdefault(OTHER_WRITER_KIND, DriftItem(
                hp.host, c.knob, c.target, OTHER_WRITER_KIND, c.desired, c.current,
                _message(c, OTHER_WRITER) or "another writer will overwrite it"))
        hd.items += [found[k] for k in KINDS if k in found]
    for tx in txs:
        if tx.state is TxStatus.UNCONFIRMED:
            hd.checked.append((JOURNAL_KNOB, tx.id))
            hd.items.append(DriftItem(
                hp.host, JOURNAL_KNOB, tx.id, UNCONFIRMED, "confirmed", tx.status.split()[0],
                f"transaction {tx.id} (profile {tx.profile}, {len(tx.steps)} step(s), by "
                f"{tx.user}@{tx.controller}) was applied with --confirm and never confirmed: "
                f"confirm it or roll it back (netfix rollback --tx {tx.id})"))
        elif tx.state in INCOMPLETE_TX:
            hd.checked.append((JOURNAL_KNOB, tx.id))
            hd.items.append(DriftItem(
                hp.host, JOURNAL_KNOB, tx.id, INCOMPLETE, "applied or restored",
                tx.status.split()[0],
                f"transaction {tx.id} stopped as '{tx.status.split()[0]}': some of its "
                f"{len(tx.steps)} step(s) may be in force; inspect the node, then "
                f"netfix rollback --tx {tx.id} --force"))
    for bad in record.unreadable:
        hd.checked.append((JOURNAL_KNOB, bad.id))
        hd.items.append(DriftItem(hp.host, JOURNAL_KNOB, bad.id, INCOMPLETE,
                                  "a readable journal", "unreadable", bad.advice()))
    hd.notices = list(hp.notices)
    hd.pending = list(hp.pending)
    return hd


# Beside the profile's facts: the journal records that may be in force, what classify
# compares the node with.
READS = journal.needs(in_force=True)


def check_host(host: Host, profile: Profile) -> HostDrift:
    """One round trip: facts and journal together, then classify. Never raises."""
    start = time.time()
    try:
        hp, facts = engine.diff_host(host, profile, extra=READS)
        started = {w.NAME: t for w in writers.modules()
                   if hasattr(w, "started") and (t := w.started(facts)) is not None}
        hd = classify(hp, journal.from_facts(facts),
                      started=started)
    except Exception as e:
        # Whatever went wrong on this host (unreachable, not root, a torn read, a paramiko
        # error) is this host's error: it must neither stop the other hosts' checks nor
        # ever read as "no drift".
        msg = str(e) or type(e).__name__
        hd = HostDrift(host.name, profile.name, error=msg, checked_at=time.time())
    hd.duration = time.time() - start
    return hd


Progress = Callable[[str], None]


def _describe(hd: HostDrift) -> str:
    if hd.error:
        return f"ERROR {hd.error}"
    return f"{len(hd.items)} drift item(s)" if hd.items else "no drift"


def check(hosts: list[Host], profiles: engine.Profiles | str | None = None,
          progress: Progress | None = None) -> DriftReport:
    """Check every host in parallel. `profiles` is a profile name overriding the inventory,
    or an engine.Profiles already loaded (a watcher loads them once)."""
    loaded = profiles if isinstance(profiles, engine.Profiles) else engine.Profiles(profiles)
    for h in hosts:  # a bad profile is the operator's error: say so before any node is read
        loaded.for_host(h)
    report = DriftReport([], profile=loaded.override)

    def one(host: Host) -> HostDrift:
        hd = check_host(host, loaded.for_host(host))
        if progress:
            progress(f"{host.name}: {_describe(hd)}")
        return hd

    report.hosts = engine.parallel(hosts, one)
    report.finished = time.time()
    return report


def watch(hosts: list[Host], profile: str | None, interval: float, count: int | None,
          on_report: Callable[[DriftReport, int], None], progress: Progress | None = None,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> DriftReport:
    """Check every `interval` seconds (start to start) until `count` checks are done, or
    forever. Read-only by construction: it only calls check(). Returns the last report."""
    profiles = engine.Profiles(profile)
    n = 0
    while True:
        started = clock()
        report = check(hosts, profiles, progress)
        n += 1
        on_report(report, n)
        if count is not None and n >= count:
            return report
        sleep(max(0.0, interval - (clock() - started)))
