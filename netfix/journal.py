"""On-node transactions: the journal record and the one sh script that applies it.

The script runs on the node under an flock, checks that every target still holds the
value the plan saw, writes the journal (with every old value and the exact old content
of every file), then makes the changes. If any step fails it undoes the steps already
done, newest first, and records that. The journal lives on the node so a rollback needs
nothing from the controller that applied it.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import secrets
import shlex
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

from netfix import sh
from netfix.errors import NetfixError
from netfix.facts import Facts, Needs
from netfix.plan import Op
from netfix.status import TxStatus

STATE_DIR = "/var/lib/netfix"

# Exit codes of the apply script
OK, SETUP, LOCKED, STALE, FAILED, RESTORE_FAILED = 0, 10, 11, 12, 13, 14
REVERTING = 15  # a rollback found the automatic revert of its target already started

# Statuses of a transaction applied with --confirm (the first word of its status file)
UNCONFIRMED = TxStatus.UNCONFIRMED  # changes in place, automatic revert armed
REVERTED = TxStatus.REVERTED  # the node reverted it by itself: never confirmed in time


class TxKind(StrEnum):
    """What a journal record is. A revert was recorded as a rollback before netfix told
    them apart: such a record still reads, as a rollback."""

    APPLY = "apply"
    ROLLBACK = "rollback"  # `netfix rollback` (or agent uninstall) of `rolls_back`
    REVERT = "revert"  # the automatic revert of an unconfirmed `rolls_back`


@dataclass(kw_only=True)
class Step(Op):
    """An Op plus the names the operator knows it by."""

    knob: str
    target: str


@dataclass
class Tx:
    id: str
    kind: str  # a TxKind (str: a record from a newer netfix may hold another)
    host: str
    profile: str | None
    steps: list[Step]
    rolls_back: str | None = None
    fingerprint: str = ""
    time: float = field(default_factory=time.time)
    controller: str = field(default_factory=socket.gethostname)
    user: str = field(default_factory=getpass.getuser)
    status: str = ""  # read back from the node, not part of the record written

    @property
    def state(self) -> TxStatus | None:
        """The status line's first word as a TxStatus (None: no or an unknown status)."""
        return TxStatus.of(self.status)

    def record(self) -> bytes:
        data = asdict(self)
        data.pop("status")
        return json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_record(cls, raw: bytes, status: str = "") -> Tx:
        data = json.loads(raw)
        data["steps"] = [Step(**s) for s in data["steps"]]
        return cls(**data, status=status)


def new_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def sha(b64: str | None) -> str:
    if b64 is None:
        return "absent"
    return hashlib.sha256(base64.b64decode(b64)).hexdigest()


def mark(rtx: Tx) -> str:
    """The status the rollback or revert `rtx` gives its target once it is applied (the
    rest of the target's status line is the time)."""
    undone = REVERTED if rtx.kind == TxKind.REVERT else TxStatus.ROLLED_BACK
    return f"{undone} {rtx.id}"


def _tx(state_dir: str, tx_id: str, body: list[str], **params: object) -> str:
    """A transaction script: its parameters, the prelude functions it uses, tx.sh (lock,
    journal and step functions), then `body` (netfix/sh files and generated lines)."""
    text = "\n".join([sh.load("tx.sh"), *body]) + "\n"
    return sh.assign(D=state_dir, TXD=f"{state_dir}/tx", TX=tx_id, **params) + \
        sh.prelude(text) + text


def _do(s: Step, i: int, value: str | None) -> str:
    q = shlex.quote
    if s.kind == "value":
        return f"wval {q(s.path)} {q(value or '')}"
    if s.kind == "cmd":
        return f"wcmd {i} {q(value or '')}"
    if value is None:
        return f"rmfile {q(s.path)}"
    return f"wfile {q(s.path)} {q(value)}"


def _functions(tx: Tx) -> list[str]:
    """read_i/set_i of the cmd steps and undo_i of every step: the apply script and the
    recovery of an interrupted one undo with the same code."""
    out = []
    for i, s in enumerate(tx.steps, 1):
        if s.kind == "cmd":
            out.append(f"read_{i}() {{ {s.read}\n}}")
            out.append(f"set_{i}() {{ {s.set}\n}}")
        # A value whose file is gone (its module unloaded, e.g. by a reboot since) holds
        # nothing of ours any more: there is nothing to put back.
        guard = f"[ -e {shlex.quote(s.path)} ] || return 0; " if s.kind == "value" else ""
        out.append(f"undo_{i}() {{ {guard}{_do(s, i, s.old)}; }}")
    return out


# Set by fault-injection tests only: the apply script stops after that step, holding the
# lock, so a test can kill it or power the node off at a known point.
PAUSE_ENV = "NETFIX_TEST_PAUSE_AFTER_STEP"
# Likewise: a rollback or revert stops after its own final status, before its target's mark.
PAUSE_MARKS_ENV = "NETFIX_TEST_PAUSE_BEFORE_MARKS"
PAUSE = 'echo "$$" > "$TXD/$TX.paused"; sleep 600'


def apply_script(tx: Tx, arm: str | None = None, force: bool = False,
                 state_dir: str = STATE_DIR) -> str:
    """The transaction that applies `tx`. `arm` (from arm_script) arms an automatic revert
    once every step is made; the status is then applied-unconfirmed, and a failure to arm
    undoes the steps. `force` skips the before-state check."""
    return _transaction(tx, check=not force, arm=arm, state_dir=state_dir)


def rollback_script(rtx: Tx, target: Tx, force: bool = False,
                    state_dir: str = STATE_DIR) -> str:
    """The transaction `rtx` (journal.inverse of `target`) that rolls `target` back: on
    success it marks `target` rolled back and removes the directories `target` created
    where they are empty again. An unconfirmed target still has its revert armed: the
    rollback disarms it under the same lock first (or stops with REVERTING when the node
    is already reverting it), so the two can never both run."""
    pre = disarm_script(target.id) if target.state is TxStatus.UNCONFIRMED else None
    return _transaction(rtx, check=not force, marks={target.id: mark(rtx)},
                        pre=pre, rmdirs=target.id, state_dir=state_dir)


def revert_script(tx: Tx, rid: str, state_dir: str = STATE_DIR) -> str:
    """The automatic revert armed by `apply --confirm`: the inverse of `tx` as transaction
    `rid` (kind revert), unchecked (whatever the steps left is what it undoes), marking
    `tx` reverted."""
    rtx = inverse(tx, rid, kind=TxKind.REVERT)
    return _transaction(rtx, check=False, marks={tx.id: mark(rtx)}, rmdirs=tx.id,
                        state_dir=state_dir)


def _content(b64: str) -> tuple[str, str]:
    """How a file step's content reaches the node: ("wf", the bytes as a quoted sh word)
    when they are text (UTF-8 without NUL: a single-quoted word holds those bytes exactly
    and printf '%s' writes them without a fork), else ("wf64", the base64)."""
    data = base64.b64decode(b64)
    try:
        if b"\0" not in data:
            return "wf", shlex.quote(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    return "wf64", shlex.quote(b64)


def _literal(line: str, content: str) -> str:
    """`line`, preceded by a shellcheck directive when the quoted content in it holds what
    shellcheck would take for an expansion the author forgot (SC2016)."""
    if "$" in content or "`" in content:
        return "# shellcheck disable=SC2016 # file content, not sh\n" + line
    return line


def _runs(steps: list[Step]) -> list[list[tuple[int, Step]]]:
    """The steps, numbered from 1, in runs of consecutive steps of one kind (a cmd step is
    a run of its own): a run of values is read back with one grep, a run of files has its
    directories synced once. A value written twice starts a new run: each write is read
    back before the next one of the same file."""
    runs: list[list[tuple[int, Step]]] = []
    for i, s in enumerate(steps, 1):
        last = runs[-1] if runs else []
        if last and last[0][1].kind == s.kind != "cmd" and not (
                s.kind == "value" and any(o.path == s.path for _, o in last)):
            last.append((i, s))
        else:
            runs.append([(i, s)])
    return runs


def _check(tx: Tx) -> list[str]:
    """The before-state check: every value read by one grep and every file hashed by one
    sha256sum (not a fork or two per target), compared with what the plan saw."""
    q = shlex.quote
    out = [sh.load("tx-check.sh")]
    values = list(dict.fromkeys(s.path for s in tx.steps if s.kind == "value"))
    if values:
        out.append("G=$(grep -aH '' -- " + " ".join(map(q, values)) + " 2>/dev/null)")
    # sha256sum escapes a name holding a backslash or a newline: those get fsum's fork
    hashed = list(dict.fromkeys(s.path for s in tx.steps if s.kind == "file"
                                and not any(c in s.path for c in "\\\n")))
    if hashed:
        out.append("H=$(sha256sum -- " + " ".join(map(q, hashed)) + " 2>/dev/null); HR=$H")
    for i, s in enumerate(tx.steps, 1):
        if s.kind == "cmd":  # one fork (the subshell), normalised by builtins
            out.append(f'x=$(read_{i} 2>/dev/null); nf_norm "$x"; '
                       f'[ "$NORM" = {q(s.old or "")} ] || stale {q(s.path)} "$NORM"')
        elif s.kind == "value":
            out.append(f'gv {q(s.path)}; '
                       f'[ "$CUR" = {q(s.old or "")} ] || stale {q(s.path)} "$CUR"')
        elif s.path in hashed:
            out.append(f'fh {q(s.path)}; [ "$CUR" = {q(sha(s.old))} ] || '
                       f'stale {q(s.path)} "$CUR"')
        else:
            out.append(f'x=$(fsum {q(s.path)}); [ "$x" = {q(sha(s.old))} ] || '
                       f'stale {q(s.path)} "$x"')
    out.append('[ "$S" = 0 ] || exit 12')
    return out


def _steps(tx: Tx) -> list[str]:
    """The step lines, run by run. Before step i the script appends i to <id>.progress
    (put on disk before a file step's change), so the recovery of an interrupted run knows
    which steps may have been made. A run of values is written, then read back with one
    grep: a value the kernel did not keep fails its step, and the whole run is undone. A
    run of files is synced once per temp file (with the mark) and once for the directories."""
    q = shlex.quote
    pause = os.environ.get(PAUSE_ENV, "")
    out = []
    for run in _runs(tx.steps):
        last = run[-1][0]
        for i, s in run:
            if s.kind == "value":
                do = f"wv {q(s.path)} {q(s.new or '')}"
            elif s.kind == "cmd":
                do = _do(s, i, s.new)
            elif s.new is None:
                do = f"frm {q(s.path)}"
            else:
                func, content = _content(s.new)
                do = f"{func} {q(s.path)} {content}"
            out.append(_literal(f'{{ echo {i} >> "$P" && {do}; }} || fail {i}', do))
            if pause == str(i):
                out.append(PAUSE)
        kind = run[0][1].kind
        if kind == "value":
            paths = list(dict.fromkeys(s.path for _, s in run))
            out.append("G=$(grep -aH '' -- " + " ".join(map(q, paths)) + " 2>/dev/null)")
            out += [f"vchk {q(s.path)} {q(s.new or '')} || fail {i} {last}" for i, s in run]
        elif kind == "file":
            dirs = list(dict.fromkeys(os.path.dirname(s.path) or "." for _, s in run))
            out.append(f"dsync {' '.join(map(q, dirs))} || fail {last}")
    return out


def _transaction(tx: Tx, *, check: bool, state_dir: str, marks: dict[str, str] | None = None,
                 arm: str | None = None, pre: str | None = None,
                 rmdirs: str | None = None) -> str:
    """The one transaction script the three builders above configure. `marks` sets other
    transactions' status on success; `pre` is sh run under the lock after the check,
    before the journal is written; `rmdirs` names the transaction whose created
    directories go once every step is made.

    The marks come after this transaction's own final status, never before: a run cut
    between the two leaves it applied (complete) and its target unmarked, which readers
    complete from the record's `rolls_back` (parse_journal), and the next run that takes
    the lock writes from <id>.marks (tx.sh, begin). The other way round, a cut would leave
    the target marked undone while this transaction, still `applying`, gets undone by
    recovery: the target's values back in force under a status that says they are not."""
    q = shlex.quote
    out = _functions(tx) + (_check(tx) if check else [])
    if pre:
        out.append(pre)
    record = q(tx.record().decode())
    todo = "".join(f"{other} {state}\n" for other, state in (marks or {}).items())
    out.append(_literal(f"begin {record} {q(todo)}" if todo else f"begin {record}", record))
    out.append(sh.load("tx-undo.sh") + sh.load("tx-fail.sh"))
    out += _steps(tx)
    final = "applied"
    if arm:
        out.append(f"{arm}\narm || fail {len(tx.steps)}")
        final = f'"{UNCONFIRMED} $ARMED"'  # arm() says how: "revert in 30s by pid 123"
    if rmdirs:
        out.append(f"rmdirs {q(rmdirs)}")
    out.append(f'status "$TX" {final}')
    if marks and os.environ.get(PAUSE_MARKS_ENV):
        out.append(PAUSE)
    for other, state in (marks or {}).items():
        out.append(f"status {q(other)} {q(state)}")
    out.append('rm -f "$E" "$E.why" "$M"; echo "DONE $TX"')
    return _tx(state_dir, tx.id, out)


INTERRUPTED = TxStatus.INTERRUPTED
INTERRUPTED_INCOMPLETE = TxStatus.INTERRUPTED_INCOMPLETE


def recover_script(tx: Tx, state_dir: str = STATE_DIR) -> str:
    """Finish a transaction found `applying` the safe way: under the lock (so it is not
    running), undo every step its progress file says may have been made, newest first.
    Prints RECOVERED/RECOVER-INCOMPLETE <id> <steps undone>, or NOT-INTERRUPTED <id>."""
    out = [sh.load("recover-check.sh"), *_functions(tx),
           sh.load("tx-undo.sh") + sh.load("recover.sh")]
    return _tx(state_dir, tx.id, out, NF_NSTEPS=len(tx.steps))


def inverse(tx: Tx, rollback_id: str, current: dict[str, str | None] | None = None,
            kind: TxKind = TxKind.ROLLBACK) -> Tx:
    """The rollback (or revert) of `tx`: its steps reversed, old and new swapped. With
    `current` (path -> value found now, for --force) the found value is recorded as old."""
    steps = []
    for s in reversed(tx.steps):
        found = current[s.path] if current and s.path in current else s.new
        steps.append(replace(s, old=found, new=s.old))
    return Tx(rollback_id, kind, tx.host, tx.profile, steps, rolls_back=tx.id)


def journal_script(state_dir: str = STATE_DIR) -> str:
    return sh.render("journal.sh", TXD=f"{state_dir}/tx")


@dataclass
class Unreadable:
    """A journal file that does not parse: its changes may be live, and netfix cannot
    undo them by itself. Reported by history, and by drift and rollback unless its status
    says it was undone (they read only the records that may be in force)."""

    id: str
    status: str
    reason: str

    def advice(self, state_dir: str = STATE_DIR) -> str:
        return (f"journal file {state_dir}/tx/{self.id}.json is unreadable ({self.reason}; "
                f"status {self.status or 'unknown'}): netfix cannot undo that transaction. "
                f"Recover by hand: compare the node with its profile (netfix plan), fix what "
                f"differs, then move {self.id}.json and {self.id}.status out of "
                f"{state_dir}/tx")


@dataclass
class Journal:
    txs: list[Tx]
    unreadable: list[Unreadable] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # what reading it recovered
    # read with needs(in_force=True): id -> status line of the transactions whose records
    # were left on the node (undone, or the rollback or revert that undid one)
    undone: dict[str, str] = field(default_factory=dict)


class JournalChanged(NetfixError):
    """The journal listing did not add up: a record came or went while it was read."""


def parse_journal(output: str) -> Journal:
    """netfix/sh/journal.sh's output: TX lines, then the records' sizes and one blob."""
    heads: list[tuple[str, str]] = []  # (id, status line)
    sizes: list[int] = []
    blob = b""
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "TX":
            tx_id, _, status = rest.partition(" ")
            heads.append((tx_id, status))
        elif word == "SIZE" and rest.strip().isdigit():
            sizes.append(int(rest))
        elif word == "BLOB":
            blob = base64.b64decode(rest.strip())
    if len(sizes) != len(heads) or sum(sizes) != len(blob):
        # a record added or removed between the listing, stat and cat
        raise JournalChanged("the node's journal changed while it was read; run again")
    raws, pos = [], 0
    for n in sizes:
        raws.append(blob[pos:pos + n])
        pos += n
    return _journal([(tx_id, status, raw) for (tx_id, status), raw in zip(heads, raws,
                                                                           strict=True)])


def needs(state_dir: str = STATE_DIR, in_force: bool = False) -> Needs:
    """What the fact script reads for from_facts: no process of its own (see facts.sh j).
    `in_force`: only the records of transactions that may still be in force (facts.sh J),
    all drift needs; the others are in Journal.undone by status alone."""
    if in_force:
        return Needs(journals_in_force={f"{state_dir}/tx"})
    return Needs(journals={f"{state_dir}/tx"})


def from_facts(facts: Facts, state_dir: str = STATE_DIR) -> Journal:
    """The journal the fact script read with `needs(state_dir)`."""
    entries = []
    for path, status in facts.journal.items():
        parent, _, name = path.rpartition("/")
        if parent != f"{state_dir}/tx" or not name.endswith(".json"):
            continue
        raw = facts.files.get(path)
        if raw is None:  # listed, then gone before stat and cat read it
            raise JournalChanged("the node's journal changed while it was read; run again")
        entries.append((name[:-len(".json")], status, raw))
    found = _journal(entries)
    found.undone = {path.rpartition("/")[2][:-len(".json")]: status
                    for path, status in facts.journal_undone.items()}
    return found


def _journal(entries: list[tuple[str, str, bytes]]) -> Journal:
    """(id, status line, record bytes) per transaction: the Journal, odd records apart."""
    journal = Journal([])
    for tx_id, status, raw in entries:
        try:
            journal.txs.append(Tx.from_record(raw, status=status or "unknown"))
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            journal.unreadable.append(Unreadable(tx_id, status, f"not JSON: {e}"))
        except (TypeError, KeyError, AttributeError) as e:
            journal.unreadable.append(Unreadable(tx_id, status, "not a netfix journal "
                                                 f"record: {type(e).__name__} {e}"))
    journal.txs.sort(key=lambda t: (t.time, t.id))
    complete_marks(journal)
    return journal


UNDOES = (TxKind.ROLLBACK, TxKind.REVERT)


def complete_marks(journal: Journal) -> None:
    """A rollback or revert R writes its own final status before its target T's mark
    (_transaction): cut off between the two, R is applied and T still says applied. R being
    applied is what undid T, so T reads as R's mark, as it would have been written (the
    time: R's). The next run that takes the node lock writes it there (tx.sh). R ended any
    other way (applying, failed-restored, interrupted-restored...) leaves T as it says."""
    by_id = {t.id: t for t in journal.txs}
    for r in journal.txs:
        target = by_id.get(r.rolls_back or "")
        if (r.kind not in UNDOES or r.state is not TxStatus.APPLIED or target is None
                or target.state not in (TxStatus.APPLIED, TxStatus.UNCONFIRMED)):
            continue
        was = target.status.split()[0]
        target.status = " ".join([mark(r), *r.status.split()[1:2]])
        journal.notices.append(
            f"transaction {target.id} still said {was}, but {r.kind} {r.id} of it had "
            f"finished (cut off before marking it): read as {target.status}; the next "
            "netfix run that takes the node lock writes that mark")


# --------------------------------------------------------------------------- confirmed apply
#
# `apply --confirm N` leaves a revert armed on the node that needs neither Python nor the
# controller: <id>.revert.sh (an inverse transaction generated here) run after N seconds by
# a systemd timer where systemd is PID 1, else by a detached sleeper. Whoever renames
# <id>.revert.sh first wins: the timer renames it to .revert.run before running it, and
# confirm/rollback rename it away (under the lock) to disarm. rename is atomic, so a revert
# either runs completely or not at all, and never after a confirm succeeded.


def _revert_paths(tx_id: str, state_dir: str) -> dict[str, str]:
    base = f"{state_dir}/tx/{tx_id}.revert"
    return {k: f"{base}.{k}" for k in ("sh", "run", "log", "pid", "unit")}


def arm_script(tx: Tx, seconds: int, state_dir: str = STATE_DIR) -> str:
    """sh defining `arm`, run by the apply script after its last step (apply_script(arm=)).
    On success it sets ARMED to a short description for the status line."""
    q = shlex.quote
    rid = new_id()
    revert = revert_script(tx, rid, state_dir)
    p = _revert_paths(tx.id, state_dir)
    runner = (f"mv {q(p['sh'])} {q(p['run'])} 2>/dev/null || exit 0; "
              f"sh {q(p['run'])} > {q(p['log'])} 2>&1; rm -f {q(p['run'])} {q(p['pid'])} "
              f"{q(p['unit'])}")
    unit = f"netfix-revert-{tx.id}"
    sleeper = f"echo $$ > {q(p['pid'])}; sleep {int(seconds)}; {runner}"
    return sh.render("arm.sh", NF_ARM_SH=p["sh"], NF_ARM_PID=p["pid"], NF_ARM_UNITF=p["unit"],
                     NF_ARM_REVERT=base64.b64encode(revert.encode()).decode(),
                     NF_ARM_SECONDS=int(seconds), NF_ARM_UNIT=unit, NF_ARM_RUNNER=runner,
                     NF_ARM_SLEEPER=sleeper)


def disarm_script(tx_id: str) -> str:
    """For rollback_script: a rollback of an unconfirmed transaction takes over from its
    armed revert, or stops with REVERTING when the node is already reverting it."""
    return sh.render("disarm.sh", "disarm-pre.sh", NF_DISARM=tx_id)


def confirm_script(tx_id: str | None = None, state_dir: str = STATE_DIR) -> str:
    """Under the node lock: confirm `tx_id` (or every applied-unconfirmed transaction).
    Prints CONFIRMED/REVERTING/STATUS/NOTFOUND lines, then @@JOURNAL and the journal."""
    return _tx(state_dir, tx_id or "", [sh.load(f) for f in ("disarm.sh", "confirm.sh",
                                                                "journal.sh")])


def outcome_script(tx_id: str, state_dir: str = STATE_DIR) -> str:
    """Read-only, after waiting for the node lock (a detached run may still hold it): the
    status of one transaction, `absent` when the node never started it."""
    return sh.render("outcome.sh", D=state_dir, TXD=f"{state_dir}/tx", TX=tx_id)


def status_script(tx_id: str, state_dir: str = STATE_DIR) -> str:
    """Read-only: the status line of one transaction (what apply's reconnect asks)."""
    return sh.render("status.sh", TXD=f"{state_dir}/tx", TX=tx_id)
