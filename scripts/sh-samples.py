#!/usr/bin/env python3
"""Render representative generated sh scripts into a directory, and with --check run
`shellcheck -s sh` on them and on every netfix/sh/*.sh file (exit 1 on any finding).

The files in netfix/sh are fragments: a variable one of them sets is read by the fragment
or generated line that follows it in a script, so they are checked with SC2034 (assigned
but unused) off. The samples are whole scripts, as the nodes get them, and are checked
with nothing off: there an unused or misspelt variable is a finding.

    python scripts/sh-samples.py [--check] [OUTDIR]   (default: a temporary directory)
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netfix import engine, ethtool, journal, sh  # noqa: E402
from netfix.facts import Facts, Needs, build_script  # noqa: E402
from netfix.ifaces import SCRIPT as IFACES  # noqa: E402
from netfix.journal import Step, Tx  # noqa: E402
from netfix.knobs import Context, firewall, irqbalance, nicpersist  # noqa: E402
from netfix.profile import load_profile  # noqa: E402

FRAGMENT_EXCLUDES = "SC2034"
CTX = Context("samples")

# A profile with every fact-script part: sysctls, conntrack, SYN flood, the firewall, NIC
# blocks by name glob, driver and default route (channels, rings, coalescing, offloads,
# RPS/XPS, MTU) and irqbalance.
PROFILE = """\
description: sh samples - every knob family at once
extends: [public-vds-firewall]
nic:
  interfaces:
    - match: {default_route: true}
      rings: {rx: max, tx: max}
      channels: {combined: auto}
      offloads: {gro: on, lro: off}
      coalesce: {adaptive-rx: on, rx-usecs: 10}
      rps: {cpus: auto, flow_cnt: auto}
      xps: {cpus: auto}
    - match: {name: ["eth*", "ens[0-9]"], exclude: ["eth9"]}
      mtu: 1400
    - match: {driver: [veth, e1000e]}
      offloads: {gro: on}
  rps_sock_flow_entries: 32768
irqbalance:
  enabled: true
  running: true
  banned_cpus: "1"
"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def step(knob: str, target: str, *op) -> Step:
    return Step(*op, knob=knob, target=target)


def cmd_steps() -> list[Step]:
    """One cmd step of each kind the knobs make."""
    old, new = b"IRQBALANCE_ONESHOT=0\n", b"IRQBALANCE_ONESHOT=0\nIRQBALANCE_BANNED_CPULIST=1\n"
    sha_old, sha_new = (hashlib.sha256(b).hexdigest() for b in (old, new))
    path = irqbalance.DEBIAN
    out = []
    for group, keys, cur, want in (
            ("channels", ["combined"], "combined=1", "combined=2"),
            ("rings", ["rx", "tx"], "rx=256 tx=256", "rx=1024 tx=1024"),
            ("coalesce", ["adaptive-rx", "rx-usecs"], "adaptive-rx=off rx-usecs=3",
             "adaptive-rx=on rx-usecs=10"),
            ("offloads", ["gro", "lro"], "gro=off lro=off", "gro=on lro=off")):
        out.append(step("nic", f"eth0 {group}", "cmd", f"nic:eth0:{group}", cur, want,
                        ethtool.read_sh(group, "eth0", keys), ethtool.set_sh(group, "eth0", keys)))
    out.append(step("rps", "eth0 rx-0 rps_cpus", "cmd", "rps:eth0:rx-0:rps_cpus", "0", "3",
                    "{ cat /sys/class/net/eth0/queues/rx-0/rps_cpus 2>/dev/null || echo 0; } | "
                    "sed 's/^[0,]*//; s/^$/0/'",
                    'echo "$1" > /sys/class/net/eth0/queues/rx-0/rps_cpus'))
    out.append(step("mtu", "eth0 mtu", "cmd", "mtu:eth0:mtu", "1500", "1400",
                    "cat /sys/class/net/eth0/mtu", 'ip link set dev eth0 mtu "$1"'))
    out.append(step("irqbalance", f"{path} banned CPUs", "cmd",
                    f"irqbalance:{path}:banned:CPUs", sha_old, sha_new,
                    f"if [ -f {path} ]; then sha256sum < {path} | cut -c1-64; else echo absent; fi",
                    irqbalance._write_sh(path, {sha_old: old, sha_new: new})))
    out.append(step("firewall", firewall.TABLE, "cmd", firewall.STATE_LABEL, firewall.ABSENT,
                    b64(b"table inet netfix {\n}\n"), firewall.READ, firewall.SET))
    return out


def apply_tx() -> Tx:
    steps = [
        step("sysctl", "net.core.somaxconn", "value", "/proc/sys/net/core/somaxconn",
             "4096", "8192"),
        step("sysctl", "net.ipv4.tcp_rmem", "value", "/proc/sys/net/ipv4/tcp_rmem",
             "4096 131072 6291456", "4096 262144 16777216"),
        step("sysctl", "/etc/sysctl.d/90-netfix.conf", "file", "/etc/sysctl.d/90-netfix.conf",
             None, b64(b"net.core.somaxconn = 8192\n")),
        step("nic", "/etc/netfix/old.sh", "file", "/etc/netfix/old.sh", b64(b"#!/bin/sh\n"),
             None),
        *cmd_steps(),
    ]
    return Tx("20260101T000000Z-abcdef", "apply", "node1", "samples", steps)


def nic_boot_script() -> str:
    """nic.sh for real settings: offloads, MTU and RPS on a recorded veth node, plus
    ethtool groups the veth driver lacks."""
    data = ROOT / "tests" / "data" / "ifaces-veth-node.txt"
    facts = Facts(host="n", cpus=2, tools={"ethtool": True},
                  scripts={IFACES: data.read_text()})
    section = {"interfaces": [{"match": {"name": "eth1"}, "offloads": {"gro": True},
                               "mtu": 1400, "rps": {"cpus": "all", "flow_cnt": 256},
                               "xps": {"cpus": "auto"}}]}
    (change,) = [c for c in nicpersist.diff(section, facts, CTX)
                 if c.target == nicpersist.SCRIPT]
    return base64.b64decode(change.ops[0].new).decode()


def samples() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        prof = Path(tmp) / "samples.yaml"
        prof.write_text(PROFILE)
        profile = load_profile(prof)
        needs = engine.needs_for(profile)
    drift = Needs()
    drift.update(needs)
    drift.update(Needs(scripts={"journal": journal.journal_script()}))
    tx = apply_tx()
    back = journal.inverse(tx, "20260101T000100Z-fedcba")
    # a rollback of an unconfirmed apply: the sample with every part (disarm, marks, rmdirs)
    unconfirmed = dataclasses.replace(tx, status="applied-unconfirmed 2026-01-01T00:00:00Z")
    out = {
        "facts.sh": build_script(needs),
        "facts-drift.sh": build_script(drift),
        "facts-empty.sh": build_script(Needs()),
        "apply.sh": journal.apply_script(tx),
        "apply-force.sh": journal.apply_script(tx, force=True),
        "apply-confirm.sh": journal.apply_script(tx, arm=journal.arm_script(tx, 120)),
        "rollback.sh": journal.rollback_script(back, unconfirmed),
        "recover.sh": journal.recover_script(tx),
        "confirm.sh": journal.confirm_script(tx.id),
        "confirm-all.sh": journal.confirm_script(),
        "outcome.sh": journal.outcome_script(tx.id),
        "status.sh": journal.status_script(tx.id),
        "journal.sh": journal.journal_script(),
        "nic.sh": nic_boot_script(),
    }
    # The revert armed by --confirm, as the node stores it.
    arm = journal.arm_script(tx, 120)
    revert = arm.split("NF_ARM_REVERT=", 1)[1].split("\n", 1)[0].strip("'")
    out["revert.sh"] = base64.b64decode(revert).decode()
    # Every cmd step's read and set on their own, as functions (how the journal runs them).
    for i, s in enumerate(cmd_steps(), 1):
        out[f"step{i}-{s.knob}.sh"] = f"read_step() {{ {s.read}\n}}\nset_step() {{ {s.set}\n}}\n" \
                                      'read_step; set_step "$1"\n'
    return out


def write(outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in samples().items():
        path = outdir / name
        path.write_text(text)
        paths.append(path)
    return paths


def shellcheck(paths: list[Path], exclude: str = "") -> subprocess.CompletedProcess:
    argv = ["shellcheck", "-s", "sh", *(["-e", exclude] if exclude else []), *map(str, paths)]
    return subprocess.run(argv, capture_output=True, text=True)


def fragments() -> list[Path]:
    return [ROOT / "netfix" / "sh" / name for name in sh.files()]


def check(outdir: Path) -> int:
    if not shutil.which("shellcheck"):
        print("sh-samples: shellcheck not found (apt-get install shellcheck)", file=sys.stderr)
        return 1
    rc = 0
    for what, paths, exclude in (("netfix/sh", fragments(), FRAGMENT_EXCLUDES),
                                 ("samples", write(outdir), "")):
        r = shellcheck(paths, exclude)
        if r.returncode != 0:
            print(f"sh-samples: shellcheck findings in {what}:\n{r.stdout}{r.stderr}")
            rc = 1
        else:
            print(f"sh-samples: shellcheck clean: {len(paths)} {what} files")
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="run shellcheck, exit 1 on findings")
    ap.add_argument("outdir", nargs="?", help="where to write the samples (kept)")
    args = ap.parse_args()
    if args.outdir:
        out = Path(args.outdir)
        if args.check:
            return check(out)
        for p in write(out):
            print(p)
        return 0
    with tempfile.TemporaryDirectory(prefix="netfix-sh-") as tmp:
        return check(Path(tmp)) if args.check else (print("\n".join(map(str, write(
            Path(tmp))))) or 0)


if __name__ == "__main__":
    sys.exit(main())
