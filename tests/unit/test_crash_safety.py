"""Crash safety of the node-side scripts and the engine's per-host error handling, run for
real by sh against temp files (the integration tests do the same on lab nodes):
staged delivery, recovery of a run killed at step k, directories removed on rollback,
leftover error files, saved-plan validation, one host's exception staying that host's."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netfix import engine, journal, transport
from netfix.errors import InputError, NetfixError
from netfix.inventory import Host
from netfix.journal import Step, Tx
from netfix.plan import PLAN_VERSION, load_plan
from netfix.status import TxStatus

NETFIX = str(Path(sys.executable).with_name("netfix"))
LOCAL = Host("@local", [], {})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def values(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = tmp_path / f"v{i}"
        p.write_text("0\n")
        paths.append(p)
    return paths


def value_tx(paths: list[Path]) -> Tx:
    steps = [Step("value", str(p), "0", "1", knob="sysctl", target=p.name) for p in paths]
    return Tx(journal.new_id(), "apply", "h", "p", steps)


def run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True)


def kill_at_pause(proc: subprocess.Popen | None, state: Path) -> None:
    """Wait until a transaction script under `state` stops at its pause point
    (journal.PAUSE), then kill its whole process group (the sleep too: it holds the lock's
    fd), the way kill -9 of the node's shell or a power cut stops it: no trap runs. `proc`:
    the script's own session leader, else the group is read from the paused pid."""
    deadline = time.monotonic() + 15
    while not list((state / "tx").glob("*.paused")) and time.monotonic() < deadline:
        time.sleep(0.01)
    paused = list((state / "tx").glob("*.paused"))
    assert paused, "the script never reached its pause point"
    pid = int(paused[0].read_text()) if proc is None else proc.pid
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    if proc is not None:
        proc.wait()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_run_killed_after_step_k_is_undone_by_recovery(tmp_path, monkeypatch, k):
    """Invariant: killed after step k of 5, the transaction stays `applying` with k steps
    made; recovery undoes exactly those (newest first) and marks it interrupted-restored."""
    state = tmp_path / "state"
    paths = values(tmp_path, 5)
    tx = value_tx(paths)
    monkeypatch.setenv(journal.PAUSE_ENV, str(k))
    script = journal.apply_script(tx, state_dir=str(state))
    monkeypatch.delenv(journal.PAUSE_ENV)
    kill_at_pause(subprocess.Popen(["sh", "-c", script], start_new_session=True,
                                   stdout=subprocess.DEVNULL), state)
    assert [p.read_text() for p in paths] == ["1\n"] * k + ["0\n"] * (5 - k)
    status = state / "tx" / f"{tx.id}.status"
    assert status.read_text().split()[0] == "applying"

    r = run(journal.recover_script(tx, state_dir=str(state)))
    assert r.returncode == 0 and f"RECOVERED {tx.id} {k}" in r.stdout, r.stdout + r.stderr
    assert [p.read_text() for p in paths] == ["0\n"] * 5
    assert status.read_text().split()[0] == journal.INTERRUPTED
    # Once done, a second recovery changes nothing and says why.
    assert f"NOT-INTERRUPTED {tx.id} {journal.INTERRUPTED}" in \
        run(journal.recover_script(tx, state_dir=str(state))).stdout


def test_rollback_removes_the_directories_apply_created_and_keeps_others(tmp_path):
    state = tmp_path / "state"
    kept = tmp_path / "etc" / "udev" / "rules.d"
    kept.mkdir(parents=True)  # exists, empty, before the apply: must stay
    made = tmp_path / "etc" / "netfix" / "sub" / "nic.sh"
    rule = kept / "90-netfix.rules"
    tx = Tx(journal.new_id(), "apply", "h", "p", [
        Step("file", str(made), None, b64(b"#!/bin/sh\n"), knob="nic", target="nic.sh"),
        Step("file", str(rule), None, b64(b"rule\n"), knob="nic", target="rule")])
    assert run(journal.apply_script(tx, state_dir=str(state))).returncode == journal.OK
    assert made.exists() and rule.exists()
    back = journal.inverse(tx, journal.new_id())
    r = run(journal.rollback_script(back, tx, state_dir=str(state)))
    assert r.returncode == journal.OK, r.stdout
    assert not (tmp_path / "etc" / "netfix").exists()
    assert kept.is_dir() and not any(kept.iterdir())


def test_leftover_error_files_of_killed_runs_are_removed(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / ".err.4242").write_text("x")
    (state / ".err.4242.why").write_text("x")
    (state / "run").mkdir()
    old, fresh = state / "run" / "s.killed01", state / "run" / "s.running1"
    old.write_text("x")
    fresh.write_text("x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    tx = value_tx(values(tmp_path, 1))
    assert run(journal.apply_script(tx, state_dir=str(state))).returncode == journal.OK
    assert not list(state.glob(".err.*"))
    assert not old.exists() and fresh.exists()  # a run staged a moment ago may be waiting


def test_staged_delivery_runs_only_a_whole_script(tmp_path):
    """The local transport uses the same staging as SSH: a short script never runs."""
    marker = tmp_path / "ran"
    argv, data = transport._argv(LOCAL, f"touch {marker}\n", True, str(tmp_path))
    short = subprocess.run(argv, input=data[:-1], capture_output=True)
    assert short.returncode == transport.INCOMPLETE and not marker.exists()
    whole = subprocess.run(argv, input=data, capture_output=True)
    assert whole.returncode == 0 and marker.exists()
    assert not list((tmp_path / "run").iterdir())  # staged files cleaned up


def test_stale_file_details_compare_sha256_with_sha256():
    old = b64(b"old\n")
    tx = Tx("t", "apply", "h", "p", [Step("file", "/etc/x.conf", old, b64(b"new\n"),
                                          knob="sysctl", target="/etc/x.conf")])
    found = "f" * 64
    res = transport.Result(journal.STALE, f"STALE\t/etc/x.conf\t{found}\n", "")
    detail = engine._result("h", tx, res, "applied").details[0]
    assert f"found sha256:{found[:16]}" in detail
    assert f"expected sha256:{journal.sha(old)[:16]}" in detail


# ------------------------------------------------------------------ saved plan shape


def saved_plan(tmp_path: Path, mutate) -> Path:
    data = {"version": PLAN_VERSION, "created": 0, "hosts": [{
        "host": "n1", "profile": "p", "fingerprint": "x", "changes": [{
            "knob": "sysctl", "target": "k", "current": "0", "desired": "1",
            "ops": [{"kind": "value", "path": "/proc/sys/x", "old": "0", "new": "1"}]}]}]}
    mutate(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["hosts"][0]["changes"][0]["ops"][0].update(kind="sh"),
     "hosts[0].changes[0].ops[0].kind"),
    (lambda d: d["hosts"][0]["changes"][0].pop("target"), "hosts[0].changes[0]"),
    (lambda d: d["hosts"][0].update(changes="all"), "hosts[0].changes"),
    (lambda d: d["hosts"][0]["changes"][0]["ops"][0].update(extra=1),
     "hosts[0].changes[0].ops[0]"),
    (lambda d: d.update(hosts=[7]), "hosts[0]"),
])
def test_wrong_shaped_plan_names_file_and_field(tmp_path, mutate, field):
    path = saved_plan(tmp_path, mutate)
    with pytest.raises(InputError) as e:
        load_plan(path)
    assert str(e.value).startswith(f"{path}: {field}: ")
    r = subprocess.run([NETFIX, "apply", str(path)], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "NETFIX_INVENTORY"})
    assert r.returncode == 1 and "Traceback" not in r.stderr and field in r.stderr, r.stderr


def test_old_plan_version_is_refused_with_the_fix(tmp_path):
    path = saved_plan(tmp_path, lambda d: d.update(version=1))
    with pytest.raises(InputError, match="make the plan again"):
        load_plan(path)


# ------------------------------------------------------------------ one host's surprise


def test_an_exception_on_one_host_is_that_hosts_error(monkeypatch):
    """A torn read (ValueError in the parser) and an unexpected exception each fail only
    their host; the others are planned."""
    hosts = [Host(n, [], {"profile": "base", "ssh_host": "127.0.0.1"})
             for n in ("good", "torn", "odd")]
    real = engine.run_script

    def fake(host, script, staged=False):
        if host.name == "torn":  # sizes announced for 5 bytes, a blob of 3
            return transport.Result(0, "@@NF\thost\tuid\t\t0\n@@NF\tsize\t/etc/x\t5\t\n"
                                    f"@@NF\tblob\t\t\t{b64(b'abc')}\n", "")
        if host.name == "odd":
            raise KeyError("surprise")
        return real(LOCAL, script, staged)

    monkeypatch.setattr(engine, "run_script", fake)
    plan = engine.make_plan(hosts)
    by = {h.host: h for h in plan.hosts}
    assert by["good"].error is None
    assert "changed while they were read" in by["torn"].error
    assert "KeyError" in by["odd"].error and "other hosts" in by["odd"].error


# ------------------------------------------- the two status writes that end a rollback


def node_files(tmp_path: Path) -> list[Path]:
    return [tmp_path / "v", tmp_path / "etc" / "a.conf", tmp_path / "etc" / "made.conf"]


def snap(paths: list[Path]) -> list[bytes | None]:
    return [p.read_bytes() if p.exists() else None for p in paths]


def applied_target(tmp_path: Path, monkeypatch, arm_secs: int | None = None,
                   pause_revert: bool = False) -> tuple[Path, Tx, list[bytes | None]]:
    """Transaction T applied on a temp 'node' (a value, a file rewritten, a file created;
    with `arm_secs`, applied with --confirm). Returns the state dir, T and the node's
    bytes before T (T's old values)."""
    state = tmp_path / "state"
    v, conf, made = node_files(tmp_path)
    v.write_text("0\n")
    conf.parent.mkdir()
    conf.write_bytes(b"old\nno newline at end")
    before = snap(node_files(tmp_path))
    tx = Tx(journal.new_id(), "apply", "h", "p", [
        Step("value", str(v), "0", "1", knob="sysctl", target="v"),
        Step("file", str(conf), b64(conf.read_bytes()), b64(b"new\n"), knob="f", target="a"),
        Step("file", str(made), None, b64(b"made\n"), knob="f", target="made")])
    if pause_revert:  # the revert is generated with the apply that arms it
        monkeypatch.setenv(journal.PAUSE_MARKS_ENV, "1")
    arm = journal.arm_script(tx, arm_secs, str(state)) if arm_secs else None
    monkeypatch.delenv(journal.PAUSE_MARKS_ENV, raising=False)
    r = run(journal.apply_script(tx, arm=arm, state_dir=str(state)))
    assert r.returncode == journal.OK, r.stdout + r.stderr
    return state, read(state).txs[-1], before


def read(state: Path) -> journal.Journal:
    return journal.parse_journal(run(journal.journal_script(str(state))).stdout)


def status_of(found: journal.Journal, tx_id: str) -> str:
    return next(t.status for t in found.txs if t.id == tx_id)


def on_disk(state: Path, tx_id: str) -> str:
    """The first word of the node's own status file (not completed by any reader)."""
    return (state / "tx" / f"{tx_id}.status").read_text().split()[0]


def next_contact(state: Path, confirm: str | None = None) -> tuple[journal.Journal, str]:
    """What the next netfix command does on the node: recover every transaction left
    `applying` (engine.gather), then run under the node lock (here `netfix confirm`'s
    script). Returns the journal then, and the confirm script's output."""
    for t in read(state).txs:
        if t.state is TxStatus.APPLYING:
            r = run(journal.recover_script(t, state_dir=str(state)))
            assert f"RECOVERED {t.id}" in r.stdout, r.stdout + r.stderr
    r = run(journal.confirm_script(confirm, str(state)))
    assert r.returncode == 0, r.stdout + r.stderr
    return read(state), r.stdout


def rollback_cut(state: Path, tx: Tx, monkeypatch, env: str, value: str,
                 old_order: bool = False) -> Tx:
    """Roll T back, the run killed at the pause `env`=`value` sets. `old_order`: the two
    status writes swapped back to what they were (T's mark, then the rollback's own)."""
    back = journal.inverse(tx, journal.new_id())
    monkeypatch.setenv(env, value)
    script = journal.rollback_script(back, tx, state_dir=str(state))
    monkeypatch.delenv(env)
    if old_order:
        lines = script.split("\n")
        own = lines.index('status "$TX" applied')
        mark = next(i for i, line in enumerate(lines) if line.startswith(f"status {tx.id} "))
        assert own < mark
        lines[own], lines[mark] = lines[mark], lines[own]
        script = "\n".join(lines)
    kill_at_pause(subprocess.Popen(["sh", "-c", script], start_new_session=True,
                                   stdout=subprocess.DEVNULL), state)
    return back


def test_rollback_cut_before_its_targets_mark_leaves_the_target_rolled_back(tmp_path,
                                                                           monkeypatch):
    """Invariant: a rollback R of T killed after its own final status and before T's mark
    leaves the node holding T's old values (byte for byte) and a journal that says so: R
    applied, T read as rolled back by R. The next netfix run writes T's mark on the node
    and redoes nothing; rollback neither picks T nor accepts it."""
    state, tx, before = applied_target(tmp_path, monkeypatch)
    back = rollback_cut(state, tx, monkeypatch, journal.PAUSE_MARKS_ENV, "1")
    assert (on_disk(state, back.id), on_disk(state, tx.id)) == ("applied", "applied")
    assert snap(node_files(tmp_path)) == before
    found = read(state)
    assert status_of(found, tx.id).startswith(f"rolled-back {back.id} ")
    assert any(tx.id in n and back.id in n for n in found.notices)
    with pytest.raises(NetfixError, match="nothing to roll back"):
        engine._pick(found, None)
    with pytest.raises(NetfixError, match="already rolled-back"):
        engine._pick(found, tx.id)

    after, _ = next_contact(state)
    assert snap(node_files(tmp_path)) == before  # nothing redone, nothing undone
    assert (state / "tx" / f"{tx.id}.status").read_text().startswith(f"rolled-back {back.id} ")
    assert not list((state / "tx").glob("*.marks")) and after.notices == []
    assert status_of(after, back.id).startswith("applied")


def test_rollback_cut_before_its_own_final_status_leaves_the_target_in_force(tmp_path,
                                                                            monkeypatch):
    """Invariant: a rollback R killed after its last step, before its own final status, is
    `applying`: the next run undoes it (T's values back, byte for byte) and T, never
    marked, is in force as its status says: rollback picks it again."""
    state, tx, _ = applied_target(tmp_path, monkeypatch)
    applied = snap(node_files(tmp_path))
    back = rollback_cut(state, tx, monkeypatch, journal.PAUSE_ENV, str(len(tx.steps)))
    assert (on_disk(state, back.id), on_disk(state, tx.id)) == ("applying", "applied")
    after, _ = next_contact(state)
    assert snap(node_files(tmp_path)) == applied
    assert status_of(after, back.id).startswith(journal.INTERRUPTED)
    assert status_of(after, tx.id).startswith("applied") and after.notices == []
    assert engine._pick(after, None).id == tx.id


def test_the_old_order_of_the_two_writes_leaves_a_journal_that_lies(tmp_path, monkeypatch):
    """The same cut with the writes the old way round (T's mark, then R's own status)
    breaks the invariant the order keeps: R is still `applying`, so the next run undoes it
    and T's values are back in force while T says rolled back. (What the two tests above
    guard against; it also shows the cut lands between the two writes.)"""
    state, tx, before = applied_target(tmp_path, monkeypatch)
    applied = snap(node_files(tmp_path))
    back = rollback_cut(state, tx, monkeypatch, journal.PAUSE_MARKS_ENV, "1", old_order=True)
    assert (on_disk(state, back.id), on_disk(state, tx.id)) == ("applying", "rolled-back")
    after, _ = next_contact(state)
    assert snap(node_files(tmp_path)) == applied != before
    assert status_of(after, tx.id).startswith(f"rolled-back {back.id}")


def test_revert_cut_before_its_targets_mark_reads_reverted_and_confirm_says_so(tmp_path,
                                                                              monkeypatch):
    """Invariant: the armed revert R of an unconfirmed T, killed after its own final status
    and before T's mark, leaves T's old values (byte for byte) and T read as reverted by
    R (kind revert); `netfix confirm` then writes that mark and reports T reverted, never
    confirmed nor "reverting", and nothing is redone."""
    state, tx, before = applied_target(tmp_path, monkeypatch, arm_secs=1, pause_revert=True)
    kill_at_pause(None, state)
    assert snap(node_files(tmp_path)) == before
    revert = next(t for t in read(state).txs if t.rolls_back == tx.id)
    assert revert.kind == "revert"
    assert (on_disk(state, revert.id), on_disk(state, tx.id)) == \
        ("applied", "applied-unconfirmed")
    assert status_of(read(state), tx.id).startswith(f"reverted-unconfirmed {revert.id} ")

    after, out = next_contact(state, confirm=tx.id)
    assert f"STATUS {tx.id} reverted-unconfirmed {revert.id} " in out, out
    res = engine._confirm_result("h", transport.Result(0, out, ""), tx.id)
    assert (res.status, res.ok) == ("reverted", False)
    assert on_disk(state, tx.id) == "reverted-unconfirmed" and after.notices == []
    assert snap(node_files(tmp_path)) == before
