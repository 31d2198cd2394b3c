"""The doctor runner: the one script per host, its output framing, Sample parsing, errors
per detector and per host, parallel hosts (window once, not per host), exit codes.
Runs the real script on this machine through the local transport (no root needed)."""

from __future__ import annotations

import shutil
import subprocess
import time
import types

import pytest

from netfix.doctor import Finding, Severity, detectors
from netfix.doctor import run as drun
from netfix.errors import NetfixError
from netfix.inventory import Host


def local(name: str = "@local") -> Host:
    return Host(name, [], {"connection": "local"})


def unreachable() -> Host:
    # A closed port on loopback: refused at once, never leaves the machine.
    return Host("ghost", [], {"ssh_host": "127.0.0.1", "ssh_port": 9, "connect_timeout": 2})


def test_script_is_posix_sh_and_read_only_shape():
    script = drun.build_script(detectors(), 2)
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, text=True,
                             capture_output=True)
        assert res.returncode == 0, res.stdout
    for m in detectors():
        assert f"once_{m.NAME}()" in script and f"sample_{m.NAME}()" in script
        assert script.count(f"nd_mark before {m.NAME};") == 1
        assert script.count(f"nd_mark after {m.NAME};") == 1
    assert "\nsleep 2\n" in script
    zero = drun.build_script(detectors(), 0)
    assert "sleep" not in zero.split("nd_common\n", 1)[1] and "nd_mark after" not in zero
    # nothing that writes: no redirection into a file other than /dev/null
    import re

    for target in re.findall(r"[^2&]>\s*(\S+)", script):
        assert target in ("/dev/null",), target


def test_detectors_files_are_one_grep_per_sample_and_reach_each_detector_as_sections():
    """Each file read was a process of its own and most of a node's cost: the runner reads
    every detector's declared files with one grep when reading once and one per sample."""
    body = drun.build_script(detectors(), 2).split("nd_common\n", 1)[1]
    greps = [line for line in body.splitlines() if "grep -H ." in line]
    assert [g.split(";")[0] for g in greps] == ["nd_mark files once+before",
                                                "nd_mark files after"]
    zero = drun.build_script(detectors(), 0).split("nd_common\n", 1)[1]
    assert sum("grep -H ." in line for line in zero.splitlines()) == 1  # --window 0: one
    import re

    for m in detectors():  # the detectors' own sh run no file readers of their own
        sh = (drun.resources.files("netfix.doctor") / f"{m.NAME}.sh").read_text()
        code = "\n".join(line for line in sh.splitlines() if not line.lstrip().startswith("#"))
        assert not re.search(r"\b(grep -H|cat) ", code), m.NAME
    mod = types.SimpleNamespace(NAME="d", ONCE_FILES={}, SAMPLE_FILES={
        "kv": drun.Files(("/proc/sys/a/*",)), "raw": drun.Files(("/proc/x",), raw=True)})
    lines = drun.by_path("/proc/sys/a/b:1\n/proc/x:CPU0 CPU1\n/proc/x:NET_RX: 1 2\n"
                         "/proc/sys/c:9\n")
    assert drun.file_sections(mod, "SAMPLE_FILES", lines) == (
        "== kv\n/proc/sys/a/b:1\n== raw\nCPU0 CPU1\nNET_RX: 1 2\n")
    assert drun.file_sections(mod, "ONCE_FILES", lines) == ""
    bad = types.SimpleNamespace(NAME="d", SAMPLE_FILES={"x": drun.Files(("/proc/$(reboot)",))})
    with pytest.raises(NetfixError, match="not plain"):
        drun.build_script([bad], 0)


def test_probe_addresses_are_validated_and_quoted():
    script = drun.build_script(detectors(), 0, ["10.251.0.11", "10.251.0.12"])
    assert "ND_PROBE='10.251.0.11 10.251.0.12'" in script
    with pytest.raises(ValueError):
        drun.build_script(detectors(), 0, ["10.0.0.1; rm -rf /"])


def test_split_output_frames_parts():
    text = ("junk\n@@ND common -\nclock 100\nuptime 50.5\n\n@@ND once addresses\n[1]\n"
            "@@ND before x\n@@ND weird line with words\nkeep\n@@ND end -\n")
    parts = drun.split_output(text)
    assert parts[("common", "-")] == "clock 100\nuptime 50.5\n"
    assert parts[("once", "addresses")] == "[1]\n"
    assert parts[("before", "x")] == "@@ND weird line with words\nkeep\n"
    assert parts[("end", "-")] == ""


RECORDED = """
@@ND common -
clock 1700000000
uptime 1000.5
cpus 4
kernel 6.1.0-18-amd64
uid 0
netns 0
klog dmesg

@@ND klog -
990.25 TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:80. Sending cookies.
junk line
@@ND once d1
once-text
@@ND t before
1000.6
@@ND before d1
b
@@ND t after
1003.1
@@ND after d1
a
@@ND end -
"""


def test_parse_sample_window_klog_and_wall_time():
    s, notes = drun.parse_sample("n1", RECORDED, ["d1"], ["workers"])
    assert s.window == 2.5 and s.cpus == 4 and s.kernel.startswith("6.1") and not s.netns
    assert (s.once["d1"], s.before["d1"], s.after["d1"]) == ("once-text\n", "b\n", "a\n")
    assert len(s.klog) == 1 and s.klog[0].uptime == 990.25
    # 10.25 s before the clock was read
    assert s.klog[0].wall == "2023-11-14T22:13:09Z"
    assert s.groups == ["workers"] and notes == []


def test_parse_sample_refuses_a_cut_off_output():
    with pytest.raises(NetfixError, match="incomplete"):
        drun.parse_sample("n1", RECORDED.split("@@ND after")[0], ["d1"])


def test_window_zero_repeats_the_one_sample():
    text = RECORDED.replace("@@ND t after\n1003.1\n@@ND after d1\na\n", "")
    s, _ = drun.parse_sample("n1", text, ["d1"])
    assert s.window == 0 and s.after["d1"] == s.before["d1"] == "b\n"


def test_local_run_reads_this_machine():
    rep = drun.run([local()], 0)
    h = rep.hosts[0]
    assert h.error is None and not h.detector_errors, (h.error, h.detector_errors)
    assert h.sample.uptime > 0 and h.sample.kernel
    # this machine's own network namespace unless the tests run inside a container
    import os

    init = os.path.exists("/proc/sys/net/core/netdev_max_backlog")
    assert h.netns is (not init) and (h.notes == [] or not init)
    assert h.detectors == [m.NAME for m in detectors()]
    assert rep.exit_code in (0, 2)


def boom(sample):
    raise RuntimeError("bug in the detector")


def fake(name: str, detect) -> types.SimpleNamespace:
    return types.SimpleNamespace(NAME=name, CODES={}, detect=detect)


def test_a_detector_that_raises_is_that_hosts_error_for_that_detector():
    def finds(sample):
        return [Finding("x-y", Severity.WARNING, "s", "summary", "why")]

    mods = [fake("addresses", boom), fake("mtu", finds)]
    rep = drun.run([local()], 0, mods=mods)
    h = rep.hosts[0]
    assert h.error is None
    assert "addresses" in h.detector_errors and "RuntimeError" in h.detector_errors["addresses"]
    assert [f.code for f in h.findings] == ["x-y"] and h.findings[0].detector == "mtu"
    assert h.status == "error" and rep.exit_code == 1


def test_unreachable_host_is_its_error_others_carry_on_in_parallel():
    t0 = time.monotonic()
    rep = drun.run([local("a"), unreachable(), local("b")], 1.0)
    took = time.monotonic() - t0
    by = {h.host: h for h in rep.hosts}
    assert by["ghost"].error and "127.0.0.1" in by["ghost"].error
    assert by["a"].error is None and by["b"].error is None
    assert 0.9 <= by["a"].window <= 1.5
    assert took < 2.5, f"window paid per host? {took:.1f} s"
    assert rep.exit_code == 1


def test_exit_codes():
    def warn(sample):
        return [Finding("x-y", Severity.WARNING, "s", "summary", "why")]

    def info(sample):
        return [Finding("x-z", Severity.INFO, "s", "summary", "why")]

    assert drun.run([local()], 0, mods=[fake("mtu", info)]).exit_code == 0
    assert drun.run([local()], 0, mods=[fake("mtu", warn)]).exit_code == 2


def test_window_is_bounded():
    with pytest.raises(NetfixError):
        drun.run([local()], -1)
    with pytest.raises(NetfixError):
        drun.run([local()], 10_000)


# The processes one node's script starts, by program, in a network namespace of this
# machine's kernel (no kernel log there, like a lab node; its own TCP counters, all 0, so no
# `ss`) with no kubelet or kube-proxy (no rule dumps): the shell itself, the one grep of
# every detector's files and `ip -j -d addr` (addresses, MTUs and tunnels). Each process is
# most of a node's CPU cost (on a 2-CPU controller running 20 lab nodes, wall time): a new
# one must be worth it. (12 before 2026-12-01: date, a second grep, ip route x2,
# iptables-save, nft and their awks, ss.)
NODE_PROCESSES = {"sh": 1, "grep": 1, "ip": 1}


def test_node_script_process_count_in_a_network_namespace(tmp_path):
    import re

    from execs import run_counted  # tests/unit/execs.py: pytest puts tests/unit on sys.path

    p, ran = run_counted(["sh", "-s"], tmp_path / "trace", netns=True,
                         input=drun.build_script(detectors(), 0))
    assert "@@ND end -" in p.stdout, p.stderr
    assert "netns 1" in p.stdout and "klog skipped" in p.stdout
    if re.search(r"^proc (kubelet|kube-proxy) ", p.stdout, re.M):
        pytest.skip("this machine runs kubelet or kube-proxy: the rule dumps run")
    assert ran == NODE_PROCESSES, ran
