"""Invariant: the processes a transaction script starts on the node do not grow with its
values, and a file step costs a fixed two or three (issue 17: on a 100-node lab sharing two
CPUs, every fork of every node's script is wall time). Counted for real: the generated apply
and rollback scripts run by sh under `strace -f`, every process (fork or exec) counted."""

from __future__ import annotations

import base64
import collections
import shutil
import subprocess
from pathlib import Path

import pytest

from netfix import journal
from netfix.journal import Step, Tx

pytestmark = pytest.mark.skipif(not shutil.which("strace"), reason="strace not installed")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tx_of(tmp: Path, values: int, new_files: int, old_files: int = 0) -> Tx:
    """`values` value steps 0 -> 1, `new_files` files created and `old_files` rewritten,
    all in one existing directory (a directory made costs its mkdir, as it must)."""
    etc = tmp / "etc"
    etc.mkdir(exist_ok=True)
    steps = []
    for i in range(values):
        (tmp / f"v{i}").write_text("0\n")
        steps.append(Step("value", str(tmp / f"v{i}"), "0", "1", knob="sysctl", target=f"v{i}"))
    for i in range(new_files):
        steps.append(Step("file", str(etc / f"n{i}.conf"), None, b64(b"new\n"), knob="f",
                          target=f"n{i}"))
    for i in range(old_files):
        (etc / f"o{i}.conf").write_bytes(b"old\n")
        steps.append(Step("file", str(etc / f"o{i}.conf"), b64(b"old\n"), b64(b"new\n"),
                          knob="f", target=f"o{i}"))
    return Tx(journal.new_id(), "apply", "h", "p", steps)


def started(script: str, tmp: Path) -> collections.Counter:
    """The processes the script started, by program ("fork": a subshell that ran none)."""
    path, traces = tmp / "script.sh", tmp / "traces"
    path.write_text(script)
    traces.mkdir(exist_ok=True)
    for old in traces.iterdir():
        old.unlink()
    # -ff: one trace file per process (trace.PID), its execve calls unsplit
    r = subprocess.run(["strace", "-ff", "-qq", "-e", "trace=execve", "-o",
                        str(traces / "trace"), "sh", str(path)], capture_output=True, text=True)
    assert r.returncode == journal.OK, r.stdout + r.stderr
    count: collections.Counter = collections.Counter()
    for trace in traces.iterdir():
        execs = [line.split('"')[1].rsplit("/", 1)[-1]
                 for line in trace.read_text().splitlines()
                 if line.startswith('execve("') and line.endswith("= 0")]
        count[execs[-1] if execs else "fork"] += 1
    count["sh"] -= 1  # the shell running the script
    return +count


def apply_and_rollback(tmp: Path, **shape: int) -> tuple[collections.Counter, ...]:
    tmp.mkdir()
    state = tmp / "state"
    (state / "tx").mkdir(parents=True)  # a node netfix ran on before
    tx = tx_of(tmp, **shape)
    applied = started(journal.apply_script(tx, state_dir=str(state)), tmp)
    back = journal.inverse(tx, journal.new_id())
    return applied, started(journal.rollback_script(back, tx, state_dir=str(state)), tmp)


def test_values_cost_no_process_each(tmp_path):
    """One grep reads every value for the stale check, one more reads a run of values back
    after writing it: 1 value or 12, the same processes."""
    one = apply_and_rollback(tmp_path / "one", values=1, new_files=0)
    twelve = apply_and_rollback(tmp_path / "twelve", values=12, new_files=0)
    assert one == twelve
    apply, rollback = twelve
    # the lock, 2 greps (check, read-back), the journal (sync, 2 mv, sync), the status (date,
    # sync, mv, sync), rm of the error file; their $(...) without an exec of their own
    assert apply["grep"] == 2 and apply["sync"] == 4 and apply["date"] == 1, apply
    assert sum(apply.values()) <= 14, apply
    assert sum(rollback.values()) <= 14 + 3, rollback  # + the target's status (sync, mv, sync)


def test_file_steps_cost_a_sync_and_a_rename_each(tmp_path):
    """A file step's content is written by printf (no base64), its temp file and progress
    mark synced together, then renamed; the run's directory is synced once for all."""
    base_apply, base_back = apply_and_rollback(tmp_path / "base", values=1, new_files=1,
                                               old_files=1)
    more_apply, more_back = apply_and_rollback(tmp_path / "more", values=1, new_files=4,
                                               old_files=4)
    extra_apply, extra_back = more_apply - base_apply, more_back - base_back
    # 3 more created files: sync + mv; 3 more rewritten: + chmod (their mode is kept)
    assert extra_apply == collections.Counter(sync=6, mv=6, chmod=3), extra_apply
    # rollback: 3 rewritten back (sync, chmod, mv), 3 created removed (sync, rm), and one
    # sha256sum hashes every file of its stale check
    assert extra_back == collections.Counter(sync=6, mv=3, chmod=3, rm=3), extra_back
    assert "base64" not in more_apply + more_back and more_back["sha256sum"] == 1
