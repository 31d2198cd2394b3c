"""End to end on real lab nodes: plan, apply, second plan empty, rollback byte-identical,
history; not-settable host-global keys; failures that must leave nodes as they were."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROFILE_KEYS = [
    "net.ipv4.tcp_synack_retries", "net.ipv4.ip_forward", "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_syncookies",
    "net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_tcp_timeout_syn_sent",
    "net.netfilter.nf_conntrack_tcp_timeout_established", "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
]


def snapshot(lab, node):
    return {k: lab.sysctl(node, k) for k in PROFILE_KEYS}, lab.files(node)


def by_target(plan, host):
    hp = next(h for h in plan["hosts"] if h["host"] == host)
    return {c["target"]: c for c in hp["changes"]}


def test_plan_apply_replan_rollback_history(lab, tmp_path):
    before_vals, before_files = snapshot(lab, "node1")
    plan = lab.plan_json("--profile", "public-vds", "--limit", "node1")
    ch = by_target(plan, "node1")
    assert ch["net.ipv4.tcp_synack_retries"]["desired"] == "3"
    assert ch["net.ipv4.tcp_synack_retries"]["current"] == \
        before_vals["net.ipv4.tcp_synack_retries"]
    assert ch["net.netfilter.nf_conntrack_udp_timeout"]["action"] == "update"
    # host-global in a network namespace: reported per key, never applied (a max that
    # differs from the host's, so that it would have to change)
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text("extends: public-vds\nconntrack: {max: 4194304}\n")
    ch_big = by_target(lab.plan_json("--profile", str(bigger), "--limit", "node1"), "node1")
    for key in ("net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_buckets"):
        assert ch_big[key]["action"] == "skip", ch_big[key]
        assert "not-settable" in ch_big[key]["flags"]
        assert "read-only" in " ".join(ch_big[key]["notes"])
        # said as a code, not only in prose
        assert {"code": "not-settable", "detail": "read-only"}.items() <= \
            ch_big[key]["reasons"][0].items(), ch_big[key]["reasons"]
    assert ch["/etc/sysctl.d/90-netfix.conf"]["action"] == "update"

    lab.netfix("apply", "--yes", "--profile", "public-vds", "--limit", "node1")
    assert lab.sysctl("node1", "net.ipv4.tcp_synack_retries") == "3"
    assert lab.sysctl("node1", "net.ipv4.ip_forward") == "1"
    assert lab.sysctl("node1", "net.netfilter.nf_conntrack_udp_timeout") == "15"
    assert lab.sysctl("node1", "net.netfilter.nf_conntrack_tcp_timeout_syn_sent") == "30"
    assert int(lab.sysctl("node1", "net.core.somaxconn")) >= 8192
    # host-global values untouched, other nodes untouched
    assert lab.sysctl("node1", "net.netfilter.nf_conntrack_max") == \
        before_vals["net.netfilter.nf_conntrack_max"]
    assert lab.sysctl("node2", "net.ipv4.tcp_synack_retries") == \
        before_vals["net.ipv4.tcp_synack_retries"]
    conf = lab.sh("node1", "cat /etc/sysctl.d/90-netfix.conf")
    assert "net.ipv4.tcp_synack_retries = 3" in conf
    ct = lab.sh("node1", "cat /etc/sysctl.d/90-netfix-conntrack.conf")
    assert "net.netfilter.nf_conntrack_udp_timeout = 15" in ct
    assert "nf_conntrack_max" not in ct  # not settable here, so not persisted either
    assert lab.sh("node1", "cat /etc/modules-load.d/netfix-conntrack.conf").strip().endswith(
        "nf_conntrack")
    # the boot-time view agrees with what was applied
    boot = lab.sh("node1", "sysctl --system 2>&1 | grep -c netfix || true")
    assert int(boot.strip() or 0) >= 1

    again = lab.netfix("plan", "--profile", "public-vds", "--limit", "node1",
                       "--detailed-exitcode")
    assert "0 to change" in again.stdout and "Plan: 0 change(s)" in again.stdout
    second = by_target(lab.plan_json("--profile", "public-vds", "--limit", "node1"), "node1")
    assert [t for t, c in second.items() if c["action"] == "update"] == []

    lab.netfix("rollback", "--yes", "--limit", "node1")
    after_vals, after_files = snapshot(lab, "node1")
    assert after_vals == before_vals
    assert after_files == before_files

    hist = json.loads(lab.netfix("history", "--limit", "node1", "--json").stdout)["node1"]
    kinds = [(t["kind"], t["status"].split()[0]) for t in hist]
    assert kinds[-2:] == [("apply", "rolled-back"), ("rollback", "applied")]
    assert hist[-1]["rolls_back"] == hist[-2]["id"]


def test_failure_half_way_restores_the_host(lab, tmp_path):
    before_vals, before_files = snapshot(lab, "node2")
    prof = tmp_path / "bad-value.yaml"
    # The conntrack timeout and both conntrack files are written first; then the kernel
    # rejects an inverted port range (EINVAL), half-way through the transaction.
    prof.write_text(textwrap.dedent("""\
        description: the kernel refuses a value half-way
        conntrack: {timeouts: {udp: 17}}
        sysctl:
          net.ipv4.ip_local_port_range: "60000 1000"
          net.ipv4.tcp_synack_retries: 2
        """))
    p = lab.netfix("apply", "--yes", "--profile", str(prof), "--limit", "node2", check_rc=1)
    assert "failed-restored" in p.stdout and "node2" in p.stderr
    assert "ip_local_port_range" in p.stdout
    assert snapshot(lab, "node2") == (before_vals, before_files)
    hist = json.loads(lab.netfix("history", "--limit", "node2", "--json").stdout)["node2"]
    assert hist[-1]["status"].startswith("failed-restored")


def test_unreachable_host_others_carry_on(lab, tmp_path):
    import yaml

    inv = tmp_path / "inv.yaml"
    # ghost: an address in the lab's own subnet that nothing listens on
    data = yaml.safe_load(lab.inventory.read_text())
    data["hosts"]["ghost"] = {"ssh_host": "10.251.0.99", "connect_timeout": 2}
    data["groups"]["lab"]["hosts"] = ["node1", "ghost", "node3"]
    inv.write_text(yaml.safe_dump(data))
    before3 = lab.sysctl("node3", "net.ipv4.tcp_synack_retries")
    p = lab.netfix("apply", "--yes", "-i", str(inv), "--limit", "lab", "--profile", "public-vds",
                   check_rc=1)
    assert "ghost" in p.stderr and "failed on: ghost" in p.stderr
    assert lab.sysctl("node1", "net.ipv4.tcp_synack_retries") == "3"
    assert lab.sysctl("node3", "net.ipv4.tcp_synack_retries") == "3"
    lab.netfix("rollback", "--yes", "-i", str(inv), "--limit", "node1,node3")
    assert lab.sysctl("node3", "net.ipv4.tcp_synack_retries") == before3


def test_stale_saved_plan_is_refused(lab, tmp_path):
    out = tmp_path / "plan.json"
    lab.netfix("plan", "--profile", "public-vds", "--limit", "node2", "-o", str(out))
    lab.sh("node2", "sysctl -qw net.core.somaxconn=5000")
    try:
        p = lab.netfix("apply", str(out), "--limit", "node2", check_rc=1)
        assert "stale" in p.stdout
        assert lab.sysctl("node2", "net.ipv4.tcp_synack_retries") != "3"  # nothing applied
        # a fresh plan saved and applied at once works
        lab.netfix("plan", "--profile", "public-vds", "--limit", "node2", "-o", str(out))
        lab.netfix("apply", str(out), "--limit", "node2")
        assert lab.sysctl("node2", "net.ipv4.tcp_synack_retries") == "3"
        lab.netfix("rollback", "--yes", "--limit", "node2")
        assert lab.sysctl("node2", "net.core.somaxconn") == "5000"
    finally:
        lab.sh("node2", "sysctl -qw net.core.somaxconn=4096")


def test_rollback_refuses_value_changed_by_hand(lab):
    before = lab.sysctl("node3", "net.ipv4.tcp_synack_retries")
    lab.netfix("apply", "--yes", "--profile", "public-vds", "--limit", "node3")
    lab.sh("node3", "sysctl -qw net.ipv4.tcp_synack_retries=4")
    p = lab.netfix("rollback", "--yes", "--limit", "node3", check_rc=1)
    assert "net.ipv4.tcp_synack_retries: found '4', netfix wrote '3'" in p.stdout
    assert "--force" in p.stdout
    assert lab.sysctl("node3", "net.ipv4.tcp_synack_retries") == "4"  # nothing restored
    assert lab.sysctl("node3", "net.netfilter.nf_conntrack_udp_timeout") == "15"
    lab.netfix("rollback", "--yes", "--limit", "node3", "--force")
    assert lab.sysctl("node3", "net.ipv4.tcp_synack_retries") == before
    assert lab.sysctl("node3", "net.netfilter.nf_conntrack_udp_timeout") != "15"


SCHEMA = Path(__file__).resolve().parents[2] / "netfix" / "schema" / "plan.json"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    if not CHECK_JSONSCHEMA.exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[test]')")
    return subprocess.run([str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA), str(path)],
                          capture_output=True, text=True)


def test_shadowing_file_and_kube_proxy_are_flagged(lab, tmp_path):
    lab.sh("node1", "printf 'net.core.somaxconn = 1024\\n' > /etc/sysctl.d/99-zz-local.conf")
    kp = lab.dir / "kube-proxy"
    kp.write_text("#!/bin/sh\nsleep 300\n")
    kp.chmod(0o755)
    lab.sh("node1", f"setsid {kp} --conntrack-max-per-core=65536 "
           "--conntrack-tcp-timeout-close-wait=1h0m0s >/dev/null 2>&1 < /dev/null &")
    try:
        out = lab.netfix("plan", "--json", "--profile", "public-vds", "--limit", "node1",
                         check_rc=None).stdout
        plan = json.loads(out)
        ch = by_target(plan, "node1")
        som = ch["net.core.somaxconn"]
        assert "shadowed" in som["flags"] and som["boot"] == "1024"
        assert "/etc/sysctl.d/99-zz-local.conf" in " ".join(som["notes"])
        assert {"code": "shadowed", "detail": "/etc/sysctl.d/99-zz-local.conf"}.items() <= \
            som["reasons"][0].items()
        mx = ch["net.netfilter.nf_conntrack_max"]
        assert "other-writer" in mx["flags"], mx
        assert "kube-proxy (pid" in " ".join(mx["notes"])
        codes = {(r["code"], r["detail"]) for r in mx["reasons"]}
        assert ("other-writer", "kube-proxy") in codes, mx["reasons"]
        # The real consumer: the --json output is valid against the documented schema...
        (tmp_path / "plan.json").write_text(out)
        res = check_jsonschema(tmp_path / "plan.json")
        assert res.returncode == 0, res.stdout + res.stderr
        # ...and the schema is not a rubber stamp: an unknown reason code is refused.
        mx["reasons"][0]["code"] = "looks-fine"
        (tmp_path / "bad.json").write_text(json.dumps(plan))
        assert check_jsonschema(tmp_path / "bad.json").returncode == 1
        # node2 has no kube-proxy: no flag there
        ch2 = by_target(lab.plan_json("--profile", "public-vds", "--limit", "node2"), "node2")
        assert "other-writer" not in ch2["net.netfilter.nf_conntrack_max"]["flags"]
    finally:
        lab.sh("node1", "rm -f /etc/sysctl.d/99-zz-local.conf; pkill -x kube-proxy || true")
        kp.unlink()


def test_serial_batches_stop_at_max_fail(lab, tmp_path):
    import yaml

    data = yaml.safe_load(lab.inventory.read_text())
    data["hosts"] = {"ghost": {"ssh_host": "10.251.0.98", "connect_timeout": 1},
                     **data["hosts"]}
    data["groups"]["lab"]["hosts"] = ["ghost", "node1", "node2"]
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    before = lab.sysctl("node1", "net.ipv4.tcp_synack_retries")
    p = lab.netfix("apply", "--yes", "-i", str(inv), "--limit", "lab", "--profile", "public-vds",
                   "--serial", "1", "--max-fail", "0", "--json", check_rc=1)
    status = {r["host"]: r["status"] for r in json.loads(p.stdout)}
    assert status == {"ghost": "error", "node1": "skipped", "node2": "skipped"}
    assert lab.sysctl("node1", "net.ipv4.tcp_synack_retries") == before


def test_rollback_from_another_controller(lab, tmp_path):
    """Nothing on the controller is needed: another HOME and a copied inventory will do."""
    before = lab.sysctl("node2", "net.netfilter.nf_conntrack_icmp_timeout")
    lab.netfix("apply", "--yes", "--profile", "public-vds", "--limit", "node2")
    assert lab.sysctl("node2", "net.netfilter.nf_conntrack_icmp_timeout") == "10"
    other = tmp_path / "other-controller"
    other.mkdir()
    inv = other / "inventory.yaml"
    inv.write_text(lab.inventory.read_text())
    lab.netfix("rollback", "--yes", "-i", str(inv), "--limit", "node2",
               env={"HOME": str(other), "XDG_CACHE_HOME": str(other)})
    assert lab.sysctl("node2", "net.netfilter.nf_conntrack_icmp_timeout") == before
