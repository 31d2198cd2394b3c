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
import secrets
import shlex
import socket
import time
from dataclasses import asdict, dataclass, field

from netfix.plan import Op

STATE_DIR = "/var/lib/netfix"

# Exit codes of the apply script
OK, SETUP, LOCKED, STALE, FAILED, RESTORE_FAILED = 0, 10, 11, 12, 13, 14


@dataclass
class Step:
    """An Op plus the names the operator knows it by."""

    knob: str
    target: str
    kind: str
    path: str
    old: str | None
    new: str | None
    read: str | None = None
    set: str | None = None

    def op(self) -> Op:
        return Op(self.kind, self.path, self.old, self.new, self.read, self.set)


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


def _sha(b64: str | None) -> str:
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
cur() { tr -s ' \t\n' '   ' < "$1" | sed 's/^ *//; s/ *$//'; }
fsum() { if [ -L "$1" ] && [ "$(readlink "$1")" = /dev/null ]; then echo masked
  elif [ -f "$1" ]; then sha256sum < "$1" | cut -c1-64; else echo absent; fi; }
wval() { { printf '%%s\n' "$2" > "$1"; } 2>"$E" && [ "$(cur "$1")" = "$2" ] || {
  echo "$1: kernel kept '$(cur "$1" 2>/dev/null)' instead of '$2': $(cat "$E" 2>/dev/null)" > "$E.why"
  return 1; }; }
wfile() { t="$(dirname "$1")/.$(basename "$1").netfix.$$"
  { mkdir -p "$(dirname "$1")" && printf '%%s' "$2" | base64 -d > "$t" &&
    { [ ! -e "$1" ] || chmod --reference="$1" "$t"; } && sync "$t" && mv -f "$t" "$1" &&
    sync "$(dirname "$1")"; } 2>"$E" || { rm -f "$t"; echo "$1: $(cat "$E")" > "$E.why"; return 1; }; }
wcmd() { ( set_$1 "$2" ) >"$E" 2>&1 && [ "$(read_$1 | tr -s ' \t\n' '   ' | sed 's/^ *//; s/ *$//')" = "$2" ] || {
  echo "step $1: state is '$(read_$1 2>/dev/null)' instead of '$2': $(cat "$E" 2>/dev/null)" > "$E.why"; return 1; }; }
rmfile() { { rm -f "$1" && sync "$(dirname "$1")"; } 2>"$E" || { echo "$1: $(cat "$E")" > "$E.why"; return 1; }; }
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


def script(tx: Tx, check: bool = True, marks: dict[str, str] | None = None,
           state_dir: str = STATE_DIR) -> str:
    """The apply script for `tx`. `check=False` skips the before-state check (--force).
    `marks` sets other transactions' status on success (a rollback marks its target)."""
    q = shlex.quote
    out = [_PRELUDE % {"state": q(state_dir), "txdir": q(f"{state_dir}/tx"), "tx": q(tx.id)}]
    for i, s in enumerate(tx.steps, 1):
        if s.kind == "cmd":
            out.append(f"read_{i}() {{ {s.read}\n}}")
            out.append(f"set_{i}() {{ {s.set}\n}}")
    if check:
        for i, s in enumerate(tx.steps, 1):
            if s.kind == "cmd":
                out.append(f'x=$(read_{i} 2>/dev/null | tr -s " \\t\\n" "   " | sed "s/^ *//; s/ *$//"); '
                           f'[ "$x" = {q(s.old or "")} ] || stale {q(s.path)} "$x"')
            elif s.kind == "value":
                out.append(f'x=$(cur {q(s.path)} 2>/dev/null); '
                           f'[ "$x" = {q(s.old or "")} ] || stale {q(s.path)} "$x"')
            else:
                out.append(f'x=$(fsum {q(s.path)}); [ "$x" = {q(_sha(s.old))} ] || '
                           f'stale {q(s.path)} "$x"')
        out.append('[ "$S" = 0 ] || exit 12')
    record = base64.b64encode(tx.record()).decode()
    out.append(f'wfile "$TXD/$TX.json" {q(record)} || {{ echo "ERROR journal: $(cat "$E.why")";'
               " exit 10; }")
    out.append('status "$TX" applying || { echo "ERROR cannot write journal status"; exit 10; }')
    for i, s in enumerate(tx.steps, 1):
        out.append(f"undo_{i}() {{ {_do(s, i, s.old)}; }}")
    out.append(r"""fail() { printf 'FAILED\t%s\t%s\n' "$1" "$(cat "$E.why" 2>/dev/null)"; R=0; i=$1
  undo_$i 2>/dev/null; i=$((i-1))  # a failed write or mv leaves its target as it was
  while [ "$i" -ge 1 ]; do undo_$i || { R=1; printf 'UNDO-FAILED\t%s\t%s\n' "$i" "$(cat "$E.why")"; }
    i=$((i-1)); done
  if [ $R = 0 ]; then status "$TX" failed-restored; rm -f "$E" "$E.why"; exit 13; fi
  status "$TX" failed-restore-incomplete; exit 14; }""")
    for i, s in enumerate(tx.steps, 1):
        out.append(f"{_do(s, i, s.new)} || fail {i}")
    for other, state in (marks or {}).items():
        out.append(f"status {q(other)} {q(state)}")
    out.append('status "$TX" applied; rm -f "$E" "$E.why"; echo "DONE $TX"')
    return "\n".join(out) + "\n"


def inverse(tx: Tx, rollback_id: str, current: dict[str, str | None] | None = None) -> Tx:
    """The rollback of `tx`: its steps reversed, old and new swapped. With `current`
    (path -> value found now, for --force) the found value is what gets recorded as old."""
    steps = []
    for s in reversed(tx.steps):
        found = current[s.path] if current and s.path in current else s.new
        steps.append(Step(s.knob, s.target, s.kind, s.path, found, s.old, s.read, s.set))
    return Tx(rollback_id, "rollback", tx.host, tx.profile, steps, rolls_back=tx.id)


def journal_script(state_dir: str = STATE_DIR) -> str:
    return f"""for f in {shlex.quote(state_dir)}/tx/*.json; do [ -f "$f" ] || continue
  s=$(head -n1 "${{f%.json}}.status" 2>/dev/null); echo "TX $(basename "$f" .json) $s"
  base64 -w0 < "$f"; echo; done"""


def parse_journal(output: str) -> list[Tx]:
    txs = []
    lines = output.splitlines()
    for head, body in zip(lines[::2], lines[1::2], strict=False):
        if not head.startswith("TX "):
            continue
        parts = head.split(" ", 2)
        status = parts[2] if len(parts) > 2 else "unknown"
        try:
            txs.append(Tx.from_record(base64.b64decode(body), status=status))
        except (ValueError, TypeError, KeyError):
            continue  # a torn or foreign file must not hide the others
    return sorted(txs, key=lambda t: (t.time, t.id))
