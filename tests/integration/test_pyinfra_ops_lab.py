"""netfix inside pyinfra, with the real `pyinfra` CLI against three lab nodes: the README's
examples/pyinfra files exactly as shipped, a host whose write fails, rollback both ways,
pyinfra inventories on netfix's CLI, and the pyinfra transport (ssh connector, @local in a
node's namespaces) planning what the default transport plans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import NETFIX

pytestmark = pytest.mark.integration

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
EXAMPLE = Path(__file__).parents[2] / "examples" / "pyinfra"
NODES = ("node1", "node2", "node3")
KEYS = ("net.ipv4.tcp_synack_retries", "net.core.somaxconn", "net.ipv4.ip_forward",
        "net.ipv4.tcp_max_syn_backlog", "net.netfilter.nf_conntrack_udp_timeout",
        "net.netfilter.nf_conntrack_tcp_timeout_established", "net.ipv4.ip_local_port_range")


def snapshot(lab, node: str) -> tuple[dict[str, str], dict[str, str]]:
    """Live values and every persistence file with its exact bytes."""
    return {k: lab.sysctl(node, k) for k in KEYS}, lab.files(node)


def journal_ids(lab, node: str) -> list[str]:
    return lab.sh(node, "ls /var/lib/netfix/tx 2>/dev/null || true").split()


def run(lab, argv: list[str], rc: int | None = 0) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NETFIX_LAB_DIR": str(lab.dir), "COLUMNS": "200"})
    if rc is not None:
        assert p.returncode == rc, f"{argv} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def pyinfra(lab, inventory: Path, deploy: Path, *args: str, rc: int | None = 0):
    return run(lab, [PYINFRA, str(inventory), str(deploy), *args], rc)


def results(p: subprocess.CompletedProcess) -> dict:
    (op,) = json.loads(p.stdout)["results"]["operations"]
    return op


def history(lab, inventory: Path, node: str) -> list[dict]:
    p = run(lab, [NETFIX, "history", "-i", str(inventory), "--limit", node, "--json"])
    return json.loads(p.stdout)[node]


def test_example_deploy_dry_apply_again_and_netfix_rollback(lab):
    inv, deploy = EXAMPLE / "inventory.py", EXAMPLE / "deploy.py"
    before = {n: snapshot(lab, n) for n in NODES}
    journals = {n: journal_ids(lab, n) for n in NODES}

    # --dry: every host's plan is logged under the host, and nothing changes anywhere
    p = pyinfra(lab, inv, deploy, "--dry")
    for n in NODES:
        current = before[n][0]["net.ipv4.tcp_synack_retries"]
        assert f"[{n}] netfix: change sysctl net.ipv4.tcp_synack_retries: {current} -> 3" \
            in p.stderr
        assert f"[{n}] netfix: skip conntrack net.netfilter.nf_conntrack_buckets: " \
            "not-settable" in p.stderr
    (op,) = json.loads(pyinfra(lab, inv, deploy, "--dry", "--json").stdout)["plan"]
    assert op["hosts_with_change"] == list(NODES)
    assert {n: snapshot(lab, n) for n in NODES} == before
    assert {n: journal_ids(lab, n) for n in NODES} == journals

    # the real run: one journaled transaction per node
    op = results(pyinfra(lab, inv, deploy, "-y", "--json"))
    assert op["success"] == list(NODES) and op["error"] == []
    for n in NODES:
        assert lab.sysctl(n, "net.ipv4.tcp_synack_retries") == "3"
        last = history(lab, inv, n)[-1]
        assert last["kind"] == "apply" and last["status"].startswith("applied")
        assert last["profile"] == "public-vds"

    # a second deploy has nothing to do
    op = results(pyinfra(lab, inv, deploy, "-y", "--json"))
    assert op["no_change"] == list(NODES) and op["success"] == []

    # netfix's own rollback restores what the pyinfra operation applied, byte for byte
    run(lab, [NETFIX, "rollback", "--yes", "-i", str(inv)])
    assert {n: snapshot(lab, n) for n in NODES} == before


def test_failing_host_fails_its_operation_is_restored_others_apply(lab, tmp_path):
    """Invariant: a host whose write fails ends exactly as it was (journal:
    failed-restored) and its operation fails with netfix's message; the others apply."""
    bad = tmp_path / "bad-value.yaml"
    # The kernel refuses an inverted port range (EINVAL) after the first steps are made.
    bad.write_text(textwrap.dedent("""\
        description: the kernel refuses a value half-way
        sysctl:
          net.ipv4.tcp_synack_retries: 2
          net.ipv4.ip_local_port_range: "60000 1000"
          net.core.somaxconn: 8192
        """))
    inv = tmp_path / "inventory.py"
    text = (EXAMPLE / "inventory.py").read_text()
    node3 = '[("node3", {"ssh_hostname": "10.251.0.13"})]'
    assert node3 in text
    inv.write_text(text.replace(
        node3, f'[("node3", {{"ssh_hostname": "10.251.0.13", "netfix_profile": "{bad}"}})]'))
    before = {n: snapshot(lab, n) for n in NODES}
    p = pyinfra(lab, inv, EXAMPLE / "deploy.py", "-y", rc=None)
    assert p.returncode != 0
    assert "[node3] netfix: failed-restored:" in p.stderr
    assert "every step already made was undone" in p.stderr
    op = results(pyinfra(lab, inv, EXAMPLE / "deploy.py", "-y", "--json", rc=None))
    assert op["error"] == ["node3"] and op["no_change"] == ["node1", "node2"]
    assert snapshot(lab, "node3") == before["node3"]
    assert [t["status"].split()[0] for t in history(lab, inv, "node3")[-2:]] == \
        ["failed-restored", "failed-restored"]
    for n in ("node1", "node2"):
        assert lab.sysctl(n, "net.ipv4.tcp_synack_retries") == "3"

    # ... and the other way round: netfix_rollback (a pyinfra operation) undoes them
    rollback = tmp_path / "rollback.py"
    rollback.write_text("from netfix.pyinfra import netfix_rollback\n\n"
                        "netfix_rollback(name='netfix rollback')\n")
    op = results(pyinfra(lab, inv, rollback, "-y", "--json"))
    assert op["success"] == ["node1", "node2"] and op["no_change"] == ["node3"]
    assert {n: snapshot(lab, n) for n in NODES} == before
    assert history(lab, inv, "node1")[-1]["kind"] == "rollback"


def test_netfix_apply_then_pyinfra_dry_rollback_shows_it_and_changes_nothing(lab, tmp_path):
    inv = EXAMPLE / "inventory.py"
    before = snapshot(lab, "node2")
    run(lab, [NETFIX, "apply", "--yes", "-i", str(inv), "--limit", "node2"])
    tx = history(lab, inv, "node2")[-1]["id"]
    rollback = tmp_path / "rollback.py"
    rollback.write_text("from netfix.pyinfra import netfix_rollback\n\n"
                        f"netfix_rollback(tx={tx!r})\n")
    p = pyinfra(lab, inv, rollback, "--dry", "--limit", "node2")
    assert f"[node2] netfix: roll back transaction {tx}" in p.stderr
    assert lab.sysctl("node2", "net.ipv4.tcp_synack_retries") == "3"
    pyinfra(lab, inv, rollback, "-y", "--limit", "node2")
    assert snapshot(lab, "node2") == before


def test_netfix_plan_reads_the_pyinfra_inventory_and_limits_to_its_groups(lab):
    inv = str(EXAMPLE / "inventory.py")
    for group, hosts in (("web", ["node1", "node2"]), ("db", ["node3"]),
                         ("inventory:!node2", ["node1", "node3"])):
        p = run(lab, [NETFIX, "plan", "--json", "-i", inv, "--limit", group], rc=None)
        plan = json.loads(p.stdout)
        assert [h["host"] for h in plan["hosts"]] == hosts
        assert all(not h.get("error") and h["profile"] == "public-vds" for h in plan["hosts"])


def pyinfra_transport_inventory(lab, tmp_path: Path) -> Path:
    """node1 and node2 through pyinfra's ssh connector; node1 again through its @local and
    @chroot connectors, entering node1's namespaces (the shell pyinfra runs is nsenter)."""
    enter = f"nsenter -t {lab.nodes['node1'].pid} -n -m -p -u -- sh"
    inv = tmp_path / "inv.yaml"
    inv.write_text(textwrap.dedent(f"""\
        vars:
          ssh_user: root
          ssh_key: {lab.dir}/id_ed25519
          ssh_known_hosts_file: {lab.dir}/known_hosts
          ssh_strict_host_key_checking: "yes"
          transport: pyinfra
        hosts:
          node1: {{ssh_host: {lab.nodes["node1"].address}}}
          node1-local: {{pyinfra_host: "@local", _shell_executable: {enter}}}
          node2: {{ssh_host: {lab.nodes["node2"].address}}}
          node1-chroot: {{pyinfra_host: "@chroot//", _shell_executable: {enter}}}
        """))
    return inv


def test_pyinfra_transport_ssh_and_local_in_namespace_plan_like_the_default(lab, tmp_path):
    inv = pyinfra_transport_inventory(lab, tmp_path)

    def changes(plan: dict) -> dict[str, list]:
        return {h["host"]: [(c["knob"], c["target"], c["action"], c["current"], c["desired"],
                             c["flags"]) for c in h["changes"]] for h in plan["hosts"]}

    ours = changes(lab.plan_json("--profile", "public-vds"))
    p = run(lab, [NETFIX, "plan", "--json", "-i", str(inv), "--profile", "public-vds",
                  "--limit", "!node1-chroot"], rc=None)
    theirs = changes(json.loads(p.stdout))
    assert set(theirs) == {"node1", "node1-local", "node2"}
    assert theirs["node1"] == ours["node1"] and theirs["node2"] == ours["node2"]
    assert theirs["node1-local"] == ours["node1"]
    assert ("sysctl", "net.ipv4.tcp_synack_retries", "update") in \
        [c[:3] for c in theirs["node1"]]


def test_bad_pyinfra_inventory_is_one_clear_error_with_file_and_line(tmp_path):
    inv = tmp_path / "inventory.py"
    inv.write_text('web = ["node1"]\nport = int("x")\n')
    p = subprocess.run([NETFIX, "plan", "-i", str(inv), "--profile", "public-vds"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"{inv}:2: the inventory's code raised ValueError" in p.stderr


def test_refused_host_fails_its_operation_and_confirm_arms_and_confirms(lab, tmp_path):
    """Invariant: a refused host is not touched at all; a confirmed transaction is in
    place with its automatic revert disarmed."""
    prof = tmp_path / "eth0.yaml"
    prof.write_text("nic:\n  interfaces:\n    - match: {name: eth0}\n      mtu: 1400\n")
    deploy = tmp_path / "deploy.py"
    deploy.write_text(textwrap.dedent(f"""\
        from pyinfra import host
        from netfix.pyinfra import netfix_profile

        if host.name == "node3":
            netfix_profile(name="netfix", profile={str(prof)!r})
        else:
            netfix_profile(name="netfix", profile="public-vds", confirm=60)
        """))
    inv = EXAMPLE / "inventory.py"
    before3 = snapshot(lab, "node3"), lab.sh("node3", "cat /sys/class/net/eth0/mtu")
    p = pyinfra(lab, inv, deploy, "--dry", "--limit", "node1", "--limit", "node3")
    assert "[node3] netfix: change mtu eth0 mtu: 1500 -> 1400 [disruptive" in p.stderr
    assert "management (eth0)" in p.stderr
    p = pyinfra(lab, inv, deploy, "-y", "--limit", "node1", "--limit", "node3", rc=None)
    assert p.returncode != 0
    assert "[node3] netfix: refused: 1 disruptive change(s) on the interface carrying " \
        "netfix's SSH session" in p.stderr
    assert (snapshot(lab, "node3"), lab.sh("node3", "cat /sys/class/net/eth0/mtu")) == before3
    assert "[node1] netfix: confirmed: confirmed " in p.stderr
    last = history(lab, inv, "node1")[-1]
    assert last["status"].split()[0] == "applied"  # not applied-unconfirmed: disarmed
    assert lab.sysctl("node1", "net.ipv4.tcp_synack_retries") == "3"
    run(lab, [NETFIX, "rollback", "--yes", "-i", str(inv), "--limit", "node1"])


def test_a_connector_netfix_cannot_vouch_for_is_noted_and_refused_confirm(lab, tmp_path):
    """Invariant: where the transport cannot tell the SSH interface or prove reachability,
    the plan says so and a --confirm apply changes nothing."""
    inv = pyinfra_transport_inventory(lab, tmp_path)
    before = snapshot(lab, "node1")
    plan = json.loads(run(lab, [NETFIX, "plan", "--json", "-i", str(inv), "--profile",
                                "public-vds", "--limit", "node1-chroot"], rc=None).stdout)
    (hp,) = plan["hosts"]
    assert not hp.get("error") and any(c["action"] == "update" for c in hp["changes"])
    assert any(n.startswith("transport pyinfra (@chroot//) cannot tell which interface")
               for n in hp["notices"])
    p = run(lab, [NETFIX, "plan", "-i", str(inv), "--profile", "public-vds", "--limit",
                  "node1-chroot"], rc=None)
    assert "node1-chroot: NOTE transport pyinfra (@chroot//) cannot prove" in p.stdout + p.stderr
    p = run(lab, [NETFIX, "apply", "--yes", "-i", str(inv), "--profile", "public-vds",
                  "--limit", "node1-chroot", "--confirm", "30", "--auto-confirm"], rc=1)
    assert "--confirm needs proof" in p.stdout and "nothing was changed" in p.stdout
    assert snapshot(lab, "node1") == before
