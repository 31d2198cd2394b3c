"""Commit-confirmed apply: the armed revert, confirm and rollback-while-unconfirmed, run for
real by sh against files in a temp dir (the detached-sleeper path: PID 1 is not systemd
here, as in the lab). The integration tests run the same scripts over SSH on lab nodes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from netfix import engine, journal, transport
from netfix.journal import Step, Tx


def step(knob: str, target: str, *op) -> Step:
    return Step(*op, knob=knob, target=target)


def run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True,
                          timeout=60)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def setup(tmp_path: Path) -> tuple[str, Path, Tx]:
    state = str(tmp_path / "state")
    val = tmp_path / "value"
    val.write_text("10\n")
    return state, val, Tx(journal.new_id(), "apply", "h", "p",
                          [step("sysctl", "k", "value", str(val), "10", "20")])


def apply_armed(tx: Tx, state: str, seconds: int) -> subprocess.CompletedProcess:
    r = run(journal.apply_script(tx, arm=journal.arm_script(tx, seconds, state), state_dir=state))
    assert r.returncode == journal.OK, r.stdout + r.stderr
    return r


def txs(state: str) -> dict[str, Tx]:
    return {t.id: t for t in journal.parse_journal(run(journal.journal_script(state)).stdout).txs}


def revert_files(state: str, tx: Tx) -> list[str]:
    return sorted(p.name for p in Path(state, "tx").glob(f"{tx.id}.revert.*"))


def wait_for(cond, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_unconfirmed_transaction_reverts_by_itself(tmp_path):
    state, val, tx = setup(tmp_path)
    start = time.monotonic()
    apply_armed(tx, state, 1)
    assert val.read_text() == "20\n"
    status = txs(state)[tx.id].status
    assert status.startswith("applied-unconfirmed revert in 1s by pid "), status
    assert wait_for(lambda: txs(state)[tx.id].status.startswith("reverted"), 10)
    assert time.monotonic() - start >= 0.9
    assert val.read_text() == "10\n"
    rid = txs(state)[tx.id].status.split()[1]
    # The revert's own final status comes before the original's mark
    # (journal._transaction), so once the mark is there the revert says applied.
    journal_now = txs(state)
    assert journal_now[rid].status.startswith("applied"), journal_now[rid]
    assert journal_now[rid].kind == "revert" and journal_now[rid].rolls_back == tx.id
    assert wait_for(lambda: revert_files(state, tx) == [f"{tx.id}.revert.log"], 5)


def test_confirm_disarms_and_the_change_stays(tmp_path):
    state, val, tx = setup(tmp_path)
    apply_armed(tx, state, 1)
    pid = int(Path(state, "tx", f"{tx.id}.revert.pid").read_text())
    assert alive(pid)
    r = run(journal.confirm_script(None, state))
    assert r.returncode == 0 and f"CONFIRMED {tx.id}\n" in r.stdout, r.stdout + r.stderr
    assert wait_for(lambda: not alive(pid), 5)
    assert revert_files(state, tx) == []
    time.sleep(1.5)  # past the window
    assert val.read_text() == "20\n"
    assert txs(state)[tx.id].status.startswith("applied confirmed")
    res = engine._confirm_result("h", transport.Result(0, run(journal.confirm_script(
        None, state)).stdout, ""), None)
    assert (res.status, res.ok) == ("nothing-to-confirm", True)


def test_failure_to_arm_undoes_every_step(tmp_path):
    state, val, tx = setup(tmp_path)
    broken = 'arm() { echo "cannot arm the automatic revert: test" > "$E.why"; return 1; }'
    r = run(journal.apply_script(tx, arm=broken, state_dir=state))
    assert r.returncode == journal.FAILED and "cannot arm" in r.stdout
    assert val.read_text() == "10\n"
    assert txs(state)[tx.id].status.startswith("failed-restored")


def test_rollback_of_unconfirmed_transaction_disarms_first(tmp_path):
    state, val, tx = setup(tmp_path)
    apply_armed(tx, state, 30)
    pid = int(Path(state, "tx", f"{tx.id}.revert.pid").read_text())
    back = journal.inverse(txs(state)[tx.id], journal.new_id())
    r = run(journal.rollback_script(back, txs(state)[tx.id], state_dir=state))
    assert r.returncode == journal.OK, r.stdout + r.stderr
    assert val.read_text() == "10\n"
    assert wait_for(lambda: not alive(pid), 5)
    assert revert_files(state, tx) == []
    assert txs(state)[tx.id].status.startswith("rolled-back")


def test_revert_already_running_wins_over_confirm_and_rollback(tmp_path):
    state, val, tx = setup(tmp_path)
    apply_armed(tx, state, 30)
    pid = int(Path(state, "tx", f"{tx.id}.revert.pid").read_text())
    os.killpg(pid, 15)  # the sleeper is gone; the "timer" has taken the script:
    txd = Path(state, "tx")
    (txd / f"{tx.id}.revert.sh").rename(txd / f"{tx.id}.revert.run")

    r = run(journal.confirm_script(tx.id, state))
    assert f"REVERTING {tx.id}" in r.stdout
    res = engine._confirm_result("h", transport.Result(r.returncode, r.stdout, ""), tx.id)
    assert (res.status, res.ok) == ("reverting", False)
    target = txs(state)[tx.id]
    back = journal.inverse(target, journal.new_id())
    r = run(journal.rollback_script(back, target, state_dir=state))
    assert r.returncode == journal.REVERTING
    assert val.read_text() == "20\n"  # the rollback changed nothing: the revert will

    r = run(f"sh {txd / f'{tx.id}.revert.run'}")  # what the timer runs
    assert r.returncode == 0, r.stdout + r.stderr
    assert val.read_text() == "10\n"
    res = engine._confirm_result("h", transport.Result(0, run(journal.confirm_script(
        None, state)).stdout, ""), None)
    assert (res.status, res.ok) == ("reverted", False)
    assert "not confirmed in time" in res.message


def test_confirm_unknown_transaction(tmp_path):
    state, _, _ = setup(tmp_path)
    out = run(journal.confirm_script("20000101T000000Z-000000", state))
    res = engine._confirm_result("h", transport.Result(out.returncode, out.stdout, ""),
                                 "20000101T000000Z-000000")
    assert (res.status, res.ok) == ("error", False) and "no transaction" in res.message
