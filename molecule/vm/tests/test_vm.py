"""Verify (testinfra) the VM lab node in the phase the scenario has reached.

converge.yml writes the phase "applied"; each side effect (side_effect.yml) does the next
step and writes the next phase. Every test runs in every phase, with the expectation of
that phase, so each of them can fail in each verify:

- applied: the profile's values are live (no reboot since prepare);
- rebooted: all of them came back from netfix's files after a real reboot, and a fresh
  plan has nothing to do;
- rolled-back: the originals prepare.yml recorded are live again, netfix's files are gone;
- rolled-back-rebooted: the originals are what the node boots with.

The VM state is read by files/state.sh in one SSH session (the VM is slow under emulation
and has no Python); prepare.yml recorded the originals with the same probe.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

PHASES = ("applied", "rebooted", "rolled-back", "rolled-back-rebooted")
APPLIED = ("applied", "rebooted")
VM_DIR = os.environ.get("NETFIX_VM_DIR", "")
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "."))
PROBE = (Path(__file__).resolve().parent.parent / "files" / "state.sh").read_text()

MAX = "net.netfilter.nf_conntrack_max"
BUCKETS = "net.netfilter.nf_conntrack_buckets"
# What tests/data/vm-node.yaml sets (the pytest VM tests read the same file).
CONNTRACK = json.loads(
    (Path(__file__).resolve().parents[3] / "tests/data/vm-node.expected.json").read_text()
)["conntrack"]
NIC = {
    "e1000e_rx": "1024",
    "e1000e_tx": "1024",
    "e1000e_rx_usecs": "10",
    "virtio_net_rx": "128",
    "virtio_net_tx": "128",
    "virtio_net_txqueuelen": "2500",
}
NETFIX_FILES = {
    "/etc/sysctl.d/90-netfix.conf",
    "/etc/sysctl.d/90-netfix-conntrack.conf",
    "/etc/modprobe.d/netfix-conntrack.conf",
    "/etc/modules-load.d/netfix-conntrack.conf",
    "/etc/netfix/nic.sh",
    "/etc/systemd/system/netfix-nic.service",
    "/etc/systemd/system/sysinit.target.d/netfix-nic.conf",
    "/etc/udev/rules.d/90-netfix-nic.rules",
}


@pytest.fixture(scope="module")
def phase_info() -> dict:
    info = json.loads((EPHEMERAL / "vm-phase.json").read_text())
    assert info["phase"] in PHASES, info
    return info


@pytest.fixture(scope="module")
def phase(phase_info) -> str:
    return phase_info["phase"]


@pytest.fixture(scope="module")
def originals() -> dict[str, str]:
    return json.loads((EPHEMERAL / "vm-originals.json").read_text())


@pytest.fixture(scope="module")
def state(host, phase) -> dict[str, str]:
    # After the rollback reboot nothing loads nf_conntrack any more (netfix's
    # modules-load.d file is gone), so its sysctls do not exist: as on a real node,
    # kube-proxy would load it. The probe records first whether it was loaded at boot
    # (test_conntrack_module_loaded_at_boot), then loads it to compare the values.
    modprobe = "1" if phase == "rolled-back-rebooted" else "0"
    out = host.run("STATE_MODPROBE=%s sh -c %s", modprobe, PROBE)
    assert out.rc == 0, out.stderr
    values = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert values.get("end") == "ok", out.stdout
    return values


def _ssh_options(args: str) -> dict[str, str]:
    """ssh -o options in the order given, first value of each kept (as ssh does)."""
    tokens = args.split()
    opts: dict[str, str] = {}
    for i, tok in enumerate(tokens[:-1]):
        if tok == "-o" and "=" in tokens[i + 1]:
            key, value = tokens[i + 1].split("=", 1)
            opts.setdefault(key.lower(), value)
    return opts


def _netfix() -> str:
    return shutil.which("netfix") or str(Path(sys.executable).with_name("netfix"))


def _wrong_known_hosts(tmp_path: Path, port: int) -> Path:
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, blob = key.with_suffix(".pub").read_text().split()[:2]
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    return path


def test_boot_id_matches_the_phase(state, phase_info, originals):
    """applied: no reboot since prepare (the values are live ones); each reboot phase: a
    new boot; rolled-back: the rollback itself did not reboot. The side effect read the
    boot ids on the VM before and after its step: the one after must be the current one
    (which also proves those reads reached the VM, not the controller)."""
    phase = phase_info["phase"]
    if phase == "applied":
        assert state["boot_id"] == originals["boot_id"]
        return
    before, after = phase_info["boot_id_before"], phase_info["boot_id_after"]
    assert after == state["boot_id"], phase_info
    if phase == "rolled-back":
        assert phase_info["after"] == "rollback", phase_info
        assert before == after, phase_info
    else:
        assert phase_info["after"] == "reboot", phase_info
        assert before != after, phase_info
    if phase == "rebooted":
        # Nothing rebooted the VM between prepare and this first reboot.
        assert before == originals["boot_id"], phase_info


def test_testinfra_checks_the_host_key(host, tmp_path):
    """testinfra maps the ssh-connection host to its own ssh backend: the VM dir's
    known_hosts with strict checking must come first, and a wrong key must fail."""
    ssh_host = host.backend.ansible_runner.get_host(host.backend.host)
    backend = ssh_host.backend
    assert backend.NAME == "ssh"
    opts = _ssh_options(backend.ssh_extra_args)
    known_hosts = f"{VM_DIR}/known_hosts"
    assert opts["userknownhostsfile"] == known_hosts, backend.ssh_extra_args
    assert opts["stricthostkeychecking"] == "yes", backend.ssh_extra_args
    assert Path(known_hosts).read_text().startswith(f"[127.0.0.1]:{backend.host.port} ")

    wrong = _wrong_known_hosts(tmp_path, int(backend.host.port))
    args = "-o ControlPath=none " + backend.ssh_extra_args.replace(known_hosts, str(wrong))
    spec = f"ssh://{backend.host.user}@{backend.host.name}:{backend.host.port}"
    impostor = testinfra.get_host(
        spec, ssh_extra_args=args, ssh_identity_file=backend.ssh_identity_file
    )
    with pytest.raises(RuntimeError, match="Host key verification failed"):
        impostor.run("true")


def test_ansible_checks_the_host_key(tmp_path):
    """Ansible (prepare.yml, side_effect.yml) gets the same ssh_args first; with a wrong
    key in that known_hosts the VM is unreachable, Molecule's per-host
    `StrictHostKeyChecking=no` notwithstanding."""
    port = json.loads(Path(VM_DIR, "state.json").read_text())["port"]
    wrong = _wrong_known_hosts(tmp_path, port)
    env = {
        **os.environ,
        "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={wrong} -o StrictHostKeyChecking=yes "
        "-o ControlMaster=no -o ControlPath=none",
    }
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    p = subprocess.run(
        ["ansible", "all", "-i", inventory, "-m", "ansible.builtin.raw", "-a", "true"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert p.returncode != 0, p.stdout
    assert "Host key verification failed" in p.stdout + p.stderr, p.stdout + p.stderr


def test_originals_differ_from_the_profile(originals):
    """Guards every comparison below: the profile changes each of these values."""
    same = {k: v for k, v in CONNTRACK.items() if originals[k] == v}
    same |= {k: v for k, v in NIC.items() if originals[k] == v}
    assert not same, same
    assert originals["irqbalance_enabled"] == "disabled"
    assert originals["irqbalance_active"] == "inactive"
    assert originals["netfix_files"].strip() == ""


def test_conntrack_module_loaded_at_boot(state, phase):
    # applied / rolled-back: loaded by prepare (as kube-proxy would); rebooted: loaded at
    # boot by netfix's modules-load.d file; rolled-back-rebooted: nobody loads it.
    assert state["conntrack_loaded"] == ("0" if phase == "rolled-back-rebooted" else "1")


def test_conntrack_values(state, phase, originals):
    """Max, buckets and the timeouts. After the reboot the timeouts prove the module-load
    race is handled: sysctl.d lines for net.netfilter are skipped at boot when the module
    is not loaded yet."""
    want = CONNTRACK if phase in APPLIED else {k: originals[k] for k in CONNTRACK}
    assert {k: state[k] for k in CONNTRACK} == want


def test_conntrack_buckets_and_hashsize(state, phase, originals):
    if phase in APPLIED:
        assert int(state[MAX]) == 4 * int(state[BUCKETS])
        assert state["hashsize"] == CONNTRACK[BUCKETS]
    else:
        assert state["hashsize"] == originals["hashsize"]


def test_nic_rings_and_coalescing(state, phase, originals):
    assert (state["e1000e_iface"], state["virtio_net_iface"]) == ("enp0s2", "enp0s3")
    want = NIC if phase in APPLIED else {k: originals[k] for k in NIC}
    assert {k: state[k] for k in NIC} == want


def test_irqbalance_service(host, state, phase):
    irqbalance = host.service("irqbalance")
    on = phase in APPLIED
    assert irqbalance.is_enabled is on
    assert irqbalance.is_running is on
    assert (state["irqbalance_enabled"], state["irqbalance_active"]) == (
        ("enabled", "active") if on else ("disabled", "inactive")
    )


def test_irqbalance_daemon_has_the_banned_cpus(state, phase):
    """The running daemon's own environment (/proc/PID/environ): restarted after the
    file changed, or started at boot from it."""
    if phase in APPLIED:
        assert state["irqbalance_comm"] == "irqbalance"
        assert "IRQBALANCE_BANNED_CPULIST=1" in state["irqbalance_env"].split()
    else:
        assert state["irqbalance_pid"] == "0"


def test_irqbalance_defaults_file(state, phase, originals):
    if phase in APPLIED:
        assert state["irqbalance_default_banned"] == "IRQBALANCE_BANNED_CPULIST=1"
        assert state["irqbalance_default_sha256"] != originals["irqbalance_default_sha256"]
    else:
        # Byte for byte what was there before netfix.
        assert state["irqbalance_default_sha256"] == originals["irqbalance_default_sha256"]


def test_netfix_files(state, phase):
    assert set(state["netfix_files"].split()) == (NETFIX_FILES if phase in APPLIED else set())


def test_persistence_file_contents(host, phase):
    modules = host.file("/etc/modules-load.d/netfix-conntrack.conf")
    modprobe = host.file("/etc/modprobe.d/netfix-conntrack.conf")
    if phase in APPLIED:
        assert modules.contains("^nf_conntrack$")
        assert modprobe.contains(f"^options nf_conntrack hashsize={CONNTRACK[BUCKETS]}$")
    else:
        assert not modules.exists
        assert not modprobe.exists


def test_journal(state, phase):
    """One apply transaction; after the rollback it is marked rolled back by a rollback
    transaction of its own (whose status, as a transaction, is applied)."""
    txs = {k[len("tx."):]: v.split() for k, v in state.items() if k.startswith("tx.")}
    applies = [tx for tx, v in txs.items() if v[0] == "apply"]
    rollbacks = [tx for tx, v in txs.items() if v[0] == "rollback"]
    assert len(applies) == 1, txs
    if phase in APPLIED:
        assert rollbacks == [], txs
        assert txs[applies[0]][1] == "applied", txs
    else:
        assert len(rollbacks) == 1 and len(txs) == 2, txs
        assert txs[applies[0]][1:3] == ["rolled-back", rollbacks[0]], txs
        assert txs[rollbacks[0]][1] == "applied", txs


def test_plan_detailed_exitcode(state, phase):
    """Nothing pending while applied (also after the reboot: what netfix persisted is what
    it wants); everything pending again after the rollback."""
    profile = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"], os.environ["NETFIX_PROFILE_FILE"])
    p = subprocess.run(
        [_netfix(), "plan", "--detailed-exitcode", "-i", f"{VM_DIR}/inventory.yaml",
         "--profile", str(profile)],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300,
    )
    assert p.returncode == (0 if phase in APPLIED else 2), p.stdout + p.stderr
