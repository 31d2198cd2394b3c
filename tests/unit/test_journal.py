"""The on-node apply script, run for real by sh against files in a temp dir.

"value" steps work on any single-value file, so temp files stand in for /proc/sys here;
the integration tests run the same script against real sysctls on lab nodes.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from netfix import journal
from netfix.journal import Step, Tx
from netfix.status import INCOMPLETE, TxStatus


def step(knob: str, target: str, *op) -> Step:
    return Step(*op, knob=knob, target=target)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True)


def make(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    state = tmp_path / "state"
    val = tmp_path / "value"
    val.write_text("10\n")
    existing = tmp_path / "etc" / "existing.conf"
    existing.parent.mkdir()
    existing.write_bytes(b"old content\nno newline at end")
    created = tmp_path / "etc" / "new.conf"
    return state, val, existing, created


def tx_for(val: Path, existing: Path, created: Path) -> Tx:
    steps = [
        step("sysctl", "k", "value", str(val), "10", "20"),
        step("sysctl", str(existing), "file", str(existing),
             b64(existing.read_bytes()), b64(b"new\n")),
        step("sysctl", str(created), "file", str(created), None, b64(b"created\n")),
    ]
    return Tx(journal.new_id(), "apply", "h", "p", steps)


def test_apply_then_inverse_restores_bytes(tmp_path):
    state, val, existing, created = make(tmp_path)
    before = existing.read_bytes()
    tx = tx_for(val, existing, created)
    r = run(journal.apply_script(tx, state_dir=str(state)))
    assert r.returncode == journal.OK, r.stdout + r.stderr
    assert val.read_text() == "20\n"
    assert existing.read_bytes() == b"new\n"
    assert created.read_bytes() == b"created\n"
    txs = journal.parse_journal(run(journal.journal_script(str(state))).stdout).txs
    assert [t.id for t in txs] == [tx.id] and txs[0].status.startswith("applied")
    assert txs[0].steps[1].old == b64(before)

    back = journal.inverse(txs[0], journal.new_id())
    r = run(journal.rollback_script(back, txs[0], state_dir=str(state)))
    assert r.returncode == journal.OK, r.stdout + r.stderr
    assert val.read_text() == "10\n"
    assert existing.read_bytes() == before
    assert not created.exists()
    statuses = {t.id: t.status for t in
                journal.parse_journal(run(journal.journal_script(str(state))).stdout).txs}
    assert statuses[tx.id].startswith(f"rolled-back {back.id}")
    assert statuses[back.id].startswith("applied")


def test_stale_value_changes_nothing(tmp_path):
    state, val, existing, created = make(tmp_path)
    tx = tx_for(val, existing, created)
    val.write_text("11\n")  # someone changed it after the plan
    r = run(journal.apply_script(tx, state_dir=str(state)))
    assert r.returncode == journal.STALE
    assert f"STALE\t{val}\t11" in r.stdout
    assert val.read_text() == "11\n" and existing.read_bytes().startswith(b"old")
    assert not created.exists()
    assert not list((state / "tx").glob("*.json"))  # no journal for a run that never began


def test_failure_half_way_restores_everything(tmp_path):
    state, val, existing, created = make(tmp_path)
    before = existing.read_bytes()
    tx = tx_for(val, existing, created)
    # The 4th step fails after three succeeded: its parent is a file, not a directory
    # (permissions would not stop root).
    (tmp_path / "file-not-dir").write_text("")
    bad = str(tmp_path / "file-not-dir" / "x.conf")
    tx.steps.append(step("sysctl", "x", "file", bad, None, b64(b"x\n")))
    r = run(journal.apply_script(tx, state_dir=str(state)))
    assert r.returncode == journal.FAILED, r.stdout + r.stderr
    assert "FAILED\t4" in r.stdout
    assert val.read_text() == "10\n"
    assert existing.read_bytes() == before
    assert not created.exists()
    txs = journal.parse_journal(run(journal.journal_script(str(state))).stdout).txs
    assert txs[0].status.startswith("failed-restored")


def test_value_the_kernel_rejects_is_a_failure(tmp_path):
    state, val, existing, created = make(tmp_path)
    ro = tmp_path / "ro-dir"
    ro.mkdir()
    tx = Tx(journal.new_id(), "apply", "h", "p", [
        step("sysctl", "k", "value", str(val), "10", "20"),
        step("sysctl", "k2", "value", str(ro), "", "1"),  # a dir: the write fails
    ])
    r = run(journal.apply_script(tx, force=True, state_dir=str(state)))
    assert r.returncode == journal.FAILED
    assert val.read_text() == "10\n"


def test_lock_is_exclusive(tmp_path):
    state, val, existing, created = make(tmp_path)
    state.mkdir()
    holder = subprocess.Popen(["flock", str(state / "lock"), "sleep", "5"])
    try:
        import time

        time.sleep(0.2)
        script = journal.apply_script(tx_for(val, existing, created), state_dir=str(state))
        script = script.replace("flock -w 30 9", "flock -w 0.2 9")
        r = run(script)
        assert r.returncode == journal.LOCKED
        assert val.read_text() == "10\n"
    finally:
        holder.kill()


def test_cmd_steps_apply_check_and_undo(tmp_path):
    """A "cmd" step (ethtool, nft...) is read and set by sh snippets stored in the journal."""
    state = tmp_path / "state"
    dev = tmp_path / "dev-state"
    dev.write_text("gro on\n")
    read = f"cat {dev}"
    set_ = f"printf '%s\\n' \"$1\" > {dev}"
    ok = step("nic", "eth1 gro", "cmd", "nic:eth1:gro", "gro on", "gro off", read, set_)
    tx = Tx(journal.new_id(), "apply", "h", "p", [ok])
    r = run(journal.apply_script(tx, state_dir=str(state)))
    assert r.returncode == journal.OK, r.stdout
    assert dev.read_text() == "gro off\n"
    back = journal.inverse(journal.parse_journal(
        run(journal.journal_script(str(state))).stdout).txs[0], journal.new_id())
    assert back.steps[0].read == read and back.steps[0].set == set_
    assert run(journal.apply_script(back, state_dir=str(state))).returncode == journal.OK
    assert dev.read_text() == "gro on\n"
    # stale: the state moved since the plan
    dev.write_text("gro maybe\n")
    r = run(journal.apply_script(tx, state_dir=str(state)))
    assert r.returncode == journal.STALE and "gro maybe" in r.stdout
    # a set that the device refuses (state does not become what was asked) is undone
    dev.write_text("gro on\n")
    other = tmp_path / "other"
    other.write_text("1\n")
    refuse = step("nic", "eth1 lro", "cmd", "nic:eth1:lro", "lro off", "lro on",
                  f"cat {dev}", "echo 'Operation not supported' >&2; exit 1")
    first = step("sysctl", "k", "value", str(other), "1", "2")
    r = run(journal.apply_script(Tx(journal.new_id(), "apply", "h", "p", [first, refuse]),
                                 force=True, state_dir=str(state)))
    assert r.returncode == journal.FAILED and "Operation not supported" in r.stdout
    assert other.read_text() == "1\n"


def test_value_the_kernel_does_not_keep_fails_and_undoes_its_whole_run(tmp_path):
    """Invariant: a run of values is read back once, after all of it is written; a value
    the kernel did not keep still fails its own step, and every value of the run written
    (those after it too) is put back. /dev/null takes any write and reads back empty."""
    state = tmp_path / "state"
    vals = [tmp_path / "v1", tmp_path / "v3"]
    for v in vals:
        v.write_text("10\n")
    tx = Tx(journal.new_id(), "apply", "h", "p", [
        step("sysctl", "k1", "value", str(vals[0]), "10", "20"),
        step("sysctl", "k2", "value", "/dev/null", "", "1"),
        step("sysctl", "k3", "value", str(vals[1]), "10", "30"),
    ])
    r = run(journal.apply_script(tx, state_dir=str(state)))
    assert r.returncode == journal.FAILED, r.stdout + r.stderr
    assert "FAILED\t2\t/dev/null: kernel kept '' instead of '1'" in r.stdout
    assert [v.read_text() for v in vals] == ["10\n", "10\n"]
    txs = journal.parse_journal(run(journal.journal_script(str(state))).stdout).txs
    assert txs[0].status.startswith("failed-restored")


CONTENTS = [
    b"plain\n",
    b"no newline at the end",
    b"quotes ' \" `uname` $(id) ${HOME} $$ \\ \\n %s %b %% \\0101\n\n\n",
    b"\r\n\twindows and tabs\r\n",
    "unicode: ü € 😀\n".encode(),
    b"",
    b"nul \x00 inside\n",  # not text for sh: base64
    bytes(range(256)),  # not UTF-8: base64
]


def test_file_content_is_written_byte_exact_and_restored(tmp_path):
    """Invariant: a file step writes exactly its bytes (text as a quoted sh word by printf,
    anything else through base64), and the rollback restores the old bytes exactly."""
    state = tmp_path / "state"
    etc = tmp_path / "etc"
    etc.mkdir()
    steps = []
    for i, data in enumerate(CONTENTS):
        old = CONTENTS[-1 - i]
        (etc / f"{i}.conf").write_bytes(old)
        steps.append(step("f", str(i), "file", str(etc / f"{i}.conf"), b64(old), b64(data)))
    tx = Tx(journal.new_id(), "apply", "h", "p", steps)
    script = journal.apply_script(tx, state_dir=str(state))
    assert script.count("wf64 ") >= 2 and script.count("\nwf ") + script.count("&& wf ") >= 6
    r = run(script)
    assert r.returncode == journal.OK, r.stdout + r.stderr
    assert [(etc / f"{i}.conf").read_bytes() for i in range(len(CONTENTS))] == CONTENTS
    back = journal.inverse(tx, journal.new_id())
    r = run(journal.rollback_script(back, tx, state_dir=str(state)))
    assert r.returncode == journal.OK, r.stdout + r.stderr
    assert [(etc / f"{i}.conf").read_bytes() for i in range(len(CONTENTS))] == CONTENTS[::-1]
    assert sorted(p.name for p in etc.iterdir()) == sorted(f"{i}.conf" for i in
                                                           range(len(CONTENTS)))


def test_a_value_written_twice_is_read_back_after_each_write(tmp_path):
    """Invariant: runs of values read back once per run, but a value written twice in one
    transaction is checked after each write (else the first check would see the second)."""
    val = tmp_path / "v"
    val.write_text("0\n")
    tx = Tx(journal.new_id(), "apply", "h", "p", [
        step("sysctl", "k", "value", str(val), "0", "1"),
        step("sysctl", "k", "value", str(val), "1", "2"),
    ])
    r = run(journal.apply_script(tx, force=True, state_dir=str(tmp_path / "state")))
    assert r.returncode == journal.OK, r.stdout + r.stderr
    assert val.read_text() == "2\n"


def _journal_dir(tmp_path: Path, n: int) -> Path:
    txd = tmp_path / "state" / "tx"
    txd.mkdir(parents=True)
    for i in range(n):
        tx = Tx(f"20261201T0000{i:02d}Z-{i:04x}", "apply", "h", "p", [])
        (txd / f"{tx.id}.json").write_bytes(tx.record())
        (txd / f"{tx.id}.status").write_text("applied 2026-12-01T00:00:00Z\n")
    return txd


def test_journal_listing_costs_the_same_processes_however_long_the_history(tmp_path):
    """One stat, one cat and one base64 for any number of records (a base64 per
    transaction made drift and history slower with every apply and rollback)."""
    from execs import run_counted  # tests/unit/execs.py: pytest puts tests/unit on sys.path

    txd = _journal_dir(tmp_path, 25)
    r, ran = run_counted(["sh", "-c", journal.journal_script(str(txd.parent))],
                         tmp_path / "trace")
    assert len(journal.parse_journal(r.stdout).txs) == 25, r.stderr
    assert ran == {"sh": 1, "stat": 1, "cat": 1, "base64": 1}, ran


def test_odd_record_is_unreadable_and_the_others_still_parse(tmp_path):
    txd = _journal_dir(tmp_path, 3)
    odd = sorted(txd.glob("*.json"))[1]
    odd.write_bytes(b'{"id": "x",\n"broken\xff\n')  # a newline and invalid UTF-8 inside
    found = journal.parse_journal(run(journal.journal_script(str(txd.parent))).stdout)
    assert [t.id for t in found.txs] == [p.stem for p in sorted(txd.glob("*.json")) if p != odd]
    assert [u.id for u in found.unreadable] == [odd.stem]


def test_a_journal_that_changed_while_read_is_an_error(tmp_path):
    import pytest

    txd = _journal_dir(tmp_path, 2)
    out = run(journal.journal_script(str(txd.parent))).stdout
    torn = out.replace("SIZE ", "SIZE 1", 1)
    with pytest.raises(journal.JournalChanged, match="changed while it was read"):
        journal.parse_journal(torn)
    assert journal.parse_journal("").txs == []


def _fact_journal(txd: Path, extra: Path | None = None):
    """The journal as drift, history and rollback read it: within the fact script."""
    from netfix import facts

    needs = journal.needs(str(txd.parent))
    if extra:
        needs.files.add(str(extra))
    return needs, facts.build_script(needs)


def test_the_fact_script_reads_the_journal_with_the_files_no_process_of_its_own(tmp_path):
    """The journal in the fact script (drift, history, rollback, agent): its 25 records
    ride on the files' one stat, cat and base64, and read as journal.sh's listing does."""
    from execs import run_counted

    from netfix import facts

    txd = _journal_dir(tmp_path, 25)
    (txd / f"{sorted(txd.glob('*.json'))[3].stem}.status").write_text("rolled-back X\n")
    other = tmp_path / "other.conf"
    other.write_bytes(b"net.core.somaxconn = 1\n")
    _, script = _fact_journal(txd, other)
    r, ran = run_counted(["sh", "-s"], tmp_path / "trace", input=script)
    got = facts.parse("h", r.stdout)
    assert got.files[str(other)] == other.read_bytes()
    mine = journal.from_facts(got, str(txd.parent))
    listed = journal.parse_journal(run(journal.journal_script(str(txd.parent))).stdout)
    assert [(t.id, t.status) for t in mine.txs] == [(t.id, t.status) for t in listed.txs]
    assert len(mine.txs) == 25 and mine.txs[3].status == "rolled-back X"
    assert ran == {"sh": 1, "stat": 1, "cat": 1, "base64": 1}, ran
    empty = tmp_path / "empty" / "tx"
    empty.mkdir(parents=True)
    assert journal.from_facts(facts.parse("h", run(_fact_journal(empty)[1]).stdout),
                              str(empty.parent)).txs == []


def test_an_odd_record_in_the_fact_script_is_only_that_records(tmp_path):
    from netfix import facts

    txd = _journal_dir(tmp_path, 3)
    odd = sorted(txd.glob("*.json"))[1]
    odd.write_bytes(b'{"id": "x",\n"broken\xff\n')
    got = facts.parse("h", run(_fact_journal(txd)[1]).stdout)
    found = journal.from_facts(got, str(txd.parent))
    assert [t.id for t in found.txs] == [p.stem for p in sorted(txd.glob("*.json")) if p != odd]
    assert [u.id for u in found.unreadable] == [odd.stem]


def test_a_record_gone_between_listing_and_reading_is_an_error(tmp_path):
    import pytest

    from netfix import facts

    txd = _journal_dir(tmp_path, 2)
    got = facts.parse("h", run(_fact_journal(txd)[1]).stdout)
    del got.files[next(iter(got.journal))]  # listed by the glob, gone before stat and cat
    with pytest.raises(journal.JournalChanged, match="changed while it was read"):
        journal.from_facts(got, str(txd.parent))


# ------------------------------------------------------- a rollback's mark on its target


def listing(*txs: tuple[Tx | bytes, str]) -> str:
    """journal.sh's output for these (record, status line) pairs."""
    raws = [t if isinstance(t, bytes) else t.record() for t, _ in txs]
    ids = [json.loads(r)["id"] for r in raws]
    blob = b"".join(raws)
    return "".join(f"TX {i} {st}\n" for i, (_, st) in zip(ids, txs, strict=True)) + \
        "".join(f"SIZE {len(r)}\n" for r in raws) + f"BLOB {b64(blob)}\n"


def target_and_undo(kind: journal.TxKind) -> tuple[Tx, Tx]:
    t = Tx("20260101T000000Z-aaaaaa", "apply", "h", "p", [step("sysctl", "k", "value", "/x",
                                                               "1", "2")], time=1.0)
    r = journal.inverse(t, "20260101T000100Z-bbbbbb", kind=kind)
    r.time = 2.0
    return t, r


def test_a_finished_rollback_completes_its_targets_missing_mark():
    """Invariant: a rollback that is `applied` undid its target, whatever the target's own
    status file says (the run was cut off between the two status writes)."""
    t, r = target_and_undo(journal.TxKind.ROLLBACK)
    found = journal.parse_journal(listing((t, "applied 2026-01-01T00:00:05Z"),
                                          (r, "applied 2026-01-01T00:01:09Z")))
    got = {x.id: x for x in found.txs}
    assert got[t.id].status == f"rolled-back {r.id} 2026-01-01T00:01:09Z"
    assert got[t.id].state is TxStatus.ROLLED_BACK
    assert got[r.id].status == "applied 2026-01-01T00:01:09Z"
    assert len(found.notices) == 1 and t.id in found.notices[0] and r.id in found.notices[0]


def test_a_finished_revert_completes_its_target_as_reverted():
    t, r = target_and_undo(journal.TxKind.REVERT)
    assert json.loads(r.record())["kind"] == "revert"
    found = journal.parse_journal(listing(
        (t, "applied-unconfirmed revert in 30s by pid 7 2026-01-01T00:00:05Z"),
        (r, "applied 2026-01-01T00:01:09Z")))
    got = {x.id: x for x in found.txs}
    assert got[t.id].status == f"reverted-unconfirmed {r.id} 2026-01-01T00:01:09Z"
    assert got[t.id].state is TxStatus.REVERTED


def test_an_old_revert_record_reads_as_a_rollback():
    """A revert written before the kinds were told apart says kind rollback: it still
    reads (as a rollback), and a target it already marked keeps its mark."""
    t, r = target_and_undo(journal.TxKind.ROLLBACK)
    old = json.loads(r.record())
    assert old["kind"] == "rollback"
    raw = json.dumps(old, indent=1, sort_keys=True).encode() + b"\n"
    marked = f"reverted-unconfirmed {r.id} 2026-01-01T00:01:09Z"
    found = journal.parse_journal(listing((t, marked), (raw, "applied 2026-01-01T00:01:09Z")))
    got = {x.id: x for x in found.txs}
    assert got[r.id].kind == "rollback" and got[r.id].rolls_back == t.id
    assert got[t.id].status == marked and found.notices == []
    unmarked = journal.parse_journal(listing((t, "applied-unconfirmed x"), (raw, "applied y")))
    assert {x.id: x.status for x in unmarked.txs}[t.id] == f"rolled-back {r.id} y"


@pytest.mark.parametrize("end", ["applying", "failed-restored", "failed-restore-incomplete",
                                 "interrupted-restored", "interrupted-restore-incomplete",
                                 "never-started"])
def test_a_rollback_that_did_not_finish_marks_nothing(end):
    """Invariant: only an applied rollback undid its target; one cut off (recovery undoes
    it) or failed (it undid itself) leaves the target in force, as its status says."""
    t, r = target_and_undo(journal.TxKind.ROLLBACK)
    found = journal.parse_journal(listing((t, "applied 2026-01-01T00:00:05Z"), (r, end)))
    assert {x.id: x.status for x in found.txs}[t.id] == "applied 2026-01-01T00:00:05Z"
    assert found.notices == []


def test_rollback_check_of_many_files_names_exactly_the_changed_ones(tmp_path):
    """The check reads every file's hash from one sha256sum and walks its lines in step
    order (fh): with files changed by hand, one removed and one replaced by a symlink in
    between, each STALE line names its own file and its own hash, and nothing is restored."""
    import hashlib

    state = tmp_path / "state"
    files = [tmp_path / "etc" / f"f{i:02}.conf" for i in range(40)]
    files[0].parent.mkdir()
    for i, f in enumerate(files):
        f.write_bytes(f"old {i}\n".encode())
    tx = Tx(journal.new_id(), "apply", "h", "p", [
        step("x", str(f), "file", str(f), b64(f.read_bytes()), b64(f"new {i}\n".encode()))
        for i, f in enumerate(files)])
    assert run(journal.apply_script(tx, state_dir=str(state))).returncode == journal.OK
    (applied,) = journal.parse_journal(run(journal.journal_script(str(state))).stdout).txs
    files[3].write_bytes(b"by hand\n")
    files[17].write_bytes(b"by hand too\n")
    files[25].unlink()
    other = tmp_path / "elsewhere"
    other.write_bytes(b"linked\n")
    files[30].unlink()
    files[30].symlink_to(other)
    before = {f: f.read_bytes() for f in files if f.exists()}
    back = journal.inverse(applied, journal.new_id())
    r = run(journal.rollback_script(back, applied, state_dir=str(state)))
    assert r.returncode == journal.STALE, r.stdout + r.stderr
    stale = sorted(line.split("\t")[1:] for line in r.stdout.splitlines()
                   if line.startswith("STALE\t"))
    h = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    assert stale == sorted([[str(files[3]), h(b"by hand\n")],
                            [str(files[17]), h(b"by hand too\n")],
                            [str(files[25]), "absent"], [str(files[30]), h(b"linked\n")]])
    assert {f: f.read_bytes() for f in files if f.exists()} == before


def test_drifts_journal_reads_only_what_may_be_in_force_and_drift_sees_the_same(tmp_path):
    """journal.needs(in_force=True) (drift, the agent; facts.sh J) leaves the records of
    undone transactions on the node, and of the rollbacks and reverts whose marks say they
    undid one; a rollback whose target's mark is missing is still read (the reader
    completes the mark). What drift classifies from (each transaction in force, the last
    file bytes netfix wrote, the last apply per target) equals the full journal's."""
    from netfix import drift, facts

    txd = tmp_path / "state" / "tx"
    txd.mkdir(parents=True)
    f = step("sysctl", "/etc/x.conf", "file", "/etc/x.conf", None, b64(b"x=1\n"))

    def put(tx: Tx, status: str) -> Tx:
        (txd / f"{tx.id}.json").write_bytes(tx.record())
        (txd / f"{tx.id}.status").write_text(status + "\n")
        return tx

    def apply(n: int, status: str) -> Tx:
        return put(Tx(f"20261201T0000{n:02d}Z-{n:06x}", "apply", "h", "p", [f], time=n),
                   status)

    def undo(n: int, target: Tx, kind=journal.TxKind.ROLLBACK) -> Tx:
        r = journal.inverse(target, f"20261201T0000{n:02d}Z-{n:06x}", kind=kind)
        r.time = n
        return put(r, "applied 2026-12-01T00:00:00Z")

    t1 = apply(1, "applied 2026-12-01T00:00:00Z")
    t2 = apply(2, "rolled-back 20261201T000003Z-000003 2026-12-01T00:00:00Z")
    r3 = undo(3, t2)
    t4 = apply(4, "failed-restored 2026-12-01T00:00:00Z")
    t5 = apply(5, "applied 2026-12-01T00:00:00Z")  # its rollback was cut before the mark
    r6 = undo(6, t5)
    t7 = apply(7, "reverted-unconfirmed 20261201T000008Z-000008 2026-12-01T00:00:00Z")
    v8 = undo(8, t7, journal.TxKind.REVERT)
    t9 = apply(9, "applied-unconfirmed 2026-12-01T00:00:00Z")
    t10 = apply(10, "interrupted-restored 2026-12-01T00:00:00Z")

    def read(in_force: bool) -> journal.Journal:
        out = subprocess.run(["sh", "-s"], input=facts.build_script(
            journal.needs(str(txd.parent), in_force=in_force)), capture_output=True,
            text=True).stdout
        return journal.from_facts(facts.parse("h", out), str(txd.parent))

    full, lean = read(False), read(True)
    assert [t.id for t in full.txs] == [t.id for t in (t1, t2, r3, t4, t5, r6, t7, v8, t9, t10)]
    assert [t.id for t in lean.txs] == [t1.id, t5.id, r6.id, t9.id]
    assert sorted(lean.undone) == sorted(t.id for t in (t2, r3, t4, t7, v8, t10))
    assert not full.undone
    assert {t.id: t.status for t in lean.txs} == {t.id: t.status for t in full.txs
                                                  if t.id in {x.id for x in lean.txs}}
    assert lean.txs[1].state is TxStatus.ROLLED_BACK  # t5, completed from r6
    assert drift.last_written(lean.txs) == drift.last_written(full.txs)
    assert {k: v.id for k, v in drift.last_applied(lean.txs).items()} == \
        {k: v.id for k, v in drift.last_applied(full.txs).items()}
    assert [t.id for t in full.txs if t.state in (TxStatus.UNCONFIRMED, *INCOMPLETE)] == \
        [t.id for t in lean.txs if t.state in (TxStatus.UNCONFIRMED, *INCOMPLETE)]
