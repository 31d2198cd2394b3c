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
from netfix.errors import InputError
from netfix.inventory import Host
from netfix.journal import Step, Tx
from netfix.plan import PLAN_VERSION, load_plan

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
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL)
    paused = state / "tx" / f"{tx.id}.paused"
    deadline = time.monotonic() + 10
    while not paused.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert paused.exists()
    os.killpg(proc.pid, signal.SIGKILL)  # the sleep too: it holds the lock's fd
    proc.wait()
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
