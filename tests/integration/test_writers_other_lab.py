"""Other writers on real lab nodes: a TuneD setup in TuneD's real configuration format
(active_profile, tuned-main.conf, a profile with include= across both profile-dir
layouts, [sysctl] and [net]) with a `tuned` process, and a `cilium-agent` process; netfix
plans through real SSH and its fact script finds them in the node's own /proc and /etc.
Also a NetworkManager keyfile and a .network file setting a veth's MTU, with and without
a `NetworkManager` process.

The processes are stand-ins (a shell script of that name sleeping): what the models read
is a process's name and the node's files, which are real. Each test removes what it
added, and kills what it started by its pid.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

NODE = "node1"
SCHEMA = Path(__file__).resolve().parents[2] / "netfix" / "schema" / "plan.json"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
PROFILE = """description: writers lab test
sysctl:
  net.core.somaxconn: 4096
  net.ipv4.conf.all.rp_filter: 1
  net.ipv4.ip_forward: 1
  net.ipv6.conf.all.forwarding: 0
"""
TUNED_MAIN = "# tuned-main.conf\ndaemon = 1\ndynamic_tuning = 0\nreapply_sysctl = {}\n"
# The active profile in the newer layout (/etc/tuned/profiles) includes one in the older
# one (/etc/tuned/<name>), as a site profile built on a shipped one does.
CHILD = """[main]
summary=netfix lab node
include=netfix-lab-base

[sysctl]
net.core.somaxconn=2048

[net]
type=net
devices=nomatch*
ring=rx 2048 tx 2048
"""
BASE = """[main]
summary=netfix lab base

[sysctl]
net.core.somaxconn=512
net.ipv4.tcp_max_syn_backlog=1024
"""


@contextmanager
def fake_process(lab, name: str, *args: str):
    """A process named `name` in the node (a script of that name sleeping)."""
    exe = lab.dir / name
    exe.write_text("#!/bin/sh\nsleep 300\n")
    exe.chmod(0o755)
    pid = lab.sh(NODE, f"setsid {exe} {' '.join(args)} >/dev/null 2>&1 </dev/null & "
                 "echo $!").strip()
    try:
        assert lab.sh(NODE, f"cat /proc/{pid}/comm").strip() == name[:15]
        yield int(pid)
    finally:
        lab.sh(NODE, f"kill {pid}", check=False)
        exe.unlink()


def host_plan(lab, tmp_path: Path, profile: str) -> dict:
    """`netfix plan --json` for NODE, checked against the plan's JSON Schema by the real
    validator (the writers entries included)."""
    prof = tmp_path / "writers.yaml"
    prof.write_text(profile)
    out = lab.netfix("plan", "--json", "--profile", str(prof), "--limit", NODE,
                     check_rc=None).stdout
    if CHECK_JSONSCHEMA.exists():
        (tmp_path / "plan.json").write_text(out)
        res = subprocess.run([str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA),
                              str(tmp_path / "plan.json")], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    return next(h for h in json.loads(out)["hosts"] if h["host"] == NODE)


def plan_rows(lab, tmp_path: Path) -> dict[str, dict]:
    host = host_plan(lab, tmp_path, PROFILE)
    assert not host["error"], host["error"]
    return {c["target"]: c for c in host["changes"]}


@pytest.fixture
def tuned_files(lab):
    lab.sh(NODE, "mkdir -p /etc/tuned/profiles/netfix-lab /etc/tuned/netfix-lab-base && "
           "echo netfix-lab > /etc/tuned/active_profile")
    lab.sh(NODE, f"cat > /etc/tuned/profiles/netfix-lab/tuned.conf <<'X'\n{CHILD}X")
    lab.sh(NODE, f"cat > /etc/tuned/netfix-lab-base/tuned.conf <<'X'\n{BASE}X")
    try:
        yield
    finally:
        lab.sh(NODE, "rm -rf /etc/tuned")


BOOT_APPLIERS = ("systemd-sysctl", "procps")


def others(row: dict) -> list[dict]:
    """A row's writers but the boot applier, which every persisted key has (it applies
    netfix's own file at boot too)."""
    return [w for w in row["writers"] if w["name"] not in BOOT_APPLIERS]


def test_tuned_reapply_1_netfix_wins_reapply_0_tuned_does(lab, tmp_path, tuned_files):
    """Invariant: other-writer tuned only where TuneD's value really stays live (reapply
    off and a different value); with reapply on, netfix's sysctl.d file wins."""
    lab.sh(NODE, f"cat > /etc/tuned/tuned-main.conf <<'X'\n{TUNED_MAIN.format(1)}X")
    # Without the daemon, nothing: files alone do not write anything.
    som = plan_rows(lab, tmp_path)["net.core.somaxconn"]
    assert not others(som), som
    with fake_process(lab, "tuned", "-l", "-P") as pid:
        som = plan_rows(lab, tmp_path)["net.core.somaxconn"]
        assert som["wins"] == "netfix" and "other-writer" not in som["flags"], som
        (w,) = others(som)
        # the child's value, not the included base's
        assert (w["name"], w["when"], w["value"], w["wins"]) == ("tuned", "start", "2048", False)
        assert w["source"] == "/etc/tuned/profiles/netfix-lab/tuned.conf [sysctl]"
        assert f"pid {pid}" in " ".join(som["notes"])

        lab.sh(NODE, f"cat > /etc/tuned/tuned-main.conf <<'X'\n{TUNED_MAIN.format(0)}X")
        rows = plan_rows(lab, tmp_path)
        som = rows["net.core.somaxconn"]
        assert som["wins"] == "tuned" and "other-writer" in som["flags"], som
        other = next(r for r in som["reasons"] if r["code"] == "other-writer")
        assert other["detail"] == "tuned"
        assert "/etc/tuned/profiles/netfix-lab/tuned.conf" in other["message"]
        assert "reapply_sysctl=0" in other["message"]
        # a key TuneD does not set has no TuneD writer
        assert not others(rows["net.ipv4.ip_forward"])


def test_cilium_agent_owns_rp_filter_all_and_ipv6_forwarding_from_its_config(lab, tmp_path):
    """Invariant: the agent's keys with other values are other-writer while it runs, and
    IPv6 forwarding only when its config dir (read through /proc/PID/root) enables IPv6."""
    cfg = lab.dir / "cilium-config-map"
    cfg.mkdir()
    (cfg / "enable-ipv6").write_text("true\n")
    try:
        with fake_process(lab, "cilium-agent", f"--config-dir={cfg}") as pid:
            rows = plan_rows(lab, tmp_path)
            rp = rows["net.ipv4.conf.all.rp_filter"]
            assert rp["wins"] == "cilium" and "other-writer" in rp["flags"], rp
            (cilium,) = others(rp)
            assert cilium["value"] == "0" and f"pid {pid}" in cilium["source"], cilium
            fwd = rows["net.ipv4.ip_forward"]
            assert fwd["wins"] == "netfix" and "other-writer" not in fwd["flags"], fwd
            v6 = rows["net.ipv6.conf.all.forwarding"]
            assert v6["wins"] == "cilium" and others(v6)[0]["value"] == "1", v6
            (cfg / "enable-ipv6").write_text("false\n")
            assert not others(plan_rows(lab, tmp_path)["net.ipv6.conf.all.forwarding"])
    finally:
        (cfg / "enable-ipv6").unlink()
        cfg.rmdir()
    rp = plan_rows(lab, tmp_path)["net.ipv4.conf.all.rp_filter"]
    assert not others(rp) and "other-writer" not in rp["flags"]


NM_FILE = "/etc/NetworkManager/system-connections/lab-eth1.nmconnection"
NM_TEXT = """[connection]
id=lab-eth1
type=ethernet
interface-name=eth1

[ethernet]
mtu=9000

[802-1x]
password=not-for-netfix
"""
NETWORK_FILE = "/etc/systemd/network/20-lab-eth1.network"
NIC_PROFILE = ("description: eth1 MTU\nnic:\n  interfaces:\n    - match: {name: eth1}\n"
               "      mtu: 1400\n")


def test_networkmanager_mtu_wins_while_it_runs_and_keyfile_secrets_are_not_read(lab, tmp_path):
    """Invariant: a NetworkManager connection's MTU is other-writer only while
    NetworkManager runs (or is enabled); a .network file of a networkd that neither runs
    nor is enabled is listed, not flagged; the fact snippet never reads a keyfile's
    secrets."""
    import yaml

    from netfix import facts
    from netfix.writers import _common, linkfiles

    def snippet_out() -> str:  # the snippet as the fact script runs it (its /proc scan)
        script = facts.build_script(linkfiles.needs(yaml.safe_load(NIC_PROFILE)))
        return facts.parse(NODE, lab.sh(NODE, script)).scripts[linkfiles.SCRIPT]

    lab.sh(NODE, f"mkdir -p {Path(NM_FILE).parent} /etc/systemd/network && "
           f"cat > {NM_FILE} <<'X'\n{NM_TEXT}X\nchmod 600 {NM_FILE} && "
           f"printf '[Match]\\nName=eth1\\n\\n[Link]\\nMTUBytes=1280\\n' > {NETWORK_FILE}")

    def mtu_row() -> dict:
        host = host_plan(lab, tmp_path, NIC_PROFILE)
        return {c["target"]: c for c in host["changes"]}["eth1 mtu"]

    try:
        out = snippet_out()
        assert "not-for-netfix" not in out and "mtu=9000" in out
        assert "IF eth1 " in out
        row = mtu_row()
        by_name = {w["name"]: w for w in row["writers"]}
        assert by_name["NetworkManager"]["value"] == "9000"
        assert by_name["systemd-networkd"]["value"] == "1280"
        assert row["wins"] == "netfix" and "other-writer" not in row["flags"], row
        with fake_process(lab, "NetworkManager", "--no-daemon") as pid:
            assert pid in [p.pid for p in _common.records(snippet_out()).procs]
            row = mtu_row()
            assert row["wins"] == "NetworkManager" and row["boot"] == "9000", row
            other = next(r for r in row["reasons"] if r["code"] == "other-writer")
            assert other["detail"] == "NetworkManager" and NM_FILE in other["message"]
    finally:
        lab.sh(NODE, f"rm -f {NM_FILE} {NETWORK_FILE}")
