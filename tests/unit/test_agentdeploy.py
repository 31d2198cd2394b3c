"""netfix agent install's pieces without a node: the code bundle really runs on a bare
Python (no site-packages), the node's python3 is checked before anything changes, the
unit carries the writable paths netfix needs, and the merged profile is the same profile.
The install itself, under real systemd: tests/integration/test_vm.py (agent section)."""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
from pathlib import Path

import pytest

from netfix import agentdeploy as ad
from netfix.errors import NetfixError
from netfix.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("node")
    for f in ad.bundle():
        p = root / f.path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f.data)
    return root


def bare(root: Path, *args: str) -> subprocess.CompletedProcess:
    # -S: not even this Python's site-packages; -I: no environment, no cwd; -B: no .pyc.
    return subprocess.run([sys.executable, "-I", "-S", "-B", str(root / ad.RUNNER.lstrip("/")),
                           *args], capture_output=True, text=True, cwd=root)


def test_bundle_runs_netfix_on_a_bare_python(bundle_root):
    p = bare(bundle_root, "--version")
    assert p.returncode == 0 and p.stdout.strip() == "netfix, version 0.1.0", p.stderr
    # Loading a profile needs yaml, jsonschema, referencing and rpds-py's compiled module.
    p = bare(bundle_root, "profiles", "validate", str(ROOT / "tests/data/agent-vm.yaml"))
    assert p.returncode == 0 and p.stdout.strip().endswith(": ok"), p.stdout + p.stderr
    # The tables a person on the node sees: rich without pygments and markdown-it.
    table = ("import sys; sys.path.insert(0, sys.argv[1]); from netfix import render; "
             "from netfix.engine import HostResult; from netfix.status import HostStatus; "
             "render.results_table([HostResult('vm1', HostStatus.APPLIED, True, '3 step(s)', "
             "'tx1')], 'apply')")
    p = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", table,
                        str(bundle_root / ad.LIB_DIR.lstrip("/"))], capture_output=True, text=True)
    assert p.returncode == 0 and "applied" in p.stdout and "tx1" in p.stdout, p.stderr
    assert not list(bundle_root.rglob("*.pyc"))


def test_bundle_is_netfix_and_its_closure_without_what_the_node_never_needs():
    dists = {ad._key(f.dist) for f in ad.bundle()}
    assert {"netfix", "click", "pyyaml", "jsonschema", "rpds-py", "referencing"} <= dists
    assert not dists & set(ad.LEFT_OUT) and "rich" in dists
    paths = [f.path for f in ad.bundle()]
    assert len(paths) == len(set(paths))
    assert all(p.startswith(ad.LIB_DIR + "/") or p == ad.RUNNER for p in paths)
    assert f"{ad.LIB_DIR}/netfix/sh/tx.sh" in paths  # package data travels too
    assert not any("/__pycache__/" in p or "/tests/" in p for p in paths)


def test_compiled_modules_are_checked_against_the_nodes_python():
    files = ad.bundle()
    assert ad.unloadable(files, importlib.machinery.EXTENSION_SUFFIXES) == []
    other = [".cpython-312-x86_64-linux-gnu.so", ".abi3.so", ".so"]
    bad = ad.unloadable(files, other)
    assert any(b.startswith("rpds.cpython-311") and b.endswith("(rpds-py)") for b in bad), bad
    arm = [s.replace("x86_64", "aarch64") for s in importlib.machinery.EXTENSION_SUFFIXES]
    assert ad.unloadable(files, arm)


@pytest.mark.parametrize("out, why", [
    ("nopython\npid1 systemd\n", "no python3 on the node"),
    ("python /usr/bin/python3 3.11 .so\npid1 sh\n", "systemd is not PID 1"),
    ("python /usr/bin/python3 3.9 .so\npid1 systemd\n", "3.9; netfix needs 3.11"),
])
def test_probe_refuses_nodes_the_agent_cannot_run_on(out, why):
    with pytest.raises(NetfixError, match=why):
        ad.parse_probe(out)


def test_probe_reads_the_nodes_python():
    node = ad.parse_probe("python /usr/bin/python3 3.11 .cpython-311-x86_64-linux-gnu.so "
                          ".abi3.so .so\npid1 systemd\n")
    assert (node.executable, node.version) == ("/usr/bin/python3", "3.11")
    assert node.suffixes[0] == ".cpython-311-x86_64-linux-gnu.so"


def test_unit_is_hardened_with_the_paths_netfix_writes():
    text = ad.unit_text(ad.AgentArgs("/etc/netfix/agent/x y.yaml", "observe", 5,
                                     "127.0.0.1:9617"))
    lines = dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln
                 and not ln.startswith("#"))
    assert lines["ExecStart"] == ("/usr/bin/python3 -I -B /opt/netfix/run.py agent --profile "
                                  "'/etc/netfix/agent/x y.yaml' --mode observe --interval 5 "
                                  "--listen 127.0.0.1:9617")
    assert lines["ProtectSystem"] == "strict" and lines["NoNewPrivileges"] == "yes"
    assert lines["ProtectKernelTunables"] == "no"  # /proc/sys and /sys must stay writable
    assert lines["Restart"] == "on-failure" and lines["RestartSec"]
    writable = lines["ReadWritePaths"].split()
    for path in ("/var/lib/netfix", "/etc/sysctl.d", "/etc/modprobe.d", "/etc/modules-load.d",
                 "/etc/systemd/system", "/etc/netfix"):
        assert path in writable
    # Every path any knob writes is under one of them.
    from netfix.knobs import conntrack, irqbalance
    for path in (conntrack.MODPROBE, irqbalance.DEBIAN, irqbalance.RHEL):
        assert any(path.startswith(w.lstrip("-") + "/") for w in writable), path


def test_agent_profile_is_the_merged_profile(tmp_path):
    path, data, name = ad.agent_profile_file(str(ROOT / "tests/data/agent-vm.yaml"))
    assert path == f"{ad.PROFILE_DIR}/agent-vm.yaml" and name == "agent-vm"
    copy = tmp_path / "agent-vm.yaml"
    copy.write_bytes(data)
    assert "extends" not in copy.read_text()
    assert load_profile(copy).sha256 == load_profile(ROOT / "tests/data/agent-vm.yaml").sha256


def test_install_needs_an_inventory_and_a_profile():
    p = subprocess.run([str(Path(sys.executable).with_name("netfix")), "agent", "install"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--inventory" in p.stderr and "Traceback" not in p.stderr


def test_uninstall_finds_the_install_not_its_own_rollback():
    from netfix import journal
    from netfix.journal import Journal, Step, Tx

    steps = [Step("file", ad.UNIT_PATH, None, "eA==", knob=ad.KNOB, target=ad.UNIT_PATH)]
    install = Tx("20260101T000000Z-aaaaaa", "apply", "vm1", "p", steps, status="applied")
    undo = journal.inverse(install, "20260101T000100Z-bbbbbb")
    undo.status = "applied"
    other = Tx("20260101T000200Z-cccccc", "apply", "vm1", "p",
               [Step("value", "/proc/sys/x", "1", "2", knob="sysctl", target="x")],
               status="applied")
    assert ad.installed_tx(Journal([install, other])) == install.id
    install.status = f"rolled-back {undo.id}"
    assert ad.installed_tx(Journal([install, undo, other])) is None
