#!/usr/bin/env python3
"""Fleet benchmark: plan, apply, rollback and drift on lab nodes, next to a bare paramiko floor.

Run as root from the repository (`.venv/bin/python bench/fleet.py`). For every profile,
delay, node count and command it runs, as fresh processes so that start-up counts:

  floor    a minimal paramiko script, one thread per node, all in parallel, each doing
           what netfix does on the wire and nothing else: `1x1` one connection with one
           command (`true`) per node (the floor of plan and drift); `1x2` one connection
           with two commands (apply: netfix's plan round trip, then the staged apply
           script over the same connection; rollback: the journal, then its transaction);
           `2x1` two connections one after the other, one command each (shown beside:
           apply's earlier shape), and so on (CONNSxCMDS); `1x1+s` (beside plan and
           drift) runs netfix's own node script for the command instead of `true`, and
           `1x2+s` (beside apply and rollback) netfix's own two commands, the transaction
           included, built beforehand by netfix's code for each node
  netfix   `netfix plan|apply|drift|rollback -i <inventory> --limit <nodes> [--profile P]`,
           `netfix doctor --window 0` (floor 1x1) and `--window W` (floor: that round's
           window-0 run + W: the window is slept once for the fleet, not per host)

interleaved (floor, netfix, floor, netfix...) so that anything else on the machine weighs on
both alike. apply and rollback alternate, so each measured run starts from the same state:
apply from the clean node, drift on the applied node, rollback back to clean.

Per row it prints the median of --repeat runs (min and max beside it), the ratio to the
floor's median measured in the same run, the controller's CPU seconds (user+system, from
wait4) and peak RSS, and the SSH sessions and commands each node's sshd logged during the
runs (sshd runs with LogLevel VERBOSE for that: "Accepted publickey" is a session,
"Starting session: command" a command). Targets (issue 17) are shown next to the ratio.

--delay-ms D adds D ms of delay each way on every lab link: with `tc qdisc ... netem` on
both ends of each node's veth when the kernel has sch_netem, else through a userspace delay
proxy (bench/delayproxy.py) on 127.0.0.1 in front of each node's sshd, used by the floor and
by netfix alike. Either way every round trip to a node costs 2 x D more.

Lab nodes: each (profile, delay) section takes /run/netfix-lab-tests.lock (the lock the lab
tests take), starts its own nodes (distinct nodes per node count, so journals do not pile
up across sizes), measures, tears them down (also on errors) and releases the lock.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from netfix_lab import netns as lab

REPO = Path(__file__).resolve().parent.parent
NETFIX = str(Path(sys.executable).with_name("netfix"))
LOCK = "/run/netfix-lab-tests.lock"
PROFILES = {
    "public-vds": "public-vds",
    "fw+nic": str(REPO / "bench" / "profiles" / "public-vds-firewall-nic.yaml"),
}
COMMANDS = ("plan", "apply", "drift", "rollback", "doctor")
# The floor of each command, connections x commands per connection: the issue's (its
# target applies to that row), then any other shown beside it. netfix's apply and its
# rollback each make one connection with two commands (the plan or the journal, then the
# staged transaction); until 2026-12-01 (second run) apply made two connections and
# rollback three round trips, and their target row was 2x1, still shown beside.
# `1x1+s`: the same connection and command, but the command is netfix's own node script for
# that command (`sh -s` fed the very fact script netfix sends, cached render included):
# what is left between it and netfix is netfix's controller (start-up, building, parsing,
# diffing, rendering); what lies between it and `1x1` is the nodes' work, which on a
# fleet runs on the nodes, and here on this machine's CPUs. apply's and rollback's `1x2+s`:
# their two commands as netfix sends them, built by netfix's own code before the run (the
# plan's fact script, then the staged transaction; the journal read, then the staged
# rollback of that transaction); the pair runs back to back, so netfix's apply still
# starts from the clean node.
FLOOR_OF = {"plan": ["1x1", "1x1+s"], "drift": ["1x1", "1x1+s"], "doctor": ["1x1"],
            "apply": ["1x2", "2x1", "1x2+s"],
            "rollback": ["1x2", "2x1", "1x2+s"],
            # doctor --window W against doctor --window 0 of the same round plus W: a ratio
            # near 1 means W once for the whole fleet, not once per host
            "doctor-w": ["w0+W"]}
PROXY_BASE_PORT = 42000
# --baseline: netfix without issue 17's fixes, for measuring their effect in the same run:
# 32 worker threads, a new SSH connection for every round trip, and the node-side scripts
# of netfix/journal.py as committed (git HEAD: a fork per value read).
BASELINE = r"""
import contextlib, importlib.util, os, sys
from netfix import engine, journal, transport
engine.MAX_WORKERS = 32
transport.session = lambda host: contextlib.nullcontext()
transport.keep = contextlib.nullcontext
spec = importlib.util.spec_from_file_location("journal_pre", os.environ["NETFIX_BENCH_PRE"])
pre = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pre
spec.loader.exec_module(pre)
journal.journal_script = pre.journal_script
if hasattr(pre, "apply_script"):
    journal.apply_script, journal.rollback_script = pre.apply_script, pre.rollback_script
else:  # a journal.py from before the builders: one script() configured by flags
    journal.apply_script = lambda tx, arm=None, force=False, state_dir=journal.STATE_DIR: \
        pre.script(tx, check=not force, arm=arm, state_dir=state_dir)
    journal.rollback_script = lambda rtx, target, force=False, state_dir=journal.STATE_DIR: \
        pre.script(rtx, check=not force, marks={target.id: f"rolled-back {rtx.id}"},
                   pre=journal.disarm_script(target.id) if target.state == "applied-unconfirmed"
                   else None, rmdirs=target.id, state_dir=state_dir)
journal.recover_script = pre.recover_script
from netfix.cli import main
sys.argv[0] = "netfix"
main()
"""

FLOOR = r"""
import json, socket, sys, threading, paramiko
kind, key, known = sys.argv[1:4]
targets = sys.argv[4:]
own = None
if kind.endswith("+s"):  # netfix's own commands: {target or "*": [[command, stdin file]]}
    with open(targets.pop(0)) as f:
        own = {t: [(c, open(p, "rb").read()) for c, p in cmds] for t, cmds in json.load(f).items()}
conns, cmds = (int(x) for x in kind.removesuffix("+s").split("x"))
host_keys = paramiko.HostKeys(known)  # once: SSHClient.load_host_keys per connection is 3 ms
errors = []
def one(spec):
    addr, _, port = spec.rpartition(":")
    name = addr if port == "22" else f"[{addr}]:{port}"
    try:
        for _ in range(conns):
            c = paramiko.SSHClient()
            for kind, k in (host_keys.lookup(name) or {}).items():
                c.get_host_keys().add(name, kind, k)
            c.set_missing_host_key_policy(paramiko.RejectPolicy())
            s = socket.create_connection((addr, int(port)), timeout=60)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.connect(addr, port=int(port), username="root", key_filename=key, sock=s,
                      allow_agent=False, look_for_keys=False, timeout=60, banner_timeout=60,
                      auth_timeout=60)
            for j in range(cmds):
                cmd, data = ("true", None) if own is None else (own.get(spec) or own["*"])[j]
                i, out, _ = c.exec_command(cmd)
                if data is not None:
                    i.write(data); i.channel.shutdown_write()
                text = out.read()
                if (rc := out.channel.recv_exit_status()) != 0:
                    errors.append(f"{spec}: {cmd[:40]} exit {rc}: {text[-300:]!r}")
            c.close()
    except Exception as e:
        errors.append(f"{spec}: {e!r}")
ts = [threading.Thread(target=one, args=(a,)) for a in targets]
[t.start() for t in ts]; [t.join() for t in ts]
if errors:
    sys.exit("floor failed: " + "; ".join(errors[:5]))
"""


@dataclass
class Run:
    wall: float
    cpu: float  # the measured process and its children: the controller
    rss_mb: float
    machine: float  # CPU seconds of the whole machine meanwhile: controller + lab nodes


def busy() -> float:
    """CPU seconds the machine spent busy since boot (all CPUs), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    profile: str
    delay_ms: int
    nodes: int
    command: str
    floor_kind: str
    floor: list[Run] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    sessions: set[int] = field(default_factory=set)  # per node per run, as seen in the logs
    commands: set[int] = field(default_factory=set)
    floor_sessions: set[int] = field(default_factory=set)
    floor_commands: set[int] = field(default_factory=set)

    def med(self, runs: list[Run], attr: str = "wall") -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    @property
    def ratio(self) -> float:
        return self.med(self.runs) / self.med(self.floor)

    @property
    def round_ratios(self) -> list[float]:
        """Each round's run against the floor run just before it: their spread is the
        noise a ratio of medians carries."""
        return [r.wall / f.wall for r, f in zip(self.runs, self.floor, strict=False)]

    @property
    def target(self) -> float | None:
        if self.floor_kind != FLOOR_OF[self.command][0]:
            return None  # a second floor, shown for comparison
        return self.issue_target

    @property
    def issue_target(self) -> float | None:
        """Issue 17's target for this command and size, whatever the floor."""
        if self.command == "doctor":  # issue 12: 1.5x the floor on 1, 10 and 20 nodes
            return 1.5
        if self.command == "doctor-w":  # the window once (per host it would be N x W)
            return 1.2
        if self.command in ("plan", "drift"):
            return 1.5 if self.nodes == 1 else 1.2 if self.nodes >= 100 else None
        if self.command in ("apply", "rollback"):
            return 1.3 if self.nodes >= 100 else None
        return None

    @property
    def rss_ok(self) -> bool | None:
        return max(r.rss_mb for r in self.runs) < 150 if self.nodes >= 100 else None


def span(values: set[int]) -> str:
    if not values:
        return "?"
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


HEADER = (f"{'profile':<14} {'delay':>5} {'nodes':>5} {'command':<8} {'floor':>5} "
          f"{'floor s':>7} {'netfix s':>8} {'min':>6} {'max':>6} {'ratio':>5} {'target':>6} "
          f"{'met':>3} {'cpu s':>6} {'fl cpu':>6} {'mach s':>6} {'fl m s':>6} {'rss MB':>6} "
          f"{'fl rss':>6} "
          f"{'sess/n':>6} {'cmds/n':>6} {'fl s/c':>6}")


def fmt(row: Row) -> str:
    t = row.target
    met = "-" if t is None else ("yes" if row.ratio <= t else "NO")
    return (f"{row.profile:<14} {row.delay_ms:>5} {row.nodes:>5} {row.command:<8} "
            f"{row.floor_kind:>5} {row.med(row.floor):>7.3f} {row.med(row.runs):>8.3f} "
            f"{min(r.wall for r in row.runs):>6.3f} {max(r.wall for r in row.runs):>6.3f} "
            f"{row.ratio:>5.2f} {'-' if t is None else f'{t:.1f}':>6} {met:>3} "
            f"{row.med(row.runs, 'cpu'):>6.2f} {row.med(row.floor, 'cpu'):>6.2f} "
            f"{row.med(row.runs, 'machine'):>6.2f} {row.med(row.floor, 'machine'):>6.2f} "
            f"{max(r.rss_mb for r in row.runs):>6.1f} {max(r.rss_mb for r in row.floor):>6.1f} "
            f"{span(row.sessions):>6} {span(row.commands):>6} "
            f"{span(row.floor_sessions) + '/' + span(row.floor_commands):>6}")


# ---------------------------------------------------------------------------- measuring


def measure(argv: list[str], ok: tuple[int, ...] = (0,)) -> Run:
    """Wall time, CPU (user+sys) and peak RSS of one fresh process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        b, t = busy(), time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)
        _, status, ru = os.wait4(p.pid, 0)
        wall, machine = time.perf_counter() - t, busy() - b
        p.returncode = rc = os.waitstatus_to_exitcode(status)
        if rc not in ok:
            out.seek(0)
            err.seek(0)
            sys.exit(f"failed (exit {rc}): {' '.join(argv)}\n"
                     f"{out.read().decode()[-3000:]}\n{err.read().decode()[-3000:]}")
    return Run(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, machine)


class Logs:
    """Sessions and commands each node's sshd logged since the last mark."""

    def __init__(self, lab_dir: Path, names: list[str]):
        self.paths = [lab_dir / "nodes" / n / "sshd.log" for n in names]
        self.offsets = [0] * len(self.paths)
        self.mark()

    def mark(self) -> None:
        self.offsets = [p.stat().st_size for p in self.paths]

    def since(self) -> tuple[set[int], set[int]]:
        sessions, commands = set(), set()
        for p, off in zip(self.paths, self.offsets, strict=True):
            with open(p, "rb") as f:
                f.seek(off)
                text = f.read().decode(errors="replace")
            sessions.add(text.count("Accepted publickey"))
            commands.add(text.count("Starting session: command"))
        self.mark()
        return sessions, commands


# ---------------------------------------------------------------------------- lab set-up


@contextmanager
def lab_lock():
    with open(LOCK, "w") as f:
        t = time.monotonic()
        fcntl.flock(f, fcntl.LOCK_EX)
        if time.monotonic() - t > 1:
            print(f"  (waited {time.monotonic() - t:.0f} s for {LOCK})", flush=True)
        yield


def _sshd_pid(init_pid: int) -> int | None:
    try:
        children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    except OSError:
        return None
    for c in children:
        with suppress(OSError):
            if Path(f"/proc/{c}/comm").read_text().strip() == "sshd":
                return int(c)
    return None


def verbose_sshd(lab_dir: Path, nodes: list[lab.LabNode]) -> None:
    """LogLevel VERBOSE (sshd logs each command), applied by SIGHUP: sshd re-execs itself."""
    before = {}
    for n in nodes:
        ndir = lab_dir / "nodes" / n.name
        conf = ndir / "sshd_config"
        conf.write_text("LogLevel VERBOSE\n" + conf.read_text())
        before[n.name] = (ndir / "sshd.log").read_text().count("Server listening")
        pid = _sshd_pid(n.pid)
        if pid is None:
            sys.exit(f"no sshd found in lab node {n.name}")
        os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    for n in nodes:
        log = lab_dir / "nodes" / n.name / "sshd.log"
        while log.read_text().count("Server listening") <= before[n.name]:
            if time.monotonic() > deadline:
                sys.exit(f"sshd of {n.name} did not restart with LogLevel VERBOSE")
            time.sleep(0.02)
        while True:
            try:
                socket.create_connection((n.address, lab.SSH_PORT), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def netem_works(node: lab.LabNode, delay_ms: int) -> bool:
    link = f"{lab.LINK_PREFIX}{node.netns[len(lab.NETNS_PREFIX):]}"
    p = subprocess.run(["tc", "qdisc", "add", "dev", link, "root", "netem", "delay",
                        f"{delay_ms}ms"], capture_output=True, text=True)
    if p.returncode == 0:
        subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], capture_output=True)
    return p.returncode == 0


def netem(nodes: list[lab.LabNode], delay_ms: int | None) -> None:
    """delay_ms on both ends of every node's veth (None: remove it)."""
    for n in nodes:
        link = f"{lab.LINK_PREFIX}{n.netns[len(lab.NETNS_PREFIX):]}"
        for ns_args, dev in (([], link), (["-n", n.netns], "eth0")):
            if delay_ms is None:
                subprocess.run(["tc", *ns_args, "qdisc", "del", "dev", dev, "root"],
                               capture_output=True)
            else:
                subprocess.run(["tc", *ns_args, "qdisc", "add", "dev", dev, "root", "netem",
                                "delay", f"{delay_ms}ms"], check=True, capture_output=True)


class Proxy:
    """bench/delayproxy.py in front of every node; an inventory and known_hosts for it."""

    def __init__(self, lab_dir: Path, nodes: list[lab.LabNode], delay_ms: int, work: Path):
        self.work = work
        targets = [f"{n.address}:{lab.SSH_PORT}" for n in nodes]
        self.log = work / "proxy.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "bench" / "delayproxy.py"), "--delay-ms",
                 str(delay_ms), "--base-port", str(PROXY_BASE_PORT), "--max-seconds", "3600",
                 *targets], stdout=subprocess.PIPE, stderr=log, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.wait(5)
            sys.exit(f"delay proxy did not start: {self.log.read_text()}")
        known, hosts = [], []
        for i, n in enumerate(nodes):
            port = PROXY_BASE_PORT + i
            pub = (lab_dir / "nodes" / n.name / "ssh_host_ed25519_key.pub").read_text().split()
            known.append(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}")
            hosts.append(f"  {n.name}: {{ssh_host: 127.0.0.1, ssh_port: {port}}}")
        self.known = work / "known_hosts"
        self.known.write_text("\n".join(known) + "\n")
        self.inventory = work / "inventory.yaml"
        self.inventory.write_text(
            f"vars:\n  ssh_user: root\n  ssh_key: {lab_dir / 'id_ed25519'}\n"
            f"  ssh_known_hosts_file: {self.known}\n  ssh_strict_host_key_checking: \"yes\"\n"
            "hosts:\n" + "\n".join(hosts) + "\n")
        self.targets = {n.name: f"127.0.0.1:{PROXY_BASE_PORT + i}" for i, n in enumerate(nodes)}

    def stop(self) -> str:
        """Stop it; its last log line (its CPU seconds)."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        lines = self.log.read_text().strip().splitlines()
        return lines[-1] if lines else ""


# ---------------------------------------------------------------------------- one section


def node_sets(sizes: list[int], distinct: bool) -> list[list[int]]:
    if not distinct:
        return [list(range(1, n + 1)) for n in sizes]
    out, start = [], 1
    for n in sizes:
        out.append(list(range(start, start + n)))
        start += n
    return out


def section(profile: str, delay_ms: int, args: argparse.Namespace, lab_dir: Path,
            emit) -> list[Row]:
    sets = node_sets(args.sizes, not args.same_nodes)
    total = max(max(s) for s in sets)
    if total > lab.MAX_NODES:
        sys.exit(f"{total} lab nodes needed, the lab has at most {lab.MAX_NODES}")
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="netfix-bench-", dir="/run"))
    proxy = None
    delayed: list[lab.LabNode] = []
    with lab_lock():
        t0 = time.monotonic()
        try:
            inv = lab.lab_up(total, lab_dir)
            nodes = {n.name: n for n in lab.lab_nodes(lab_dir)}
            verbose_sshd(lab_dir, list(nodes.values()))
            key, known = str(lab_dir / "id_ed25519"), str(lab_dir / "known_hosts")
            targets = {name: f"{n.address}:{lab.SSH_PORT}" for name, n in nodes.items()}
            how = "none"
            if delay_ms:
                first = next(iter(nodes.values()))
                if not args.proxy and netem_works(first, delay_ms):
                    delayed = list(nodes.values())
                    netem(delayed, delay_ms)
                    how = f"tc netem delay {delay_ms}ms on both ends of each veth"
                else:
                    proxy = Proxy(lab_dir, list(nodes.values()), delay_ms, work)
                    inv, known, targets = proxy.inventory, str(proxy.known), proxy.targets
                    how = (f"userspace delay proxy, {delay_ms} ms each way "
                           "(no sch_netem in this kernel)" if not args.proxy else
                           f"userspace delay proxy, {delay_ms} ms each way (--proxy)")
            print(f"# section profile={profile} delay={delay_ms} ms ({how}); "
                  f"{total} lab nodes up in {time.monotonic() - t0:.1f} s", flush=True)
            for idxs in sets:
                rows += size_rows(profile, delay_ms, args, lab_dir, work, inv, key, known,
                                  [lab.node_name(i) for i in idxs], targets, emit)
        finally:
            if delayed:
                netem(delayed, None)
            if proxy:
                note = proxy.stop()
                if note:
                    print(f"# {note} s (the delay proxy, a separate process)", flush=True)
            lab.lab_down(lab_dir)
            shutil.rmtree(work, ignore_errors=True)
            print(f"# section done in {time.monotonic() - t0:.0f} s; lab down, lock released",
                  flush=True)
    return rows


def size_rows(profile: str, delay_ms: int, args, lab_dir: Path, floors: Path, inv, key: str,
              known: str, names: list[str], targets: dict[str, str], emit) -> list[Row]:
    prof = PROFILES[profile]
    limit = ",".join(names)
    netfix = [sys.executable, "-c", BASELINE] if args.baseline else [NETFIX]
    argv = {
        "plan": [*netfix, "plan", "-i", str(inv), "--limit", limit, "--profile", prof],
        "drift": [*netfix, "drift", "-i", str(inv), "--limit", limit, "--profile", prof],
        "apply": [*netfix, "apply", "-i", str(inv), "--limit", limit, "--profile", prof],
        "rollback": [*netfix, "rollback", "-i", str(inv), "--limit", limit],
        "doctor": [*netfix, "doctor", "--window", "0", "-i", str(inv), "--limit", limit],
        # the same with a window: all hosts sleep it at once, so W once, not per host
        "doctor-w": [*netfix, "doctor", "--window", f"{args.doctor_window:g}", "-i", str(inv),
                     "--limit", limit],
    }
    if takes_yes():  # a run without a terminal must say --yes (netfix >= the review work)
        argv["apply"].append("--yes")
        argv["rollback"].append("--yes")
    ok = {"plan": (0,), "drift": (0, 2), "apply": (0,), "rollback": (0,), "doctor": (0, 2),
          "doctor-w": (0, 2)}
    commands = [c for c in COMMANDS if c in args.commands]
    if "doctor" in commands and not has_doctor():
        print("# doctor: `netfix doctor` does not exist yet; skipped", flush=True)
        commands.remove("doctor")
    if "doctor" in commands and args.doctor_window > 0:
        commands.append("doctor-w")
    if ("apply" in commands) != ("rollback" in commands):
        sys.exit("apply and rollback are measured together (each undoes the other)")
    n = len(names)
    floor_argv = {(c, k): [sys.executable, "-c", FLOOR, k, key, known]
                  + ([str(floors / f"floor-{c}.json")] if k.endswith("+s") else [])
                  + [targets[x] for x in names]
                  for c in commands for k in FLOOR_OF[c] if k != "w0+W"}
    label = profile + ("/pre" if args.baseline else "")
    rows = {(c, k): Row(label, delay_ms, n, c, k) for c in commands for k in FLOOR_OF[c]}
    logs = Logs(lab_dir, names)
    # Warm-up, untimed: page cache, sshd, the nodes' first journal entries, the render
    # cache; then the node scripts of the `+s` floors, as netfix now sends them.
    for c in commands:
        measure(argv[c], ok[c])
    for c in ("plan", "drift"):
        if c in commands:
            (floors / f"floor-{c}.sh").write_text(
                in_child(node_script, c, prof, limit, inv))
            manifest(floors / f"floor-{c}.json", {"*": [("sh -s", floors / f"floor-{c}.sh")]})
    for (c, k), a in floor_argv.items():
        if (c, k) not in TX_FLOORS:  # those change the nodes: built anew for each run
            measure(a)
    order = [c for c in ("plan", "apply", "drift", "doctor", "doctor-w", "rollback")
             if c in commands]
    for _ in range(args.repeat):
        for c in order:
            mine = [rows[c, k] for k in FLOOR_OF[c]]
            for row in mine:
                if row.floor_kind == "w0+W":
                    # the floor of a window-W doctor run: this round's window-0 run + W
                    w0 = rows["doctor", "1x1"].runs[-1]
                    row.floor.append(Run(w0.wall + args.doctor_window, w0.cpu, w0.rss_mb,
                                         w0.machine))
                    continue
                if (c, row.floor_kind) in TX_FLOORS:
                    if c == "apply":  # the pair, apply then its rollback (see FLOOR_OF)
                        in_child(tx_manifests, floors, inv, limit, prof, targets)
                        for cc in ("apply", "rollback"):
                            floor_run(rows[cc, "1x2+s"], floor_argv[cc, "1x2+s"], logs)
                    continue
                floor_run(row, floor_argv[c, row.floor_kind], logs)
            run = measure(argv[c], ok[c])
            s, k = logs.since()
            for row in mine:
                row.runs.append(run)
                row.sessions |= s
                row.commands |= k
    out = [rows[c, k] for c in order for k in FLOOR_OF[c]]
    for r in out:
        emit(r)
    return out


TX_FLOORS = {("apply", "1x2+s"), ("rollback", "1x2+s")}


def floor_run(row: Row, argv: list[str], logs: Logs) -> None:
    logs.mark()
    row.floor.append(measure(argv))
    s, k = logs.since()
    row.floor_sessions |= s
    row.floor_commands |= k


def manifest(path: Path, commands: dict[str, list[tuple[str, Path]]]) -> None:
    path.write_text(json.dumps({t: [[c, str(p)] for c, p in cmds]
                                for t, cmds in commands.items()}))


def in_child(fn, *args):
    """fn(*args) in a fresh interpreter. The bench never imports netfix itself: a child's
    ru_maxrss counts the RSS of the process it was forked from, so a bench grown by
    netfix's plans made every measured process, floors included, report the bench's RSS."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def tx_manifests(floors: Path, inv, limit: str, profile: str,
                 targets: dict[str, str]) -> None:
    """floor-apply.json and floor-rollback.json: per node, the commands netfix's apply and
    rollback would send it now, built by netfix's own code (a plan, engine.apply_tx, and
    rollback's journal read and engine.rollback_tx), with new transaction ids. Untimed: the
    floors' nodes must not pay for netfix's controller."""
    from netfix import engine, journal, transport
    from netfix.facts import build_script
    from netfix.inventory import load_inventory
    from netfix.profile import load_profile

    hosts = load_inventory(str(inv)).select(limit)
    plan = engine.make_plan(hosts, profile)
    work = floors / "floor-tx"
    work.mkdir(exist_ok=True)
    reader = work / "journal.sh"
    reader.write_text(build_script(engine.rollback_reads(None)))
    apply_cmds, rollback_cmds = {}, {}
    for host, hp in zip(hosts, plan.hosts, strict=True):
        tx = None if hp.error else engine.apply_tx(hp)
        if tx is None:
            sys.exit(f"floor 1x2+s: {host.name} has nothing to apply: {hp.error or 'in sync'}")
        tx.status = "applied"
        undo = engine.rollback_tx(tx)
        facts = work / f"{host.name}.facts"
        facts.write_text(build_script(engine.host_reads(host, load_profile(profile))[0]))
        cmds = []
        for name, script in (("apply", journal.apply_script(tx)),
                             ("rollback", journal.rollback_script(undo, tx))):
            argv, data = transport._argv(host, script, True, journal.STATE_DIR)
            (work / f"{host.name}.{name}").write_bytes(data)
            cmds.append((shlex.join(argv), work / f"{host.name}.{name}"))
        apply_cmds[targets[host.name]] = [("sh -s", facts), cmds[0]]
        rollback_cmds[targets[host.name]] = [("sh -s", reader), cmds[1]]
    manifest(floors / "floor-apply.json", apply_cmds)
    manifest(floors / "floor-rollback.json", rollback_cmds)


def node_script(command: str, profile: str, limit: str, inv: Path) -> str:
    """The fact script netfix sends the first node for plan (drift: with the journal), its
    firewall render cache included: every lab node has the same nft and kernel, so one
    node's cached render is what each gets."""
    from netfix import drift, engine
    from netfix.facts import build_script
    from netfix.inventory import load_inventory
    from netfix.profile import load_profile

    host = load_inventory(str(inv)).select(limit)[0]
    needs, _ = engine.host_reads(host, load_profile(profile),
                                 drift.READS if command == "drift" else None)
    return build_script(needs)


_doctor: bool | None = None
_yes: bool | None = None


def takes_yes() -> bool:
    global _yes
    if _yes is None:
        p = subprocess.run([NETFIX, "apply", "--help"], capture_output=True, text=True)
        _yes = "--yes" in p.stdout
    return _yes


def has_doctor() -> bool:
    global _doctor
    if _doctor is None:
        p = subprocess.run([NETFIX, "doctor", "--help"], capture_output=True, text=True)
        _doctor = p.returncode == 0 and "--window" in p.stdout
    return _doctor


# ---------------------------------------------------------------------------- main


def summary(rows: list[Row]) -> list[str]:
    lines = []
    for r in rows:
        t, same_work = r.target, False
        if t is None and r.floor_kind.endswith("+s") and r.issue_target is not None:
            # the same target against the floor that does netfix's node-side work too:
            # what netfix's own controller adds (see FLOOR_OF)
            t, same_work = r.issue_target, True
        if t is not None:
            verdict = "met" if r.ratio <= t else "NOT met"
            rounds = sorted(r.round_ratios)
            lines.append(f"{verdict:>7}: {r.command} at {r.nodes} node(s), {r.profile}, "
                         f"delay {r.delay_ms} ms: {r.ratio:.2f}x the {r.floor_kind} floor "
                         f"(rounds {rounds[0]:.2f}-{rounds[-1]:.2f}; "
                         f"{'same-work floor; ' if same_work else ''}target {t:.1f}x)")
        if r.rss_ok is not None and r.floor_kind == FLOOR_OF[r.command][0]:
            lines.append(f"{'met' if r.rss_ok else 'NOT met':>7}: peak RSS of {r.command} at "
                         f"{r.nodes} nodes, {r.profile}, delay {r.delay_ms} ms: "
                         f"{max(x.rss_mb for x in r.runs):.0f} MB (target < 150 MB)")
    return lines


def write_csv(path: Path, rows: list[Row]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["profile", "delay_ms", "nodes", "command", "floor_kind", "floor_median_s",
                    "median_s", "min_s", "max_s", "ratio", "target", "cpu_median_s",
                    "floor_cpu_median_s", "machine_cpu_median_s",
                    "floor_machine_cpu_median_s", "peak_rss_mb", "floor_peak_rss_mb",
                    "sessions_per_node", "commands_per_node", "floor_sessions_per_node",
                    "floor_commands_per_node", "runs_s", "floor_runs_s"])
        for r in rows:
            w.writerow([r.profile, r.delay_ms, r.nodes, r.command, r.floor_kind,
                        f"{r.med(r.floor):.4f}", f"{r.med(r.runs):.4f}",
                        f"{min(x.wall for x in r.runs):.4f}",
                        f"{max(x.wall for x in r.runs):.4f}", f"{r.ratio:.3f}",
                        "" if r.target is None else r.target, f"{r.med(r.runs, 'cpu'):.3f}",
                        f"{r.med(r.floor, 'cpu'):.3f}", f"{r.med(r.runs, 'machine'):.3f}",
                        f"{r.med(r.floor, 'machine'):.3f}",
                        f"{max(x.rss_mb for x in r.runs):.1f}",
                        f"{max(x.rss_mb for x in r.floor):.1f}", span(r.sessions),
                        span(r.commands), span(r.floor_sessions), span(r.floor_commands),
                        ";".join(f"{x.wall:.3f}" for x in r.runs),
                        ";".join(f"{x.wall:.3f}" for x in r.floor)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--sizes", default="1,10,50,100", help="node counts (default 1,10,50,100)")
    ap.add_argument("--commands", default="plan,apply,drift,rollback,doctor",
                    help="of plan,apply,drift,rollback,doctor (doctor: `netfix doctor "
                    "--window 0` against the 1x1 floor, and with --doctor-window W also "
                    "`--window W` against the window-0 run plus W)")
    ap.add_argument("--doctor-window", type=float, default=3.0, metavar="W",
                    help="also time `netfix doctor --window W` (default 3; 0: skip it)")
    ap.add_argument("--profiles", default=",".join(PROFILES),
                    help=f"of {','.join(PROFILES)}")
    ap.add_argument("--delays", default="0,50",
                    help="one-way delays in ms to measure, each its own section (default 0,50)")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs per row (median shown)")
    ap.add_argument("--quick", action="store_true",
                    help="small run: 1 and 10 nodes, public-vds, no delay, 3 runs")
    ap.add_argument("--proxy", action="store_true",
                    help="use the delay proxy even where tc netem works")
    ap.add_argument("--baseline", action="store_true",
                    help="run netfix as before issue 17's fixes (32 workers, a new SSH "
                    "connection per round trip), to measure their effect")
    ap.add_argument("--same-nodes", action="store_true",
                    help="every node count uses node1..nodeN (default: distinct nodes)")
    ap.add_argument("--csv", default="bench/fleet.csv", help="CSV output (default %(default)s)")
    args = ap.parse_args()
    if args.baseline:
        pre = Path(tempfile.mkdtemp(prefix="netfix-bench-pre-")) / "journal_pre.py"
        pre.write_text(subprocess.run(["git", "-C", str(REPO), "show", "HEAD:netfix/journal.py"],
                                      capture_output=True, text=True, check=True).stdout)
        os.environ["NETFIX_BENCH_PRE"] = str(pre)
    if args.quick:
        args.sizes, args.profiles, args.delays = "1,10", "public-vds", "0"
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.commands = args.commands.split(",")
    profiles = args.profiles.split(",")
    if bad := [c for c in args.commands if c not in COMMANDS]:
        sys.exit(f"unknown command(s) {bad}; of {COMMANDS}")
    if bad := [p for p in profiles if p not in PROFILES]:
        sys.exit(f"unknown profile(s) {bad}; of {list(PROFILES)}")
    if args.repeat < 1:
        sys.exit("--repeat must be at least 1")
    if os.geteuid() != 0:
        sys.exit("run as root (the lab needs it)")
    lab_dir = Path(os.environ.get("NETFIX_LAB_DIR", "/run/netfix-lab-bench"))
    print(f"# {os.cpu_count()} CPUs; median of {args.repeat} runs; floor = bare paramiko "
          "(CONNSxCMDS per node); cpu s = controller CPU (user+sys); mach s = whole machine "
          "CPU meanwhile (controller + lab nodes' sshd and scripts); 'fl ...' = the floor's; "
          "sess/n, cmds/n = SSH sessions and commands per node from the sshd logs",
          flush=True)
    print(HEADER, flush=True)
    rows: list[Row] = []
    started = time.monotonic()

    def emit(row: Row) -> None:
        print(fmt(row), flush=True)

    for delay in (int(d) for d in args.delays.split(",")):
        for profile in profiles:
            rows += section(profile, delay, args, lab_dir, emit)
    print()
    print(HEADER)
    for r in rows:
        print(fmt(r))
    print()
    for line in summary(rows):
        print(line)
    csv_path = Path(args.csv) if Path(args.csv).is_absolute() else REPO / args.csv
    write_csv(csv_path, rows)
    print(f"\n# {len(rows)} rows in {time.monotonic() - started:.0f} s; CSV: {csv_path}")


if __name__ == "__main__":
    main()
