"""--trace-drops: the script's shape (writes only into doctor's own tracefs instance, always
turned off), the node-side aggregation run for real on recorded skb:kfree_skb lines (the
kernel's TP_printk formats of 6.1, with `location=%p`, and of 6.8+, `rx_sk=` and
`location=%pS`), address lookup in a kallsyms file, and the drops detector's findings."""
# ruff: noqa: E501  (recorded trace lines are kept whole)

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from netfix.doctor import Sample, Severity, detectors, drops
from netfix.doctor import run as drun
from netfix.errors import NetfixError
from netfix.inventory import Host

TRACE_SH = Path(drun.__file__).with_name("trace.sh")
COMMON_SH = Path(drun.__file__).with_name("common.sh")

# Debian bookworm 6.1 (print fmt "skbaddr=%p protocol=%u location=%p reason: %s"), with
# raw addresses (tracefs's hash-ptr off); see LINES_61_HASHED for the default.
LINES_61 = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 7/7   #P:2
#
#                                _-----=> irqs-off/BH-disabled
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
            bash-411     [000] ..s1.    21.427890: kfree_skb: skbaddr=ffff9c0a4b8e1200 protocol=2048 location=ffffffffbbe62c66 reason: NETFILTER_DROP
            bash-411     [000] ..s1.    21.429159: kfree_skb: skbaddr=ffff9c0a4b8e1300 protocol=2048 location=ffffffffbbe62c66 reason: NETFILTER_DROP
            bash-411     [000] ..s1.    21.429390: kfree_skb: skbaddr=ffff9c0a4b8e1200 protocol=2048 location=ffffffffbbe62c66 reason: NETFILTER_DROP
          <idle>-0       [001] ..s2.    21.431000: kfree_skb: skbaddr=ffff9c0a4b8e1500 protocol=2048 location=ffffffffbbeb3f10 reason: NO_SOCKET
          <idle>-0       [001] ..s2.    21.432000: kfree_skb: skbaddr=ffff9c0a4b8e1600 protocol=34525 location=ffffffffbbdb9a11 reason: NOT_SPECIFIED
            sshd-390     [001] ..s1.    21.433000: kfree_skb: skbaddr=ffff9c0a4b8e1700 protocol=2048 location=ffffffffbbe62c66 reason: NETFILTER_DROP
     ksoftirqd/1-18      [001] ..s..    21.434000: kfree_skb: skbaddr=ffff9c0a4b8e1800 protocol=2048 location=ffffffffc0a1b2c3 reason: QDISC_DROP
"""
# As recorded on the VM node (6.1.0-50, hash-ptr on, the default)
LINES_61_HASHED = """\
 systemd-network-232     [001] ..s1.    17.569692: kfree_skb: skbaddr=00000000890a189f protocol=34525 location=00000000e7cb79b6 reason: NOT_SPECIFIED
            bash-371     [000] .Ns1.    17.572431: kfree_skb: skbaddr=00000000eeb4d065 protocol=2048 location=00000000a12d89fc reason: NO_SOCKET
            bash-371     [000] ..s1.    17.574588: kfree_skb: skbaddr=000000009653192d protocol=2048 location=00000000a12d89fc reason: NO_SOCKET
"""
KALLSYMS = """\
ffffffffbbdb99f0 T kfree_skb_reason
ffffffffbbdb9b00 T consume_skb
ffffffffbbe62bd0 T nf_hook_slow
ffffffffbbe62d00 T nf_hook_slow_list
ffffffffbbe71130 t ip_finish_output2
ffffffffbbeb2080 t udp_queue_rcv_one_skb
ffffffffbbeb3c90 T __udp4_lib_rcv
ffffffffbbeb3c95 d not_text_data
ffffffffc0a1b000 t pfifo_fast_enqueue	[sch_generic_test]
"""
# 6.8+ (print fmt "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s")
LINES_68 = """\
# tracer: nop
          <idle>-0       [003] ..s2. 88123.000001: kfree_skb: skbaddr=00000000c2f7a3b1 rx_sk=0000000000000000 protocol=2048 location=tcp_v4_syn_recv_sock+0x3a1/0x4f0 reason: TCP_LISTEN_OVERFLOW
          <idle>-0       [003] ..s2. 88123.000002: kfree_skb: skbaddr=00000000c2f7a3b2 rx_sk=0000000000000000 protocol=2048 location=tcp_v4_syn_recv_sock+0x3a1/0x4f0 reason: TCP_LISTEN_OVERFLOW
          <idle>-0       [002] ..s2. 88123.000003: kfree_skb: skbaddr=00000000c2f7a3b3 rx_sk=00000000aa11bb22 protocol=2048 location=tcp_conn_request+0x9a/0xbb0 reason: TCP_LISTEN_OVERFLOW
            curl-9001    [000] ..... 88123.100000: kfree_skb: skbaddr=00000000c2f7a3b4 rx_sk=0000000000000000 protocol=2048 location=__dev_queue_xmit+0x8f2/0xd30 reason: QDISC_DROP
     kworker/u8:2-77     [001] ..... 88123.200000: kfree_skb: skbaddr=00000000c2f7a3b5 rx_sk=0000000000000000 protocol=2048 location=__alloc_skb_fail+0x10/0x20 [virtio_net] reason: NOMEM
"""


def stats(entries: int, dropped: int = 0) -> str:
    return (f"entries: {entries}\noverrun: 0\ncommit overrun: 0\nbytes: 10824\n"
            "oldest event ts:    21.427890\nnow ts:    21.527639\n"
            f"dropped events: {dropped}\nread events: 0\n")


def run_read(tmp_path: Path, lines: str, cpu_stats: list[str], kallsyms: str = "",
             cap: int | None = None) -> str:
    """nd_trace_read, the real sh, on a fake instance directory holding recorded lines."""
    inst = tmp_path / "instance"
    (inst / "events/skb/kfree_skb").mkdir(parents=True)
    (inst / "trace").write_text(lines)
    for i, text in enumerate(cpu_stats):
        (inst / f"per_cpu/cpu{i}").mkdir(parents=True)
        (inst / f"per_cpu/cpu{i}/stats").write_text(text)
    syms = tmp_path / "kallsyms"
    syms.write_text(kallsyms)
    script = (COMMON_SH.read_text() + TRACE_SH.read_text()
              + f"nd_tr_i='{inst}'; nd_tr_state=stopped; nd_tr_start=21.4; nd_tr_stop=26.4\n"
              + (f"ND_TRACE_LINES={cap}\n" if cap else "")
              + f"ND_KALLSYMS='{syms}'\nnd_trace_read\n")
    res = subprocess.run(["sh", "-s"], input=script, text=True, capture_output=True,
                         check=True)
    # the instance is removed (here: rmdir fails on a non-empty directory; never rm -r)
    return drun.split_output(res.stdout)[("trace", "-")]


def sample(trace: str | None, netns: bool = False) -> Sample:
    return Sample(host="n1", window=5.0, trace=trace, netns=netns)


def test_script_without_trace_is_unchanged_and_with_trace_writes_only_its_instance():
    plain = drun.build_script(detectors(), 2)
    assert "nd_trace_" not in plain and "/tracing" not in plain
    script = drun.build_script(detectors(), 5, trace=5)
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, text=True,
                             capture_output=True)
        assert res.returncode == 0, res.stdout
    # every write goes to /dev/null or into doctor's own instance ($nd_tr_i, or $2 in the
    # guard, $d: the $nd_tr_i it is given)
    code = "\n".join(ln for ln in script.splitlines() if not ln.lstrip().startswith("#"))
    for target in re.findall(r"[^2&]>\s*(\S+)", code):
        if target == "best[i])":  # awk's greater-than in the kallsyms lookup
            continue
        assert target == "/dev/null" or target.startswith(('"$nd_tr_i/', '"$d/')), target
    assert "mkdir \"$_tr_top/instances/$_tr_name\"" in script
    assert "trap 'nd_trace_cleanup' EXIT" in script and "setsid sh -c" in script
    body = script.split("\nnd_common\n", 1)[1].splitlines()
    # started before the first sample, off after 5 s, inside the window
    assert body.index("nd_trace_start") < body.index("nd_mark t before; nd_uptime")
    assert body[body.index("nd_trace_off") - 1] == "sleep 5"
    assert body.index("nd_trace_cleanup") < body.index("nd_mark t after; nd_uptime")


def test_trace_longer_than_window_or_alone():
    body = drun.build_script(detectors(), 2, trace=5).split("\nnd_common\n", 1)[1]
    assert body.index("sleep 2") < body.index("nd_mark t after") < body.index("sleep 3") \
        < body.index("nd_trace_off")
    alone = drun.build_script(detectors(), 0, trace=3).split("\nnd_common\n", 1)[1]
    assert "nd_mark after" not in alone and "sleep 3\nnd_trace_off" in alone
    short = drun.build_script(detectors(), 10, trace=4).split("\nnd_common\n", 1)[1]
    assert "sleep 4\nnd_trace_off\nnd_trace_read\nnd_trace_cleanup\nsleep 6\n" in short


def test_trace_is_bounded():
    with pytest.raises(NetfixError, match="trace-drops"):
        drun.run([Host("x", [], {"connection": "local"})], 0, trace=301)


def test_node_side_aggregation_of_61_lines_with_kallsyms(tmp_path):
    out = run_read(tmp_path, LINES_61, [stats(4), stats(3)], KALLSYMS)
    t = drops.parse_trace(out)
    assert t.state == "stopped" and t.seconds == 5.0 and t.lines == 7 and t.entries == 7
    assert t.lost == 0 and not t.capped and t.cap == 20000
    assert drops.by_reason(t)[0] == ("NETFILTER_DROP", 4, [("nf_hook_slow", 4)])
    rows = {(r, s): c for c, r, s in t.rows}
    assert rows[("NO_SOCKET", "__udp4_lib_rcv")] == 1  # not the data symbol after it
    assert rows[("NOT_SPECIFIED", "kfree_skb_reason")] == 1
    assert rows[("QDISC_DROP", "pfifo_fast_enqueue")] == 1  # a module's symbol


def test_hashed_addresses_stay_hex_and_tell_sites_apart(tmp_path):
    t = drops.parse_trace(run_read(tmp_path, LINES_61_HASHED, [stats(3)], KALLSYMS))
    assert t.rows == [(2, "NO_SOCKET", "00000000a12d89fc"),
                      (1, "NOT_SPECIFIED", "00000000e7cb79b6")]


def test_unresolvable_addresses_stay_hex(tmp_path):
    t = drops.parse_trace(run_read(tmp_path, LINES_61, [stats(7)], ""))
    assert ("NETFILTER_DROP", "ffffffffbbe62c66") in {(r, s) for _, r, s in t.rows}


def test_node_side_aggregation_of_68_lines_symbolic(tmp_path):
    t = drops.parse_trace(run_read(tmp_path, LINES_68, [stats(5)]))
    top = drops.by_reason(t)[0]
    assert top[0] == "TCP_LISTEN_OVERFLOW" and top[1] == 3
    assert dict(top[2]) == {"tcp_v4_syn_recv_sock": 2, "tcp_conn_request": 1}
    assert ("NOMEM", "__alloc_skb_fail") in {(r, s) for _, r, s in t.rows}


def test_line_cap_and_lost_events_make_a_scaled_sample(tmp_path):
    t = drops.parse_trace(run_read(tmp_path, LINES_61, [stats(7, dropped=13)], KALLSYMS,
                                   cap=5))
    assert t.lines == 5 and t.lost == 13 and t.capped and t.scale == 20 / 5
    f = drops.detect(sample(run_read(tmp_path / "b", LINES_61, [stats(7, 13)], KALLSYMS,
                                     cap=5)))
    assert "a sample" in f[0].summary and f[0].evidence["capped"] == 1


def test_findings_point_at_the_detector_that_fixes_the_reason(tmp_path):
    found = drops.detect(sample(run_read(tmp_path, LINES_61, [stats(7)], KALLSYMS)))
    by = {f.subject: f for f in found}
    assert [f.subject for f in found][0] == "NETFILTER_DROP"
    nf = by["NETFILTER_DROP"]
    assert nf.code == "drops-reason" and nf.now
    # 4 in 5 s: 0.8/s, below the warning rate
    assert nf.severity == Severity.INFO and nf.evidence["trace_drops_per_second"] == 0.8
    assert nf.evidence["see"] == "conntrack" and "conntrack-table-full" in nf.why
    assert nf.evidence["top_location"] == "nf_hook_slow"
    assert by["QDISC_DROP"].evidence["see"] == "nic" and "txqueuelen" in by["QDISC_DROP"].why
    assert by["NO_SOCKET"].severity == Severity.INFO and "normal" in by["NO_SOCKET"].why
    assert not nf.remedy.profile  # the pointed-at detector owns the knobs


def test_a_busy_actionable_reason_is_a_warning():
    text = ("state stopped\nstart 10.0\nstop 15.0\ncap 20000\nbuffer_kb 512\nentries 900\n"
            "overrun 0\ndropped 0\nlines 900\n== events\n"
            "850 NETFILTER_DROP ffffffffbbe62c66 nf_hook_slow\n"
            "50 NO_SOCKET ffffffffbbeb3f10 __udp4_lib_rcv\n")
    found = drops.detect(sample(text))
    assert [(f.subject, f.severity) for f in found] == [
        ("NETFILTER_DROP", Severity.WARNING), ("NO_SOCKET", Severity.INFO)]
    assert found[0].evidence["count"] == 850 and found[0].evidence["share_pct"] == 94.4
    assert found[0].evidence["trace_drops_per_second"] == 170.0


@pytest.mark.parametrize("state", ["netns", "notracefs", "noreason", "noinstance"])
def test_not_traced_says_why_as_info(state):
    found = drops.detect(sample(f"state {state}\n"))
    assert [(f.code, f.severity) for f in found] == [("drops-trace-unavailable",
                                                      Severity.INFO)]
    if state == "netns":
        assert "whole host" in found[0].summary


def test_not_asked_for_nothing():
    assert drops.detect(sample(None)) == []


def test_netns_note_when_asked(tmp_path):
    text = ("@@ND common -\nclock 1700000000\nuptime 100\ncpus 2\nkernel 6.1\nuid 0\n"
            "netns 1\nklog skipped\n@@ND klog -\n@@ND t before\n99\n"
            "@@ND trace -\nstate netns\n@@ND end -\n")
    s, notes = drun.parse_sample("n1", text, [])
    assert s.trace == "state netns\n"
    assert any("--trace-drops not run" in n for n in notes)


def test_local_run_with_trace_on_a_machine_without_the_event():
    """This machine (or container) runs the real script with --trace-drops: whatever it
    has, the run completes and the drops detector reports a state, never an error."""
    rep = drun.run([Host("@local", [], {"connection": "local"})], 0, trace=0.5)
    h = rep.hosts[0]
    assert h.error is None and not h.detector_errors, (h.error, h.detector_errors)
    assert h.sample.trace is not None
    assert any(f.detector == "drops" for f in h.findings) or "state stopped" in h.sample.trace
