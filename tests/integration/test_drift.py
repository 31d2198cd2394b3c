"""`netfix drift` on real lab nodes: clean after apply, each kind of drift named, an
unreachable host among several, --watch, and the shipped CI examples run as written.

Every test leaves its node as it found it: what it applied is rolled back (--force, since
the test itself changed values behind netfix's back), what it added is removed, and the
node's values and files are compared with the state before the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import pytest
import xmlschema
import yaml
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NETFIX = str(Path(sys.executable).with_name("netfix"))
JUNIT_XSD = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit.xsd"))
PROFILE = "public-vds"
PERSIST = "/etc/sysctl.d/90-netfix.conf"
KEYS = ["net.ipv4.tcp_synack_retries", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.ip_forward", "net.netfilter.nf_conntrack_udp_timeout",
        "net.netfilter.nf_conntrack_tcp_timeout_established"]


def state(lab, node: str) -> tuple[dict[str, str], dict[str, str]]:
    return {k: lab.sysctl(node, k) for k in KEYS}, lab.files(node)


def tx_count(lab, node: str) -> int:
    return len(json.loads(lab.netfix("history", "--limit", node, "--json").stdout)[node])


@contextmanager
def applied(lab, *nodes: str, inventory: Path | None = None):
    """Apply PROFILE to `nodes`; afterwards roll back and prove the nodes are as before."""
    inv = ["-i", str(inventory)] if inventory else []
    limit = ",".join(nodes)
    before = {n: state(lab, n) for n in nodes}
    lab.netfix("apply", "--yes", *inv, "--profile", PROFILE, "--limit", limit)
    try:
        yield
    finally:
        lab.netfix("rollback", "--yes", *inv, "--limit", limit, "--force", check_rc=None)
    assert {n: state(lab, n) for n in nodes} == before


def drift_json(lab, *args: str, rc: int) -> dict:
    p = lab.netfix("drift", "--json", *args, check_rc=rc)
    return json.loads(p.stdout)


def items(report: dict, host: str) -> dict[tuple[str, str], dict]:
    h = next(h for h in report["hosts"] if h["host"] == host)
    return {(i["target"], i["kind"]): i for i in h["items"]}


def test_clean_after_apply_then_live_change_names_host_knob_values(lab):
    key = "net.ipv4.tcp_synack_retries"
    with applied(lab, "node1"):
        p = lab.netfix("drift", "--profile", PROFILE, "--limit", "node1")  # exit 0
        assert "node1 (profile public-vds): no drift" in p.stdout, p.stdout
        clean = drift_json(lab, "--profile", PROFILE, "--limit", "node1", rc=0)["hosts"][0]
        assert clean["status"] == "ok" and clean["items"] == []
        # conntrack max/buckets are host-global, read-only in a namespace: where they differ
        # from the profile (it depends on this machine) they are info, never drift
        assert {(i["target"], i["kind"]) for i in clean["info"]} <= {
            ("net.netfilter.nf_conntrack_max", "not-settable"),
            ("net.netfilter.nf_conntrack_buckets", "not-settable")}

        lab.sh("node1", f"sysctl -qw {key}=5")
        report = drift_json(lab, "--profile", PROFILE, "--limit", "node1", rc=2)
        item = items(report, "node1")[(key, "live")]
        assert (item["host"], item["knob"], item["expected"], item["actual"]) == \
            ("node1", "sysctl", "3", "5")
        assert len(report["hosts"][0]["items"]) == 1  # the files still match: live only

        table = lab.netfix("drift", "--profile", PROFILE, "--limit", "node1", check_rc=2)
        row = next(line for line in table.stdout.splitlines() if key in line).split()
        assert row[:5] == ["live", "sysctl", key, "3", "5"]
        assert "node1" in table.stdout


def test_hand_edited_managed_file_is_reported(lab):
    with applied(lab, "node2"):
        tx = json.loads(lab.netfix("history", "--limit", "node2", "--json").stdout)["node2"][-1]
        lab.sh("node2", f"sed -i 's/^net.ipv4.tcp_synack_retries = 3$/"
                        f"net.ipv4.tcp_synack_retries = 4/' {PERSIST}")
        report = drift_json(lab, "--profile", PROFILE, "--limit", "node2", rc=2)
        found = items(report, "node2")
        edited = found[(PERSIST, "edited")]
        assert edited["knob"] == "sysctl" and tx["id"] in edited["detail"]
        assert "+net.ipv4.tcp_synack_retries = 4" in edited["detail"]
        assert list(found) == [(PERSIST, "edited")]  # live values untouched


def test_later_sorting_sysctl_file_is_reported_as_shadowed(lab):
    shadow = "/etc/sysctl.d/99-zz-drift-test.conf"
    with applied(lab, "node3"):
        lab.sh("node3", f"printf 'net.core.somaxconn = 1024\\n' > {shadow}")
        try:
            report = drift_json(lab, "--profile", PROFILE, "--limit", "node3", rc=2)
            item = items(report, "node3")[("net.core.somaxconn", "shadowed")]
            assert shadow in item["detail"] and item["actual"] == "1024"
            assert item["expected"] == lab.sysctl("node3", "net.core.somaxconn")
        finally:
            lab.sh("node3", f"rm -f {shadow}")


def test_kube_proxy_that_will_overwrite_is_reported(lab):
    # In the lab dir because the node sees it; removed after, or lab down keeps the dir.
    bindir = lab.dir / "drift-test-bin"
    bindir.mkdir(exist_ok=True)
    kp = bindir / "kube-proxy"  # the comm name the fact script looks for
    kp.write_text("#!/bin/sh\nsleep 300\n")
    kp.chmod(0o755)
    try:
        with applied(lab, "node1"):
            pid = lab.sh("node1", f"setsid {kp} --conntrack-tcp-timeout-established=1h0m0s "
                                  ">/dev/null 2>&1 </dev/null & echo $!").strip()
            try:
                report = drift_json(lab, "--profile", PROFILE, "--limit", "node1", rc=2)
                key = "net.netfilter.nf_conntrack_tcp_timeout_established"
                item = items(report, "node1")[(key, "other-writer")]
                assert f"kube-proxy (pid {pid})" in item["detail"] and "3600" in item["detail"]
                assert item["expected"] == "86400"
            finally:
                lab.sh("node1", f"kill -- -{pid}", check=False)  # its session: script, sleep
    finally:
        shutil.rmtree(bindir)


def test_unconfirmed_transaction_is_reported(lab):
    with applied(lab, "node2"):
        tx = json.loads(lab.netfix("history", "--limit", "node2", "--json").stdout)["node2"][-1]
        status = f"/var/lib/netfix/tx/{tx['id']}.status"
        old = lab.sh("node2", f"cat {status}")
        # What `apply --confirm` leaves until it is confirmed (the confirm feature's status).
        lab.sh("node2", f"printf 'applied-unconfirmed 2026-01-01T00:00:00Z\\n' > {status}")
        try:
            report = drift_json(lab, "--profile", PROFILE, "--limit", "node2", rc=2)
            item = items(report, "node2")[(tx["id"], "unconfirmed")]
            assert item["knob"] == "journal" and item["actual"] == "applied-unconfirmed"
        finally:
            lab.sh("node2", f"printf '%s' '{old}' > {status}")
        drift_json(lab, "--profile", PROFILE, "--limit", "node2", rc=0)


def test_unreachable_host_among_several_exit_1_others_checked(lab, tmp_path):
    data = yaml.safe_load(lab.inventory.read_text())
    data["hosts"]["ghost"] = {"ssh_host": "10.251.0.99", "connect_timeout": 2}
    data["groups"]["lab"]["hosts"] = ["node1", "ghost", "node3"]
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data))
    junit, prom = tmp_path / "drift.xml", tmp_path / "drift.prom"
    with applied(lab, "node1", inventory=inv):
        p = lab.netfix("drift", "-i", str(inv), "--limit", "lab", "--profile", PROFILE,
                       "--json", "--junit", str(junit), "--prometheus", str(prom), check_rc=1)
    report = json.loads(p.stdout)
    status = {h["host"]: h["status"] for h in report["hosts"]}
    assert status == {"node1": "ok", "ghost": "error", "node3": "drift"}
    ghost = next(h for h in report["hosts"] if h["host"] == "ghost")
    assert "10.251.0.99" in ghost["error"] and ghost["items"] == []
    assert "drift check failed on ghost" in p.stderr

    JUNIT_XSD.validate(junit.read_text())
    suites = {s.get("name"): s for s in ET.parse(junit).getroot().findall("testsuite")}
    assert suites["ghost"].find("testcase/error") is not None
    assert suites["node1"].get("failures") == "0" and suites["node3"].get("failures") != "0"

    samples = {(s.name, s.labels.get("host")): s.value
               for f in text_string_to_metric_families(prom.read_text()) for s in f.samples
               if s.name != "netfix_drift"}
    assert samples[("netfix_check_success", "ghost")] == 0
    assert samples[("netfix_check_success", "node1")] == 1
    assert samples[("netfix_drift_items", "node1")] == 0
    assert samples[("netfix_drift_items", "node3")] > 0
    assert ("netfix_drift_items", "ghost") not in samples


def test_watch_rechecks_updates_prometheus_and_never_applies(lab, tmp_path):
    prom = tmp_path / "textfile" / "netfix.prom"
    before, txs = state(lab, "node3"), tx_count(lab, "node3")
    p = lab.netfix("drift", "--profile", PROFILE, "--limit", "node3", "--watch", "0.2",
                   "--count", "2", "--prometheus", str(prom), "--json", check_rc=2)
    checks = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(checks) == 2 and all(c["exit_code"] == 2 for c in checks)
    assert "check 1/2" in p.stderr and "check 2/2" in p.stderr
    fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    kinds = {s.labels["kind"] for s in fams["netfix_drift"].samples}
    assert "live" in kinds and "persisted" in kinds
    assert state(lab, "node3") == before and tx_count(lab, "node3") == txs  # read-only


# ---------------------------------------------- the shipped CI examples, as written


def github_command() -> str:
    wf = yaml.safe_load((ROOT / "examples" / "ci" / "github-drift.yml").read_text())
    step = next(s for s in wf["jobs"]["drift"]["steps"] if s.get("name") == "netfix drift")
    assert "${{" not in step["run"]  # runs the same outside Actions
    return step["run"]


def gitlab_command() -> str:
    job = yaml.safe_load((ROOT / "examples" / "ci" / "gitlab-drift.yml").read_text())
    return "\n".join(job["netfix-drift"]["script"])


def run_example(command: str, cwd: Path, inventory: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(exist_ok=True)
    env = {**os.environ, "NETFIX_INVENTORY": str(inventory),
           "GITHUB_STEP_SUMMARY": str(cwd / "step-summary.md"),
           "PATH": f"{Path(NETFIX).parent}:{os.environ['PATH']}"}
    # bash -eo pipefail: how both Actions `run:` steps and GitLab `script:` lines run.
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command],
                          cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("example", ["github", "gitlab"])
def test_ci_example_runs_against_lab_nodes(lab, tmp_path, example):
    command = github_command() if example == "github" else gitlab_command()
    junit = "reports/netfix-drift.xml" if example == "github" else "netfix-drift.xml"
    summary = "step-summary.md" if example == "github" else "netfix-drift.md"
    assert f"--junit {junit}" in command and "netfix drift -i \"$NETFIX_INVENTORY\"" in command
    data = yaml.safe_load(lab.inventory.read_text())
    data["vars"]["profile"] = PROFILE  # the examples take profiles from the inventory
    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump(data))

    with applied(lab, "node1", "node2", "node3", inventory=inv):
        clean = run_example(command, tmp_path / "clean", inv)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        xml = (tmp_path / "clean" / junit).read_text()
        JUNIT_XSD.validate(xml)
        root = ET.fromstring(xml)
        assert [s.get("name") for s in root.findall("testsuite")] == ["node1", "node2", "node3"]
        assert root.get("failures") == "0" and root.get("errors") == "0"
        assert "no drift on 3 host(s)" in (tmp_path / "clean" / summary).read_text()

        lab.sh("node2", "sysctl -qw net.core.somaxconn=1000")
        dirty = run_example(command, tmp_path / "dirty", inv)
        assert dirty.returncode == 2, dirty.stdout + dirty.stderr  # fails the job
        xml = (tmp_path / "dirty" / junit).read_text()
        JUNIT_XSD.validate(xml)
        suites = {s.get("name"): s for s in ET.fromstring(xml).findall("testsuite")}
        fail = suites["node2"].find("testcase[@name='net.core.somaxconn']/failure")
        assert fail.get("type") == "live" and "actual 1000" in fail.get("message")
        assert suites["node1"].get("failures") == "0"
        md = (tmp_path / "dirty" / summary).read_text()
        assert "drift on 1 of 3 host(s)" in md and "net.core.somaxconn" in md
