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

from netfix.plan import Op
from netfix.status import TxStatus

STATE_DIR = "/var/lib/netfix"

# Exit codes of the apply script
OK, SETUP, LOCKED, STALE, FAILED, RESTORE_FAILED = 0, 10, 11, 12, 13, 14
REVERTING = 15  # a rollback found the automatic revert of its target already started

# Statuses of a transaction applied with --confirm (the first word of its status file)
UNCONFIRMED = TxStatus.UNCONFIRMED  # changes in place, automatic revert armed
REVERTED = TxStatus.REVERTED  # the node reverted it by itself: never confirmed in time


@dataclass(kw_only=True)
class Step(Op):
    """An Op plus the names the operator knows it by."""

    knob: str
    target: str


@dataclass
class Tx:
    id: str
    kind: str  # "apply" or "rollback"
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


_PRELUDE = r"""set -u
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022
D=%(state)s
TXD=%(txdir)s
TX=%(tx)s
E="$D/.err.$$"
mkdir -p "$TXD" && chmod 700 "$D" || { echo "ERROR cannot create $D"; exit 10; }
command -v flock >/dev/null 2>&1 || { echo "ERROR flock not found (install util-linux)"; exit 10; }
exec 9>>"$D/lock"
flock -w 30 9 || { echo "LOCKED another netfix run holds $D/lock"; exit 11; }
rm -f "$D"/.err.*  # under the lock none is in use: what is left is from a killed run
# Staged scripts and outputs of runs killed on the node (no run lasts an hour).
find "$D/run" -type f -mmin +60 -delete 2>/dev/null
P="$TXD/$TX.progress"
cur() { tr -s ' \t\n' '   ' < "$1" | sed 's/^ *//; s/ *$//'; }
# The same value into $CUR with one fork (cat), not three (a subshell, tr, sed): the fields
# split on blanks and joined by one space, as cur squeezes and trims them.
curv() { CUR=$(cat -- "$1") || CUR=""
  case $- in *f*) set -- $CUR;; *) set -f; set -- $CUR; set +f;; esac; CUR="$*"; }
fsum() { if [ -L "$1" ] && [ "$(readlink "$1")" = /dev/null ]; then echo masked
  elif [ -f "$1" ]; then sha256sum < "$1" | cut -c1-64; else echo absent; fi; }
# dirname and basename of netfix's own paths (absolute, no trailing slash) without a fork.
dn() { case $1 in */*) DN=${1%%/*}; DN=${DN:-/};; *) DN=.;; esac; }
wval() { { printf '%%s\n' "$2" > "$1"; } 2>"$E" && curv "$1" && [ "$CUR" = "$2" ] || {
  echo "$1: kernel kept '$(cur "$1" 2>/dev/null)' instead of '$2': $(cat "$E" 2>/dev/null)" > "$E.why"
  return 1; }; }
mkd() { [ -d "$1" ] && return 0; dn "$1"; mkd "$DN" && mkdir "$1" &&
  printf '%%s\n' "$1" >> "$TXD/$TX.dirs"; }
rmdirs() { [ -f "$TXD/$1.dirs" ] && sort -r "$TXD/$1.dirs" | while read -r d; do
  rmdir "$d" 2>/dev/null; done; return 0; }
wfile() { dn "$1"; t="$DN/.${1##*/}.netfix.$$"
  { mkd "$DN" && printf '%%s' "$2" | base64 -d > "$t" &&
    { [ ! -e "$1" ] || chmod --reference="$1" "$t"; } && sync "$t" && mv -f "$t" "$1" &&
    dn "$1" && sync "$DN"; } 2>"$E" || { rm -f "$t"; echo "$1: $(cat "$E")" > "$E.why"; return 1; }; }
wcmd() { ( set_$1 "$2" ) >"$E" 2>&1 && [ "$(read_$1 | tr -s ' \t\n' '   ' | sed 's/^ *//; s/ *$//')" = "$2" ] || {
  echo "step $1: state is '$(read_$1 2>/dev/null)' instead of '$2': $(cat "$E" 2>/dev/null)" > "$E.why"; return 1; }; }
rmfile() { { rm -f "$1" && dn "$1" && sync "$DN"; } 2>"$E" || { echo "$1: $(cat "$E")" > "$E.why"; return 1; }; }
status() { printf '%%s %%s\n' "$2" "$(date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ)" > "$TXD/$1.status.tmp" &&
  sync "$TXD/$1.status.tmp" && mv -f "$TXD/$1.status.tmp" "$TXD/$1.status"; }
S=0
stale() { printf 'STALE\t%%s\t%%s\n' "$1" "$2"; S=1; }
"""


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


# gv PATH: PATH's value out of $G (`grep -aH '' -- paths`: one "path:line" per line) into
# $CUR, squeezed and trimmed as cur does, with builtins only.
_GREP_VALUES = r"""NL='
'
gv() { CUR=""; _r="$G"
  while [ -n "$_r" ]; do _l=${_r%%"$NL"*}
    case $_r in *"$NL"*) _r=${_r#*"$NL"};; *) _r="";; esac
    case $_l in "$1:"*) CUR="$CUR ${_l#"$1:"}";; esac; done
  case $- in *f*) set -- $CUR;; *) set -f; set -- $CUR; set +f;; esac; CUR="$*"; }
"""

# undo_from K: undo steps K..1, newest first; R=1 when one of them failed.
_UNDO_FROM = r"""undo_from() { R=0; i=$1
  while [ "$i" -ge 1 ]; do undo_$i || { R=1; printf 'UNDO-FAILED\t%s\t%s\n' "$i" "$(cat "$E.why")"; }
    i=$((i-1)); done; }"""

# Set by fault-injection tests only: the apply script stops after that step, holding the
# lock, so a test can kill it or power the node off at a known point.
PAUSE_ENV = "NETFIX_TEST_PAUSE_AFTER_STEP"


def script(tx: Tx, check: bool = True, marks: dict[str, str] | None = None,
           state_dir: str = STATE_DIR, arm: str | None = None, pre: str | None = None,
           rmdirs: str | None = None) -> str:
    """The apply script for `tx`. `check=False` skips the before-state check (--force).
    `marks` sets other transactions' status on success (a rollback marks its target).
    `arm` (from arm_script) arms an automatic revert once every step is made; the status is
    then applied-unconfirmed, and a failure to arm undoes the steps. `pre` is sh run under
    the lock after the check, before the journal is written (a rollback disarms there).
    `rmdirs`: once every step is made, remove the directories that transaction created,
    where they are empty again (a rollback names its target).

    Before step i the script appends i to <id>.progress (synced before file steps), so the
    recovery of an interrupted run knows which steps may have been made."""
    q = shlex.quote
    out = [_PRELUDE % {"state": q(state_dir), "txdir": q(f"{state_dir}/tx"), "tx": q(tx.id)}]
    out += _functions(tx)
    if check:
        values = list(dict.fromkeys(s.path for s in tx.steps if s.kind == "value"))
        if values:  # every value read by one grep, not one cat each (a fork per value)
            out.append(_GREP_VALUES + "G=$(grep -aH '' -- "
                       + " ".join(q(p) for p in values) + " 2>/dev/null)")
        for i, s in enumerate(tx.steps, 1):
            if s.kind == "cmd":
                out.append(f'x=$(read_{i} 2>/dev/null | tr -s " \\t\\n" "   " | sed "s/^ *//; s/ *$//"); '
                           f'[ "$x" = {q(s.old or "")} ] || stale {q(s.path)} "$x"')
            elif s.kind == "value":
                out.append(f'gv {q(s.path)}; '
                           f'[ "$CUR" = {q(s.old or "")} ] || stale {q(s.path)} "$CUR"')
            else:
                out.append(f'x=$(fsum {q(s.path)}); [ "$x" = {q(sha(s.old))} ] || '
                           f'stale {q(s.path)} "$x"')
        out.append('[ "$S" = 0 ] || exit 12')
    if pre:
        out.append(pre)
    record = base64.b64encode(tx.record()).decode()
    out.append(': > "$P" && sync "$P" || { echo "ERROR cannot write $P"; exit 10; }')
    out.append(f'wfile "$TXD/$TX.json" {q(record)} || {{ echo "ERROR journal: $(cat "$E.why")";'
               " exit 10; }")
    out.append('status "$TX" applying || { echo "ERROR cannot write journal status"; exit 10; }')
    out.append(_UNDO_FROM)
    out.append(r"""fail() { printf 'FAILED\t%s\t%s\n' "$1" "$(cat "$E.why" 2>/dev/null)"
  undo_$1 2>/dev/null  # best effort: a failed write or mv leaves its target as it was
  undo_from $(($1-1)); rmdirs "$TX"
  if [ $R = 0 ]; then status "$TX" failed-restored; rm -f "$E" "$E.why"; exit 13; fi
  status "$TX" failed-restore-incomplete; exit 14; }""")
    pause = os.environ.get(PAUSE_ENV, "")
    for i, s in enumerate(tx.steps, 1):
        # Only a file step must find its mark on disk after a power cut: live values do
        # not survive one anyway, and a sync per value would cost a fork each.
        mark = f'echo {i} >> "$P"' + (' && sync "$P"' if s.kind == "file" else "")
        out.append(f"{mark} && {_do(s, i, s.new)} || fail {i}")
        if pause == str(i):
            out.append('echo "$$" > "$TXD/$TX.paused"; sleep 600')
    final = "applied"
    if arm:
        out.append(f"{arm}\narm || fail {len(tx.steps)}")
        final = f'"{UNCONFIRMED} $ARMED"'  # arm() says how: "revert in 30s by pid 123"
    if rmdirs:
        out.append(f"rmdirs {q(rmdirs)}")
    for other, state in (marks or {}).items():
        out.append(f"status {q(other)} {q(state)}")
    out.append(f'status "$TX" {final}; rm -f "$E" "$E.why"; echo "DONE $TX"')
    return "\n".join(out) + "\n"


INTERRUPTED = TxStatus.INTERRUPTED
INTERRUPTED_INCOMPLETE = TxStatus.INTERRUPTED_INCOMPLETE


def recover_script(tx: Tx, state_dir: str = STATE_DIR) -> str:
    """Finish a transaction found `applying` the safe way: under the lock (so it is not
    running), undo every step its progress file says may have been made, newest first.
    Prints RECOVERED/RECOVER-INCOMPLETE <id> <steps undone>, or NOT-INTERRUPTED <id>."""
    q = shlex.quote
    out = [_PRELUDE % {"state": q(state_dir), "txdir": q(f"{state_dir}/tx"), "tx": q(tx.id)}]
    out.append('read -r st _ < "$TXD/$TX.status" 2>/dev/null || st=""\n'
               '[ "$st" = applying ] || { echo "NOT-INTERRUPTED $TX $st"; exit 0; }')
    out += _functions(tx)
    out.append(_UNDO_FROM)
    # No progress file: written by a netfix that kept none; every step may have been made.
    out.append(f'K={len(tx.steps)}; if [ -f "$P" ]; then K=0; while read -r k; do '
               'case "$k" in *[!0-9]*|"") ;; *) K=$k;; esac; done < "$P"; fi')
    out.append(f'undo_from "$K"; rmdirs "$TX"; rm -f "$E" "$E.why" "$TXD/$TX.paused"\n'
               f'if [ $R = 0 ]; then status "$TX" "{INTERRUPTED}"; echo "RECOVERED $TX $K"\n'
               f'else status "$TX" "{INTERRUPTED_INCOMPLETE}"; echo "RECOVER-INCOMPLETE $TX $K"; fi')
    return "\n".join(out) + "\n"


def inverse(tx: Tx, rollback_id: str, current: dict[str, str | None] | None = None) -> Tx:
    """The rollback of `tx`: its steps reversed, old and new swapped. With `current`
    (path -> value found now, for --force) the found value is what gets recorded as old."""
    steps = []
    for s in reversed(tx.steps):
        found = current[s.path] if current and s.path in current else s.new
        steps.append(replace(s, old=found, new=s.old))
    return Tx(rollback_id, "rollback", tx.host, tx.profile, steps, rolls_back=tx.id)


def journal_script(state_dir: str = STATE_DIR) -> str:
    return f"""for f in {shlex.quote(state_dir)}/tx/*.json; do [ -f "$f" ] || continue
  s=$(head -n1 "${{f%.json}}.status" 2>/dev/null) || s=never-started
  b=${{f##*/}}; echo "TX ${{b%.json}} $s"
  base64 -w0 < "$f"; echo; done"""


@dataclass
class Unreadable:
    """A journal file that does not parse: its changes may be live, and netfix cannot
    undo them by itself. Reported by history, drift and rollback, never skipped."""

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


def parse_journal(output: str) -> Journal:
    journal = Journal([])
    lines = output.splitlines()
    for head, body in zip(lines[::2], lines[1::2], strict=False):
        if not head.startswith("TX "):
            continue
        parts = head.split(" ", 2)
        status = parts[2] if len(parts) > 2 else ""
        try:
            journal.txs.append(Tx.from_record(base64.b64decode(body), status=status or
                                              "unknown"))
        except ValueError as e:  # JSONDecodeError and binascii.Error are ValueErrors
            journal.unreadable.append(Unreadable(parts[1], status, f"not JSON: {e}"))
        except (TypeError, KeyError, AttributeError) as e:
            journal.unreadable.append(Unreadable(parts[1], status, "not a netfix journal "
                                                 f"record: {type(e).__name__} {e}"))
    journal.txs.sort(key=lambda t: (t.time, t.id))
    return journal


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
    """sh defining `arm`, run by the apply script after its last step (see script(arm=)).
    On success it sets ARMED to a short description for the status line."""
    q = shlex.quote
    rid = new_id()
    revert = script(inverse(tx, rid), check=False, marks={tx.id: f"{REVERTED} {rid}"},
                    state_dir=state_dir, rmdirs=tx.id)
    p = _revert_paths(tx.id, state_dir)
    runner = (f"mv {q(p['sh'])} {q(p['run'])} 2>/dev/null || exit 0; "
              f"sh {q(p['run'])} > {q(p['log'])} 2>&1; rm -f {q(p['run'])} {q(p['pid'])} "
              f"{q(p['unit'])}")
    unit = f"netfix-revert-{tx.id}"
    # The sleeper must not keep fd 9: it holds the node lock, which the revert itself and
    # any confirm need, and it must not keep the SSH session's pipes open either.
    sleeper = f"echo $$ > {q(p['pid'])}; sleep {int(seconds)}; {runner}"
    why = f'echo "cannot arm the automatic revert: $1" > "$E.why"; rm -f {q(p["sh"])}'
    return f"""armfail() {{ {why}; return 1; }}
arm() {{ wfile {q(p['sh'])} {q(base64.b64encode(revert.encode()).decode())} || return 1
  if [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v systemd-run >/dev/null 2>&1; then
    systemd-run --quiet --collect --unit={q(unit)} --on-active={int(seconds)}s --timer-property=AccuracySec=100ms /bin/sh -c {q(runner)} 2>"$E" || {{ armfail "systemd-run: $(cat "$E")"; return 1; }}
    echo {q(unit + ".timer")} > {q(p['unit'])}; ARMED="revert in {int(seconds)}s by {unit}.timer"
  else
    command -v setsid >/dev/null 2>&1 || {{ armfail "setsid not found (util-linux)"; return 1; }}
    rm -f {q(p['pid'])}
    setsid sh -c {q(sleeper)} </dev/null >/dev/null 2>&1 9>&- &
    n=0; while [ ! -s {q(p['pid'])} ] && [ $n -lt 50 ]; do sleep 0.1 2>/dev/null || sleep 1; n=$((n+1)); done
    [ -s {q(p['pid'])} ] || {{ armfail "the detached sleeper did not start"; return 1; }}
    ARMED="revert in {int(seconds)}s by pid $(cat {q(p['pid'])})"
  fi; }}"""


# disarm ID: 0 = disarmed; 1 = nothing armed any more (the revert started, or ran).
_DISARM = r"""disarm() { mv "$TXD/$1.revert.sh" "$TXD/$1.revert.off" 2>/dev/null || return 1
  if [ -f "$TXD/$1.revert.unit" ]; then systemctl stop "$(cat "$TXD/$1.revert.unit")" >/dev/null 2>&1; fi
  p=$(cat "$TXD/$1.revert.pid" 2>/dev/null)
  case "$p" in ""|*[!0-9]*) ;; *)  # only our sleeper: after a reboot the pid may be anyone's
    tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF "$1.revert" && kill -- "-$p" 2>/dev/null;; esac
  rm -f "$TXD/$1.revert.off" "$TXD/$1.revert.pid" "$TXD/$1.revert.unit"; }"""


def disarm_script(tx_id: str) -> str:
    """For script(pre=...): a rollback of an unconfirmed transaction takes over from its
    armed revert, or stops with REVERTING when the node is already reverting it."""
    q = shlex.quote
    stop = f"{{ echo REVERTING {q(tx_id)}; exit {REVERTING}; }}"
    # .revert.run exists from the moment the timer took the script until the revert is
    # done; the revert may be waiting for the lock this script holds.
    return (f'{_DISARM}\nif [ -f "$TXD/"{q(tx_id)}.revert.sh ]; then disarm {q(tx_id)} || {stop}\n'
            f'elif [ -f "$TXD/"{q(tx_id)}.revert.run ]; then {stop}; fi')


def confirm_script(tx_id: str | None = None, state_dir: str = STATE_DIR) -> str:
    """Under the node lock: confirm `tx_id` (or every applied-unconfirmed transaction).
    Prints CONFIRMED/REVERTING/STATUS/NOTFOUND lines, then @@JOURNAL and the journal."""
    q = shlex.quote
    prelude = _PRELUDE % {"state": q(state_dir), "txdir": q(f"{state_dir}/tx"),
                          "tx": q(tx_id or "")}
    return prelude + _DISARM + f"""
one() {{ st=$(head -n1 "$TXD/$1.status" 2>/dev/null)
  case "$st" in {UNCONFIRMED}*)
    if disarm "$1"; then status "$1" "applied confirmed" && echo "CONFIRMED $1"
    else echo "REVERTING $1"; fi;;
  *) printf 'STATUS %s %s\\n' "$1" "$st";; esac; }}
if [ -n "$TX" ]; then
  if [ -f "$TXD/$TX.json" ]; then one "$TX"; else echo "NOTFOUND $TX"; fi
else
  for f in "$TXD"/*.status; do [ -f "$f" ] || continue
    case "$(head -n1 "$f")" in {UNCONFIRMED}*) one "$(basename "$f" .status)";; esac; done
fi
echo @@JOURNAL
{journal_script(state_dir)}
"""


def outcome_script(tx_id: str, state_dir: str = STATE_DIR) -> str:
    """Read-only, after waiting for the node lock (a detached run may still hold it): the
    status of one transaction, `absent` when the node never started it."""
    q = shlex.quote
    tx = f"{state_dir}/tx/{tx_id}"
    return (f"exec 9>>{q(state_dir + '/lock')} 2>/dev/null && flock -w 300 9\n"
            f"if [ -f {q(tx + '.status')} ]; then head -n1 {q(tx + '.status')}; "
            "else echo absent; fi\n")


def status_script(tx_id: str, state_dir: str = STATE_DIR) -> str:
    """Read-only: the status line of one transaction (what apply's reconnect asks)."""
    return f"head -n1 {shlex.quote(f'{state_dir}/tx/{tx_id}.status')}\n"
