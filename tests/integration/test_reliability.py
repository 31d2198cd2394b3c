"""Faults on real lab nodes: a cut SSH session, a killed controller, a node-side run killed
half-way, a torn journal, an edited saved plan, a plan applied to the wrong machine, an odd
interface name. Each test states the invariant it checks.

The cut sweep throttles the lab link (tc tbf, on the lab's own veth only) so that the
script's transfer lasts about a second, and places each cut by what the node shows: the
staged script's size during the transfer, the transaction's progress file during the run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import NETFIX, skip_or_fail

from netfix_lab import netns as labmod

pytestmark = pytest.mark.integration

NODE = "node3"  # the sweep's node; node1 and node2 serve the other tests
# Per-interface IPv4 flags: writable in a network namespace, harmless on a lab veth.
FLAGS = ("accept_redirects", "send_redirects", "secure_redirects", "log_martians",
         "accept_source_route", "arp_filter", "arp_accept", "proxy_arp", "shared_media",
         "arp_notify", "drop_gratuitous_arp", "route_localnet", "accept_local",
         "src_valid_mark", "proxy_arp_pvlan", "disable_xfrm", "disable_policy",
         "bootp_relay", "drop_unicast_in_l2_multicast", "ignore_routes_with_linkdown")
PAIRS = 16  # veth pairs made inside the node: 32 interfaces x up to 20 flags
SIZES = {"10k": 10 * 1024, "100k": 100 * 1024, "300k": 300 * 1024}
RESULTS: list[tuple[str, str, str, str, str]] = []  # size, method, point, outcome, controller


def state_dir(lab, node: str) -> Path:
    """The node's /var/lib/netfix as the host sees it (a private bind of the lab dir)."""
    return lab.dir / "nodes" / node / "root" / "var" / "lib" / "netfix"


def tx_status(lab, node: str) -> dict[str, str]:
    txd = state_dir(lab, node) / "tx"
    out = {}
    for f in sorted(txd.glob("*.json")):
        st = f.with_suffix(".status")
        out[f.stem] = st.read_text().split()[0] if st.exists() else "never-started"
    return out


def read_values(lab, node: str, keys: list[str]) -> dict[str, str]:
    paths = " ".join("/proc/sys/" + k.replace(".", "/") for k in keys)
    out = lab.sh(node, f"grep -H '' {paths}")
    got = {}
    for line in out.splitlines():
        path, _, value = line.partition(":")
        got[path[len("/proc/sys/"):].replace("/", ".")] = value.strip()
    return got


NETFIX_DIRS = ("/etc/sysctl.d", "/etc/modprobe.d", "/etc/modules-load.d", "/etc/netfix",
               "/etc/udev/rules.d", "/etc/systemd/system")


def snapshot(lab, node: str, keys: list[str]) -> tuple[dict, dict, str]:
    """Live values, every file netfix may write (exact bytes), and the directory tree."""
    dirs = lab.sh(node, "for d in /etc/netfix /etc/udev /etc/udev/rules.d; do "
                  "[ -d $d ] && echo $d; done; true")
    return read_values(lab, node, keys), lab.files(node, NETFIX_DIRS), dirs


@pytest.fixture(scope="module")
def big(lab):
    """veth pairs inside NODE and the flags they offer, with the value to flip each to."""
    cmds = "; ".join(f"ip link add nfc{i}a type veth peer name nfc{i}b" for i in range(PAIRS))
    lab.sh(NODE, cmds)
    names = [f"nfc{i}{s}" for i in range(PAIRS) for s in "ab"]
    listing = lab.sh(NODE, "cd /proc/sys/net/ipv4/conf && for i in " + " ".join(names)
                     + "; do for f in " + " ".join(FLAGS) + "; do [ -w $i/$f ] && "
                     "printf '%s %s\\n' $i/$f $(cat $i/$f); done; done")
    flips = {}
    for line in listing.splitlines():
        path, value = line.split()
        if value in ("0", "1"):
            flips["net.ipv4.conf." + path.replace("/", ".")] = "1" if value == "0" else "0"
    try:
        yield flips
    finally:
        lab.sh(NODE, "; ".join(f"ip link del nfc{i}a" for i in range(PAIRS)), check=False)


def write_profile(path: Path, flips: dict[str, str], n: int) -> list[str]:
    keys = list(flips)[:n]
    path.write_text("sysctl:\n" + "".join(f"  {k}: {flips[k]}\n" for k in keys))
    return keys


def script_size(lab, profile: Path) -> tuple[int, int]:
    """(bytes, steps) of the apply script netfix would send NODE for `profile`."""
    from netfix import engine, journal
    from netfix.inventory import load_inventory
    from netfix.journal import Step, Tx

    host = load_inventory(str(lab.inventory)).select(NODE)[0]
    hp = engine.make_plan([host], str(profile)).hosts[0]
    assert not hp.error, hp.error
    steps = [Step(**op.__dict__, knob=c.knob, target=c.target) for c in hp.pending
             for op in c.ops]
    tx = Tx(journal.new_id(), "apply", NODE, hp.profile, steps)
    return len(journal.apply_script(tx).encode()), len(steps)


def profile_of_size(lab, tmp: Path, flips: dict[str, str], size: int) -> tuple[Path, list, int]:
    """A profile whose apply script is about `size` bytes (within 10 %)."""
    path = tmp / f"sweep-{size}.yaml"
    lo_n = 4
    lo = script_size(lab, path) if write_profile(path, flips, lo_n) else (0, 0)
    hi_n = min(len(flips), 60)
    write_profile(path, flips, hi_n)
    hi = script_size(lab, path)
    per_key = (hi[0] - lo[0]) / (hi_n - lo_n)
    n = max(1, min(len(flips), round(lo_n + (size - lo[0]) / per_key)))
    keys = write_profile(path, flips, n)
    got, steps = script_size(lab, path)
    assert abs(got - size) < size * 0.1 or n == len(flips), (size, got, n)
    assert got >= size * 0.9, f"only {len(flips)} flags in the node: script {got} bytes"
    return path, keys, steps


def throttle(lab, node: str, rate_bps: int) -> str:
    """Slow the host -> node direction of the node's lab link (tbf: netem is not in every
    kernel). Returns the link name for unthrottle."""
    link = f"{labmod.LINK_PREFIX}{labmod._index_of(node)}"
    subprocess.run(["tc", "qdisc", "replace", "dev", link, "root", "tbf", "rate",
                    str(rate_bps), "burst", "3000", "limit", "4000000"], check=True)
    return link


def unthrottle(link: str) -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], check=False)


def node_pids(node: str, pattern: str) -> list[int]:
    """Host pids of the node's processes whose command line matches `pattern`."""
    pids = []
    for pid in labmod._netns_pids(labmod.node_netns(labmod._index_of(node))):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if re.search(pattern, cmd):
            pids.append(pid)
    return pids


def settle(lab, node: str) -> None:
    """Wait until no netfix script runs in the node any more (a detached run may go on
    after its connection is gone), then check the node lock is free."""
    deadline = time.monotonic() + 120
    while node_pids(node, r"netfix-(stage|run)") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not node_pids(node, r"netfix-(stage|run)"), "a netfix script still runs"
    lab.sh(node, "flock -n /var/lib/netfix/lock true")


def staged(lab, node: str) -> int:
    """Bytes of the script the node has received so far; -1 before it starts receiving.
    sshd hands the data on per SSH packet (32 KiB), so a smaller script arrives whole."""
    run = state_dir(lab, node) / "run"
    sizes = [p.stat().st_size for p in run.glob("s.*") if p.name.count(".") == 1] \
        if run.is_dir() else []
    return max(sizes, default=-1)


def progress(lab, node: str, known: set[str]) -> int:
    for p in (state_dir(lab, node) / "tx").glob("*.progress"):
        if p.stem not in known:
            return len(p.read_text().splitlines())
    return -1


def cut(proc: subprocess.Popen, node: str, method: str) -> None:
    if method == "controller":
        proc.kill()
    else:  # the node's sshd session for this connection (not the listener)
        for pid in node_pids(node, r"^sshd: root"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def apply_and_cut(lab, profile: Path, method: str, phase: str, frac: float, total: int,
                  steps: int) -> tuple[str, subprocess.Popen]:
    """Start an apply and cut it when the node shows `phase` at `frac`. Returns where the
    cut really landed."""
    known = set(tx_status(lab, NODE))
    proc = subprocess.Popen([NETFIX, "apply", "--yes", "--profile", str(profile), "-i",
                             str(lab.inventory), "--limit", NODE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    landed = "after the end"
    while time.monotonic() < deadline and proc.poll() is None:
        got = staged(lab, NODE)
        done = progress(lab, NODE, known)
        if phase == "transfer" and got >= 0 and got >= frac * total and done < 0:
            landed = f"transfer {100 * got // total}%"
            break
        if done >= 0 and (phase == "transfer" or done >= frac * steps):
            landed = f"run step {done}/{steps}"
            break
        time.sleep(0.001)
    cut(proc, NODE, method)
    return landed, proc


@pytest.mark.parametrize("method", ["controller", "sshd"])
@pytest.mark.parametrize("size", list(SIZES))
def test_cut_anywhere_leaves_node_untouched_or_fully_applied(lab, big, tmp_path, size, method):
    """Invariant: after a cut at any point of the transfer or the run, the node is either
    untouched or fully applied with a complete journal; after `netfix rollback` its files
    are byte-identical to before and its values equal."""
    profile, keys, steps = profile_of_size(lab, tmp_path, big, SIZES[size])
    total, _ = script_size(lab, profile)
    before = snapshot(lab, NODE, keys)
    # The transfer lasts about a second, whatever the size.
    link = throttle(lab, NODE, max(64_000, total * 8))
    points = [("transfer", f) for f in (0.0, 0.25, 0.5, 0.75, 0.95)] + \
             [("run", g) for g in (0.0, 0.25, 0.5, 0.75, 1.0)]
    try:
        for phase, frac in points:
            known = set(tx_status(lab, NODE))
            landed, proc = apply_and_cut(lab, profile, method, phase, frac, total, steps)
            out, err = proc.communicate(timeout=300)
            settle(lab, NODE)
            new = {k: v for k, v in tx_status(lab, NODE).items() if k not in known}
            now = snapshot(lab, NODE, keys)
            if not new:
                assert now == before, f"{landed}: not journaled, yet the node changed"
                outcome = "untouched"
            else:
                (tx_id, status), = new.items()
                assert status == "applied", f"{landed}: transaction {tx_id} is {status}"
                record = json.loads((state_dir(lab, NODE) / "tx" / f"{tx_id}.json").read_text())
                assert len(record["steps"]) == steps
                assert now[0] == {k: big[k] for k in keys}, f"{landed}: applied only in part"
                outcome = "applied"
            if method == "sshd" and proc.returncode is not None:
                # The controller outlived the cut: it must say what really happened.
                said = out + err
                if outcome == "applied":
                    assert proc.returncode == 0 and tx_id in said, said
                else:
                    assert proc.returncode == 1 and "nothing was changed" in said, said
            controller = f"exit {proc.returncode}" if method == "sshd" else "killed"
            RESULTS.append((size, method, landed, outcome, controller))
            if outcome == "applied":
                lab.netfix("rollback", "--yes", "--limit", NODE)
                assert snapshot(lab, NODE, keys) == before, f"{landed}: rollback not exact"
        # The sweep must really have cut inside both phases.
        landed_in = {r[2].split()[0] for r in RESULTS if r[:2] == (size, method)}
        assert {"transfer", "run"} <= landed_in, RESULTS
    finally:
        unthrottle(link)
        report = Path(os.environ.get("NETFIX_CUT_SWEEP_REPORT", "/tmp/netfix-cut-sweep.tsv"))
        with report.open("a") as f:
            for row in RESULTS:
                if row[:2] == (size, method):
                    f.write("\t".join(row) + "\n")


# ------------------------------------------------------------------ interrupted runs


def pause_apply(lab, node: str, profile: str, step: int) -> tuple[subprocess.Popen, str]:
    """Apply with the node's run paused after `step` (fault injection), holding the lock."""
    return pause_run(lab, node, ["apply", "--yes", "--profile", profile],
                     {"NETFIX_TEST_PAUSE_AFTER_STEP": str(step)})


def pause_run(lab, node: str, args: list[str], env: dict[str, str],
              known: set[str] | None = None) -> tuple[subprocess.Popen | None, str]:
    """Run netfix `args` with the fault-injection `env` until a transaction on `node` not
    in `known` (default: the journal now) pauses, holding the lock. Returns the controller
    (None for no `args`: wait for a run already under way) and the paused transaction."""
    known = set(tx_status(lab, node)) if known is None else known
    proc = None
    if args:
        proc = subprocess.Popen([NETFIX, *args, "-i", str(lab.inventory), "--limit", node],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env})
    txd = state_dir(lab, node) / "tx"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        paused = [p for p in txd.glob("*.paused") if p.stem not in known]
        if paused:
            return proc, paused[0].stem
        assert proc is None or proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError(f"netfix {' '.join(args)} never paused")


def kill_node_run(node: str) -> None:
    """SIGKILL the node-side run and everything in its session: a crash of the node's
    shell, the way an OOM kill or a power cut stops it (no trap runs)."""
    for pid in node_pids(node, r"netfix-run|sleep 600"):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


SMALL = """sysctl:
  net.ipv4.tcp_synack_retries: 3
  net.ipv4.tcp_fin_timeout: 17
  net.ipv4.tcp_keepalive_time: 611
  net.ipv4.tcp_keepalive_intvl: 31
conntrack: {timeouts: {udp: 17, tcp_syn_sent: 31}}
"""
SMALL_KEYS = ["net.ipv4.tcp_synack_retries", "net.ipv4.tcp_fin_timeout",
              "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_keepalive_intvl",
              "net.netfilter.nf_conntrack_udp_timeout",
              "net.netfilter.nf_conntrack_tcp_timeout_syn_sent"]


@pytest.mark.parametrize("step,reader", [(1, "plan"), (3, "rollback"), (5, "drift"),
                                         (8, "history"), (9, "apply")])
def test_interrupted_transaction_is_undone_by_the_next_run(lab, tmp_path, step, reader):
    """Invariant: a run killed after step k of n (controller gone too) leaves the node
    `applying`; the next netfix run of any kind undoes steps 1..k under the lock, marks it
    interrupted-restored and says so; files are then byte-identical and values equal."""
    node = "node1"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    before = snapshot(lab, node, SMALL_KEYS)
    proc, tx_id = pause_apply(lab, node, str(profile), step)
    n = len(json.loads((state_dir(lab, node) / "tx" / f"{tx_id}.json").read_text())["steps"])
    assert step <= n, f"profile has only {n} steps"
    proc.kill()
    proc.communicate()
    kill_node_run(node)
    settle(lab, node)
    assert tx_status(lab, node)[tx_id] == "applying"
    if step < n:
        assert snapshot(lab, node, SMALL_KEYS) != before  # really half-applied

    args = {"plan": ["plan", "--profile", str(profile)], "rollback": ["rollback", "--yes"],
            "drift": ["drift", "--profile", str(profile)], "history": ["history"],
            "apply": ["apply", "--yes", "--profile", str(profile)]}[reader]
    p = lab.netfix(*args, "--limit", node, check_rc=None)
    said = " ".join((p.stdout + p.stderr).split())  # tables wrap long cells
    assert f"transaction {tx_id} had been interrupted after step {step} of {n}" in said, said
    assert "Traceback" not in said
    assert tx_status(lab, node)[tx_id] == "interrupted-restored"
    if reader == "apply":  # it recovered first, then applied the profile whole
        assert p.returncode == 0, said
        lab.netfix("rollback", "--yes", "--limit", node)
    elif reader == "rollback":  # nothing is left to roll back once recovered
        assert p.returncode == 1 and "nothing to roll back" in said, said
    assert snapshot(lab, node, SMALL_KEYS) == before
    # Recovery happens once: the next run finds nothing to do.
    again = lab.netfix("history", "--limit", node)
    assert "had been interrupted" not in again.stdout + again.stderr


def test_lost_connection_reports_what_the_node_did(lab, tmp_path):
    """Invariant: when the session dies mid-run, the controller reconnects, reads the
    transaction's status from the node's journal and reports it with the transaction id,
    never `exit -1`."""
    node = "node2"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    before = snapshot(lab, node, SMALL_KEYS)
    proc, tx_id = pause_apply(lab, node, str(profile), 2)
    for pid in node_pids(node, r"^sshd: root"):
        os.kill(pid, signal.SIGKILL)
    # The run goes on by itself: release it (the pause is a sleep in the node's run).
    time.sleep(0.5)
    for pid in node_pids(node, r"sleep 600"):
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert tx_id in out and "reconnecting" in out + err and "applied" in out, out + err
    assert "exit -1" not in out + err
    assert tx_status(lab, node)[tx_id] == "applied"
    lab.netfix("rollback", "--yes", "--limit", node)
    assert snapshot(lab, node, SMALL_KEYS) == before


def test_unreachable_after_cut_is_unknown_with_the_tx_id(lab, tmp_path):
    """Invariant: if the node cannot be reached again after the cut, the host is `unknown`
    with the transaction id (not an error that hides that something may have run)."""
    node = "node2"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    before = snapshot(lab, node, SMALL_KEYS)
    proc, tx_id = pause_apply(lab, node, str(profile), 2)
    # New SSH connections to the node go unanswered from now on (its own firewall).
    lab.sh(node, "nft add table inet nftest; nft add chain inet nftest in '{ type filter "
           "hook input priority -300; }'; nft add rule inet nftest in tcp dport 22 ct state "
           "new drop")
    try:
        for pid in node_pids(node, r"^sshd: root"):
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        lab.sh(node, "nft delete table inet nftest")
    assert proc.returncode == 1
    assert re.search(rf"{node}\s+unknown\s+{tx_id}", out), out + err
    for pid in node_pids(node, r"sleep 600"):
        os.kill(pid, signal.SIGKILL)
    settle(lab, node)
    assert tx_status(lab, node)[tx_id] == "applied"
    lab.netfix("rollback", "--yes", "--limit", node)
    assert snapshot(lab, node, SMALL_KEYS) == before


def test_staged_script_that_arrives_short_runs_nothing(lab):
    """Invariant: a script whose bytes do not match the sha256 announced on the command
    line is not run at all (here: its last byte never arrives, as a cut would leave it),
    and the error says how many bytes of how many came."""
    from netfix import transport
    from netfix.inventory import load_inventory

    host = load_inventory(str(lab.inventory)).select("node1")[0]
    run_dir = state_dir(lab, "node1") / "run"
    staged_before = set(run_dir.glob("s.*"))  # runs killed by other tests leave theirs
    marker = "/var/lib/netfix/staged-marker"
    script = f"touch {marker}\n"
    argv, data = transport._argv(host, script, True, "/var/lib/netfix")
    client = transport._client(host)
    try:
        # Keep all three files: dropping one closes the channel.
        stdin, stdout, stderr = client.exec_command(" ".join(map(_q, argv)))
        stdin.write(data[:-1])
        stdin.channel.shutdown_write()
        said = stdout.read().decode()
        rc = stdout.channel.recv_exit_status()
    finally:
        client.close()
    assert rc == transport.INCOMPLETE and "nothing was run" in said
    assert f"({len(data) - 1} of {len(data)} bytes)" in said, said
    assert lab.sh("node1", f"[ -e {marker} ] && echo yes || echo no").strip() == "no"
    assert set(run_dir.glob("s.*")) == staged_before


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


# ------------------------------------------------------------------ torn journal


def test_torn_journal_is_reported_never_skipped(lab, tmp_path):
    """Invariant: an unreadable journal file is named by history (exit 1) and drift (a
    finding, exit 2), and rollback refuses, saying what it cannot do and how to recover."""
    node = "node1"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    lab.netfix("apply", "--yes", "--profile", str(profile), "--limit", node)
    (tx_id, _), = [(k, v) for k, v in tx_status(lab, node).items() if v == "applied"][-1:]
    path = state_dir(lab, node) / "tx" / f"{tx_id}.json"
    good = path.read_bytes()
    path.write_bytes(good[:len(good) // 2])
    try:
        h = lab.netfix("history", "--limit", node, check_rc=1)
        assert tx_id in h.stdout and "UNREADABLE" in h.stdout, h.stdout
        d = lab.netfix("drift", "--profile", str(profile), "--limit", node, "--json",
                       check_rc=2)
        items = json.loads(d.stdout)["hosts"][0]["items"]
        assert any(i["target"] == tx_id and i["actual"] == "unreadable" for i in items), items
        r = lab.netfix("rollback", "--yes", "--limit", node, check_rc=1)
        assert tx_id in r.stdout + r.stderr and "by hand" in r.stdout + r.stderr
    finally:
        path.write_bytes(good)
    lab.netfix("rollback", "--yes", "--limit", node)


def test_rollback_reads_only_the_records_in_force(lab, tmp_path):
    """Invariant: rollback without --tx reads only the journal records that may be in
    force (facts.sh J): a torn record of an undone transaction neither blocks it nor is
    read, and the node comes back to its state from before the first apply, byte-identical.
    --tx, which may name any record, reads them all and names the torn one."""
    node = "node2"
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(SMALL)
    second.write_text(SMALL.replace("611", "612"))
    before = snapshot(lab, node, SMALL_KEYS)
    known = set(tx_status(lab, node))
    lab.netfix("apply", "--yes", "--profile", str(first), "--limit", node)
    a, = set(tx_status(lab, node)) - known  # ids sort by second only: not by name
    lab.netfix("apply", "--yes", "--profile", str(second), "--limit", node)
    b, = set(tx_status(lab, node)) - known - {a}
    lab.netfix("rollback", "--yes", "--limit", node)
    assert tx_status(lab, node)[b] == "rolled-back" and tx_status(lab, node)[a] == "applied"
    path = state_dir(lab, node) / "tx" / f"{b}.json"
    good = path.read_bytes()
    path.write_bytes(good[:len(good) // 2])
    try:
        r = lab.netfix("rollback", "--yes", "--limit", node)
        assert f"restored transaction {a}" in r.stdout, r.stdout
        assert tx_status(lab, node)[a] == "rolled-back"
        assert snapshot(lab, node, SMALL_KEYS) == before
        t = lab.netfix("rollback", "--yes", "--limit", node, "--tx", b, check_rc=1)
        assert b in t.stdout + t.stderr and "unreadable" in t.stdout + t.stderr, t.stdout
    finally:
        path.write_bytes(good)


# ------------------------------------------------------------------ saved plans


def test_edited_saved_plan_is_refused_and_never_run(lab, tmp_path):
    """Invariant: apply PLAN re-plans and runs only freshly computed steps equal to the
    saved ones; an edited step is refused naming it, and nothing of it runs."""
    node = "node2"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    saved = tmp_path / "plan.json"
    lab.netfix("plan", "--profile", str(profile), "--limit", node, "-o", str(saved))
    data = json.loads(saved.read_text())
    change = next(c for c in data["hosts"][0]["changes"] if c["ops"])
    change["ops"][0].update(kind="cmd", read="true", set="id > /tmp/pwned-from-plan")
    saved.write_text(json.dumps(data))
    before = snapshot(lab, node, SMALL_KEYS)
    p = lab.netfix("apply", str(saved), "--limit", node, check_rc=1)
    assert "does not match" in p.stdout and change["target"] in p.stdout, p.stdout
    assert lab.sh(node, "[ -e /tmp/pwned-from-plan ] && echo yes || echo no").strip() == "no"
    assert snapshot(lab, node, SMALL_KEYS) == before


def test_saved_plan_from_a_relative_profile_path_applies_and_edits_make_it_stale(lab,
                                                                                 tmp_path):
    """Invariant: the plan records the profile's resolved path and content hash: it applies
    from another directory; after an edit of the profile it is refused as stale."""
    node = "node2"
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "mine.yaml").write_text(SMALL)
    saved = tmp_path / "plan.json"
    subprocess.run([NETFIX, "plan", "--profile", "./dir/mine.yaml", "-i", str(lab.inventory),
                    "--limit", node, "-o", str(saved)], cwd=tmp_path, check=True,
                   capture_output=True)
    before = snapshot(lab, node, SMALL_KEYS)
    (tmp_path / "dir" / "mine.yaml").write_text(SMALL.replace("611", "612"))
    p = lab.netfix("apply", str(saved), "--limit", node, check_rc=1)
    assert "stale" in p.stdout and "changed since the plan" in p.stdout, p.stdout
    assert snapshot(lab, node, SMALL_KEYS) == before
    (tmp_path / "dir" / "mine.yaml").write_text(SMALL)
    lab.netfix("apply", str(saved), "--limit", node)  # from the lab's cwd, not tmp_path
    assert read_values(lab, node, SMALL_KEYS)["net.ipv4.tcp_keepalive_time"] == "611"
    lab.netfix("rollback", "--yes", "--limit", node)
    assert snapshot(lab, node, SMALL_KEYS) == before


def test_saved_plan_refuses_another_machine_of_the_same_name(lab, tmp_path):
    """Invariant: a plan made for node1 is not applied when the name now leads to another
    machine (here node2's address: another host key)."""
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    saved = tmp_path / "plan.json"
    lab.netfix("plan", "--profile", str(profile), "--limit", "node1", "-o", str(saved))
    before = snapshot(lab, "node2", SMALL_KEYS)
    moved = tmp_path / "moved.yaml"
    moved.write_text(lab.inventory.read_text().replace(
        "node1: {ssh_host: 10.251.0.11}", "node1: {ssh_host: 10.251.0.12}"))
    p = lab.netfix("apply", str(saved), "-i", str(moved), check_rc=1)
    assert "wrong-machine" in p.stdout and "another machine" in p.stdout, p.stdout
    assert snapshot(lab, "node2", SMALL_KEYS) == before


# ------------------------------------------------------------------ odd hosts


def test_odd_interface_name_is_that_hosts_error_only(lab, tmp_path):
    """Invariant: an interface named e"x'y on one node makes that host an error; the other
    hosts are planned; exit 1; no traceback."""
    weird = "e\"x'y"
    lab.sh("node2", f"ip link add {_q(weird)} type veth peer name nfodd0")
    try:
        profile = tmp_path / "nic.yaml"
        profile.write_text("nic:\n  interfaces:\n    - match: {name: '*'}\n"
                           "      offloads: {gro: on}\n")
        p = lab.netfix("plan", "--profile", str(profile), "--limit", "node1,node2",
                       check_rc=None)
        said = p.stdout + p.stderr
        assert "Traceback" not in said, said
        plan = json.loads(lab.netfix("plan", "--profile", str(profile), "--limit",
                                     "node1,node2", "--json", check_rc=None).stdout)
        by_host = {h["host"]: h for h in plan["hosts"]}
        if by_host["node2"]["error"]:
            assert p.returncode == 1 and "node2" in p.stderr
        else:  # read correctly: then the odd name is a row like any other, quoted
            assert any(weird in c["target"] for c in by_host["node2"]["changes"])
        assert not by_host["node1"]["error"] and by_host["node1"]["changes"]
    finally:
        lab.sh("node2", "ip link del nfodd0", check=False)


def test_cut_sweep_report(lab):
    """Prints the sweep's table (size x cut point x outcome) for the closing note."""
    if not RESULTS:
        pytest.skip("the sweep did not run in this session")
    width = max(len(r[2]) for r in RESULTS)
    for r in RESULTS:
        print(f"{r[0]:>5} {r[1]:>10}  {r[2]:<{width}}  {r[3]:<9} {r[4]}")
    assert all(r[3] in ("untouched", "applied") for r in RESULTS)


def test_tools_for_the_sweep():
    skip_or_fail(None if shutil.which("tc") else "tc (iproute2) is missing", "the cut sweep")


def test_saved_plan_with_two_profiles_replans_each_host_with_its_own(lab, tmp_path):
    """Invariant: a saved plan whose hosts have different profiles is re-planned per host
    with that host's own profile (the worker threads share no mutable profile choice)."""
    other = tmp_path / "other.yaml"
    other.write_text(SMALL.replace("611", "733").replace("tcp_fin_timeout: 17",
                                                        "tcp_fin_timeout: 19"))
    mine = tmp_path / "small.yaml"
    mine.write_text(SMALL)
    inv = tmp_path / "inv.yaml"
    inv.write_text(lab.inventory.read_text().replace(
        "node1: {ssh_host: 10.251.0.11}", f"node1: {{ssh_host: 10.251.0.11, profile: {mine}}}")
        .replace("node2: {ssh_host: 10.251.0.12}",
                 f"node2: {{ssh_host: 10.251.0.12, profile: {other}}}"))
    saved = tmp_path / "plan.json"
    before = {n: snapshot(lab, n, SMALL_KEYS) for n in ("node1", "node2")}
    lab.netfix("plan", "-i", str(inv), "--limit", "node1,node2", "-o", str(saved))
    for _ in range(3):  # the mix-up depended on thread timing: try it more than once
        p = lab.netfix("apply", str(saved), "-i", str(inv), "--limit", "node1,node2")
        assert "stale" not in p.stdout, p.stdout
        assert read_values(lab, "node1", SMALL_KEYS)["net.ipv4.tcp_keepalive_time"] == "611"
        assert read_values(lab, "node2", SMALL_KEYS)["net.ipv4.tcp_keepalive_time"] == "733"
        lab.netfix("rollback", "--yes", "-i", str(inv), "--limit", "node1,node2")
        assert {n: snapshot(lab, n, SMALL_KEYS) for n in before} == before


def test_rollback_removes_the_directories_apply_created(lab, tmp_path):
    """Invariant: after apply + rollback of a NIC profile (its boot script lives in
    /etc/netfix, which apply creates), the node's directory tree is as before."""
    node = "node1"
    profile = tmp_path / "nic.yaml"
    profile.write_text("nic:\n  interfaces:\n    - match: {name: eth1}\n"
                       "      offloads: {gro: off}\n")
    before = snapshot(lab, node, SMALL_KEYS)
    assert "/etc/netfix" not in before[2]
    lab.netfix("apply", "--yes", "--profile", str(profile), "--limit", node)
    assert "/etc/netfix" in snapshot(lab, node, SMALL_KEYS)[2]
    lab.netfix("rollback", "--yes", "--limit", node)
    assert snapshot(lab, node, SMALL_KEYS) == before


def connections(lab, node: str) -> int:
    """SSH connections the node's sshd has accepted so far (its log, LogLevel INFO)."""
    return (lab.dir / "nodes" / node / "sshd.log").read_text().count("Accepted publickey")


def test_apply_carries_its_transaction_over_the_plans_connection(lab, tmp_path):
    """Invariant: `apply --yes` makes one SSH connection per node (the plan's carries the
    transaction), while --confirm's proof is still a connection of its own, made after the
    change; both apply fully and roll back byte-identical."""
    node = "node2"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    before = snapshot(lab, node, SMALL_KEYS)
    n = connections(lab, node)
    lab.netfix("apply", "--yes", "--profile", str(profile), "--limit", node)
    assert connections(lab, node) - n == 1
    assert read_values(lab, node, SMALL_KEYS)["net.ipv4.tcp_keepalive_time"] == "611"
    lab.netfix("rollback", "--yes", "--limit", node)
    assert snapshot(lab, node, SMALL_KEYS) == before
    n = connections(lab, node)
    p = lab.netfix("apply", "--yes", "--profile", str(profile), "--limit", node,
                   "--confirm", "60", "--auto-confirm")
    assert "confirmed" in p.stdout, p.stdout
    assert connections(lab, node) - n == 2  # the plan's (and the transaction's), the proof
    lab.netfix("rollback", "--yes", "--limit", node)
    assert snapshot(lab, node, SMALL_KEYS) == before


def test_a_kept_connection_gone_stale_is_replaced_before_anything_runs(lab, tmp_path):
    """Invariant: a kept connection that died while idle (its sshd killed, as a node
    reboot or an idle timeout would while the operator reads the plan) is replaced by a
    new one before the transaction starts: the transaction runs exactly once, fully
    applied and journaled, and rolls back byte-identical."""
    from netfix import engine, transport
    from netfix.inventory import load_inventory

    node = "node2"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    before = snapshot(lab, node, SMALL_KEYS)
    known = set(tx_status(lab, node))
    hosts = load_inventory(str(lab.inventory)).select(node)
    with transport.keep():
        the_plan = engine.make_plan(hosts, str(profile))
        assert the_plan.has_changes
        sessions = node_pids(node, r"^sshd: root")
        assert sessions, "the plan's connection is not kept open"
        for pid in sessions:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        n = connections(lab, node)
        (result,) = engine.apply(hosts, the_plan)
    assert result.ok, result
    assert connections(lab, node) - n == 1
    new = {k: v for k, v in tx_status(lab, node).items() if k not in known}
    assert list(new.values()) == ["applied"], new
    assert read_values(lab, node, SMALL_KEYS)["net.ipv4.tcp_keepalive_time"] == "611"
    deadline = time.monotonic() + 10
    while node_pids(node, r"^sshd: root") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not node_pids(node, r"^sshd: root"), "keep() left a connection open"
    lab.netfix("rollback", "--yes", "--limit", node)
    assert snapshot(lab, node, SMALL_KEYS) == before


def test_rollback_is_two_round_trips_and_its_own_check_refuses_a_moved_value(lab, tmp_path,
                                                                               monkeypatch):
    """Invariant: rollback reads the journal, then runs the transaction whose own check
    (under the node lock) refuses when a value no longer holds what netfix wrote: two
    round trips on one connection, nothing restored on a refusal, byte-identical after."""
    from netfix import engine, transport
    from netfix.inventory import load_inventory
    from netfix.status import HostStatus

    node = "node2"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    before = snapshot(lab, node, SMALL_KEYS)
    lab.netfix("apply", "--yes", "--profile", str(profile), "--limit", node)
    trips = []
    real = transport._run_ssh
    monkeypatch.setattr(transport, "_run_ssh", lambda *a: trips.append(1) or real(*a))
    hosts = load_inventory(str(lab.inventory)).select(node)
    lab.sh(node, "sysctl -qw net.ipv4.tcp_keepalive_time=612")
    (refused,) = engine.rollback(hosts)
    assert refused.status is HostStatus.CHANGED_SINCE and len(trips) == 2, refused
    assert refused.details == ["net.ipv4.tcp_keepalive_time: found '612', netfix wrote '611'"]
    assert read_values(lab, node, SMALL_KEYS)["net.ipv4.tcp_fin_timeout"] == "17"
    lab.sh(node, "sysctl -qw net.ipv4.tcp_keepalive_time=611")
    trips.clear()
    n = connections(lab, node)
    (done,) = engine.rollback(hosts)
    assert done.ok and len(trips) == 2 and connections(lab, node) - n == 1, done
    assert snapshot(lab, node, SMALL_KEYS) == before



# ------------------------------------------ the two status writes that end a rollback

PAUSE_MARKS = {"NETFIX_TEST_PAUSE_BEFORE_MARKS": "1"}


def history_of(lab, node: str) -> tuple[dict[str, dict], str]:
    p = lab.netfix("history", "--json", "--limit", node)
    return {t["id"]: t for t in json.loads(p.stdout)[node]}, " ".join(p.stderr.split())


def test_rollback_cut_before_its_targets_mark_leaves_it_rolled_back(lab, tmp_path):
    """Invariant: a rollback R of T whose node run is killed after R's own final status and
    before T's mark leaves the node with T's old values (files byte-identical), R applied,
    and history and rollback treating T as rolled back by R; the next run that takes the
    node lock (confirm) writes T's mark on the node, and nothing is redone."""
    node = "node2"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    before = snapshot(lab, node, SMALL_KEYS)
    p = lab.netfix("apply", "--yes", "--json", "--profile", str(profile), "--limit", node)
    tx_id = json.loads(p.stdout)[0]["tx"]
    assert snapshot(lab, node, SMALL_KEYS) != before
    proc, rid = pause_run(lab, node, ["rollback", "--yes", "--tx", tx_id], PAUSE_MARKS)
    proc.kill()
    proc.communicate()
    kill_node_run(node)
    settle(lab, node)
    assert (tx_status(lab, node)[rid], tx_status(lab, node)[tx_id]) == ("applied", "applied")
    assert snapshot(lab, node, SMALL_KEYS) == before

    hist, said = history_of(lab, node)
    assert hist[rid]["kind"] == "rollback" and hist[rid]["rolls_back"] == tx_id
    assert hist[tx_id]["status"].startswith(f"rolled-back {rid} "), hist[tx_id]
    assert f"transaction {tx_id} still said applied" in said, said
    again = lab.netfix("rollback", "--yes", "--tx", tx_id, "--limit", node, check_rc=1)
    assert f"transaction {tx_id} is already rolled-back {rid}" in again.stdout + again.stderr
    assert tx_status(lab, node)[tx_id] == "applied"  # reading repaired nothing on the node

    lab.netfix("confirm", "--limit", node)  # a run under the lock
    assert tx_status(lab, node)[tx_id] == "rolled-back"
    assert not list((state_dir(lab, node) / "tx").glob("*.marks"))
    hist, said = history_of(lab, node)
    assert hist[tx_id]["status"].startswith(f"rolled-back {rid} ") and "still said" not in said
    assert snapshot(lab, node, SMALL_KEYS) == before


def test_revert_cut_before_its_targets_mark_reads_reverted(lab, tmp_path):
    """Invariant: the armed revert R of an unconfirmed T, its node run killed after R's own
    final status and before T's mark, leaves T's old values (files byte-identical); history
    says T reverted-unconfirmed by R (kind revert), `netfix confirm` reports it reverted
    (not confirmed, not "reverting") and writes the mark, and nothing is redone."""
    node = "node2"
    profile = tmp_path / "small.yaml"
    profile.write_text(SMALL)
    before = snapshot(lab, node, SMALL_KEYS)
    known = set(tx_status(lab, node))  # the revert may start before apply returns
    p = lab.netfix("apply", "--yes", "--json", "--profile", str(profile), "--limit", node,
                   "--confirm", "3", env=PAUSE_MARKS)
    result = json.loads(p.stdout)[0]
    assert result["status"] == "applied-unconfirmed", result
    tx_id = result["tx"]
    _, rid = pause_run(lab, node, [], {}, known | {tx_id})
    kill_node_run(node)
    settle(lab, node)
    assert (tx_status(lab, node)[rid], tx_status(lab, node)[tx_id]) == \
        ("applied", "applied-unconfirmed")
    assert snapshot(lab, node, SMALL_KEYS) == before

    hist, _ = history_of(lab, node)
    assert hist[rid]["kind"] == "revert" and hist[rid]["rolls_back"] == tx_id
    assert hist[tx_id]["status"].startswith(f"reverted-unconfirmed {rid} "), hist[tx_id]
    c = lab.netfix("confirm", "--json", "--limit", node, "--tx", tx_id, check_rc=1)
    assert json.loads(c.stdout)[0]["status"] == "reverted", c.stdout
    assert tx_status(lab, node)[tx_id] == "reverted-unconfirmed"
    assert snapshot(lab, node, SMALL_KEYS) == before
