#!/usr/bin/env python3
"""Plan wall time vs a bare-paramiko floor, for 1, 5, 10 and 20 lab nodes (run as root).

For each size N it runs, as fresh processes so start-up cost counts:
  floor: a minimal paramiko script connecting to the N nodes in parallel, one command each
  plan:  `netfix plan -i <lab inventory> --limit node1..nodeN --profile public-vds`
and counts the SSH sessions each node's sshd accepted during the plan (from its log).
Targets (issue 2): 1 SSH command per host; plan <= 1.5x floor at 20 nodes, <= 2x at 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from netfix_lab import netns as lab

FLOOR = r"""
import sys, threading, paramiko
key, known, addrs = sys.argv[1], sys.argv[2], sys.argv[3:]
def one(a):
    c = paramiko.SSHClient(); c.load_host_keys(known)
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(a, username="root", key_filename=key, allow_agent=False, look_for_keys=False)
    _, out, _ = c.exec_command("true"); out.channel.recv_exit_status(); c.close()
ts = [threading.Thread(target=one, args=(a,)) for a in addrs]
[t.start() for t in ts]; [t.join() for t in ts]
"""


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if p.returncode not in (0, 2):
        sys.exit(f"failed ({p.returncode}): {' '.join(argv)}\n{p.stdout}\n{p.stderr}")
    return elapsed


def accepted(lab_dir: Path, names: list[str]) -> dict[str, int]:
    out = {}
    for n in names:
        log = lab_dir / "nodes" / n / "sshd.log"
        out[n] = log.read_text().count("Accepted publickey") if log.exists() else 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,5,10,20")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (median shown)")
    ap.add_argument("--profile", default="public-vds")
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    lab_dir = Path(os.environ.get("NETFIX_LAB_DIR", "/run/netfix-lab-bench"))
    inv = lab.lab_up(max(sizes), lab_dir)
    nodes = lab.lab_nodes(lab_dir)
    netfix = str(Path(sys.executable).with_name("netfix"))
    key, known = str(lab_dir / "id_ed25519"), str(lab_dir / "known_hosts")
    print(f"{'nodes':>5} {'floor s':>8} {'plan s':>8} {'ratio':>6} {'target':>6} "
          f"{'ssh cmds/host':>13}")
    try:
        for n in sizes:
            subset = nodes[:n]
            names = [x.name for x in subset]
            floor_cmd = [sys.executable, "-c", FLOOR, key, known] + [x.address for x in subset]
            plan_cmd = [netfix, "plan", "-i", str(inv), "--limit", ",".join(names),
                        "--profile", args.profile]
            timed(plan_cmd)  # warm the page cache for both
            floors, plans, per_host = [], [], []
            for _ in range(args.repeat):
                floors.append(timed(floor_cmd))
                before = accepted(lab_dir, names)
                plans.append(timed(plan_cmd))
                after = accepted(lab_dir, names)
                per_host.append(max(after[k] - before[k] for k in names))
            f, p = statistics.median(floors), statistics.median(plans)
            target = 2.0 if n == 1 else 1.5
            print(f"{n:>5} {f:>8.3f} {p:>8.3f} {p / f:>6.2f} {target:>6.1f} "
                  f"{max(per_host):>13}")
    finally:
        if not args.keep:
            lab.lab_down(lab_dir)


if __name__ == "__main__":
    main()
