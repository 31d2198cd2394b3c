#!/usr/bin/env python3
"""netfix as a pyinfra operation next to netfix's own CLI and the paramiko floor.

Run as root from the repository (`.venv/bin/python bench/pyinfra_ops.py`). On 1, 10 and 20
lab nodes (--sizes), as fresh processes so that start-up counts, interleaved so that the
machine's other load weighs on all alike, median of --repeat runs:

  floor 1x1        bench/fleet.py's paramiko floor: one connection, one command per node
  floor 2x1        two connections one after the other, one command each (apply's floor)
  netfix plan      `netfix plan -i inventory.yaml` (the default ssh transport)
  netfix plan .py  the same from the pyinfra inventory file (pyinfra's loader imported)
  pyinfra --dry    `pyinfra inventory.py deploy.py --dry`: the netfix_profile operation's plan
  netfix apply     `netfix apply --yes -i inventory.yaml`
  pyinfra apply    `pyinfra -y inventory.py deploy.py`: the operation's plan + transaction

Each apply is undone (untimed) by `netfix rollback`, so every timed run starts from the
clean node. Ratios: plan-like rows to floor 1x1, apply rows to floor 2x1, and the pyinfra
rows to the netfix row that does the same work. The lab lock is held for the whole run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import FLOOR, LOCK, NETFIX, REPO, Run, lab, lab_lock, measure  # noqa: E402

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
PROFILE = "public-vds"
DEPLOY = REPO / "examples" / "pyinfra" / "deploy.py"


def py_inventory(path: Path, lab_dir: Path, nodes: list[lab.LabNode]) -> Path:
    hosts = ",\n    ".join(f'("{n.name}", {{"ssh_hostname": "{n.address}"}})' for n in nodes)
    path.write_text(f"""\
nodes = (
    [{hosts}],
    {{"ssh_user": "root", "ssh_key": "{lab_dir / 'id_ed25519'}",
     "ssh_known_hosts_file": "{lab_dir / 'known_hosts'}",
     "ssh_strict_host_key_checking": "yes", "netfix_profile": "{PROFILE}"}},
)
""")
    return path


def row(name: str, runs: list[Run], base: list[Run] | None, base_name: str,
        netfix: list[Run] | None = None) -> str:
    med = statistics.median(r.wall for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    out = f"  {name:<16} {med:7.3f} s  cpu {cpu:5.2f} s  rss {max(r.rss_mb for r in runs):5.0f} MB"
    if base:
        out += f"  {med / statistics.median(r.wall for r in base):5.2f}x {base_name}"
    if netfix:
        out += f"  {med / statistics.median(r.wall for r in netfix):5.2f}x netfix"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 20])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    lab_dir = Path("/run/netfix-bench-pyinfra")
    work = Path(tempfile.mkdtemp(prefix="netfix-bench-pyinfra-", dir="/run"))
    with lab_lock():
        try:
            yaml_inv = lab.lab_up(max(args.sizes), lab_dir)
            all_nodes = lab.lab_nodes(lab_dir)
            key, known = str(lab_dir / "id_ed25519"), str(lab_dir / "known_hosts")
            print(f"# {len(all_nodes)} lab nodes, lock {LOCK} held; median of {args.repeat}",
                  flush=True)
            for size in args.sizes:
                nodes = all_nodes[:size]
                limit = ",".join(n.name for n in nodes)
                py_inv = py_inventory(work / f"inventory{size}.py", lab_dir, nodes)
                targets = [f"{n.address}:{lab.SSH_PORT}" for n in nodes]
                floor = {k: [sys.executable, "-c", FLOOR, k, key, known, *targets]
                         for k in ("1x1", "2x1")}
                plan = [NETFIX, "plan", "-i", str(yaml_inv), "--limit", limit, "--profile",
                        PROFILE]
                argv = {
                    "floor 1x1": floor["1x1"], "floor 2x1": floor["2x1"],
                    "netfix plan": plan,
                    "netfix plan .py": [NETFIX, "plan", "-i", str(py_inv)],
                    "pyinfra --dry": [PYINFRA, str(py_inv), str(DEPLOY), "--dry"],
                    "netfix apply": [NETFIX, "apply", "--yes", "-i", str(yaml_inv), "--limit",
                                     limit, "--profile", PROFILE],
                    "pyinfra apply": [PYINFRA, "-y", str(py_inv), str(DEPLOY)],
                }
                undo = [NETFIX, "rollback", "--yes", "-i", str(yaml_inv), "--limit", limit]
                runs: dict[str, list[Run]] = {k: [] for k in argv}
                for name, a in argv.items():  # warm-up, untimed
                    measure(a)
                    if "apply" in name:
                        measure(undo)
                for _ in range(args.repeat):
                    for name, a in argv.items():
                        runs[name].append(measure(a))
                        if "apply" in name:
                            measure(undo)
                print(f"{size} node(s):", flush=True)
                for name in argv:
                    base = "floor 2x1" if "apply" in name else "floor 1x1"
                    same = {"pyinfra --dry": "netfix plan", "netfix plan .py": "netfix plan",
                            "pyinfra apply": "netfix apply"}.get(name)
                    print(row(name, runs[name], None if name.startswith("floor") else
                              runs[base], base, runs[same] if same else None), flush=True)
        finally:
            lab.lab_down(lab_dir)
            shutil.rmtree(work, ignore_errors=True)  # the inventories written for the run


if __name__ == "__main__":
    main()
