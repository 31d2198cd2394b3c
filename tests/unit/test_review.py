"""The reviewable plan: unified diffs from the ops' bytes, hosts grouped by identical change
sets, short rows with footnotes, Markdown that a Markdown parser reads as intended, and the
apply/rollback question refused without a terminal."""

from __future__ import annotations

import base64
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from netfix import render, review
from netfix.facts import Facts, Value
from netfix.knobs import Context, firewall, irqbalance, synflood, sysctl
from netfix.plan import Change, HostPlan, Op, Plan
from netfix.util import sysctl_path

CTX = Context("test")
NETFIX = str(Path(sys.executable).with_name("netfix"))
DEBIAN_DEFAULTS = (b"#Configuration for the irqbalance daemon\n\n"
                   b"#Should irqbalance be enabled?\nENABLED=\"1\"\n"
                   b"#IRQBALANCE_BANNED_CPULIST=\n#IRQBALANCE_ARGS=\n")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sysctl_facts(values: dict[str, str], files: dict | None = None) -> Facts:
    f = Facts(host="h", cpus=2, kernel="6.1.0", mem_bytes=2**31)
    for key, value in values.items():
        f.values[sysctl_path(key)] = Value(True, True, value)
    f.files.update(files or {})
    return f


def plus_side(lines: list[str]) -> bytes:
    """The new file from a whole-file diff (old absent): every + line, newline markers
    honoured."""
    out, body = [], [x for x in lines if not x.startswith(("+++", "---", "@@"))]
    for i, line in enumerate(body):
        if line.startswith("+"):
            eol = "" if i + 1 < len(body) and body[i + 1].startswith("\\") else "\n"
            out.append(line[1:] + eol)
    return "".join(out).encode()


def patch(old: bytes, lines: list[str]) -> bytes:
    """Apply a unified diff to `old` (hunks in order), as `patch` would."""
    src = old.decode().splitlines(keepends=True)
    out: list[str] = []
    pos = 0
    body = [x for x in lines if not x.startswith(("+++", "---"))]
    for i, line in enumerate(body):
        if line.startswith("@@"):
            start = int(line.split()[1].split(",")[0][1:])
            start = start - 1 if start else 0
            out += src[pos:start]
            pos = start
        elif line[:1] in (" ", "-"):
            assert src[pos].rstrip("\n") == line[1:], (src[pos], line)
            if line[0] == " ":
                out.append(src[pos])
            pos += 1
        elif line[:1] == "+":
            eol = "" if i + 1 < len(body) and body[i + 1].startswith("\\") else "\n"
            out.append(line[1:] + eol)
    return "".join(out + src[pos:]).encode()


# ------------------------------------------------------------------------------ diffs


def test_new_sysctl_file_diff_is_its_exact_bytes():
    f = sysctl_facts({"net.core.somaxconn": "4096"}, {sysctl.PERSIST: None})
    row = {c.target: c for c in sysctl.diff({"net.core.somaxconn": 8192}, f, CTX)}
    (d,) = review.change_diffs(row[sysctl.PERSIST])
    new = base64.b64decode(row[sysctl.PERSIST].ops[0].new)
    assert d.lines[:2] == ["--- /dev/null", "+++ b/etc/sysctl.d/90-netfix.conf"]
    assert "+net.core.somaxconn = 8192" in d.lines
    assert plus_side(d.lines) == new and d.added == new.count(b"\n") and d.removed == 0


def test_removed_file_and_missing_newline_and_summaries():
    gone = review.unified("/etc/x.conf", b"a\nb\n", None)
    assert gone.lines[:2] == ["--- a/etc/x.conf", "+++ /dev/null"]
    assert gone.removed == 2 and gone.added == 0
    tail = review.unified("/etc/x", b"a\n", b"a\nb")
    assert tail.lines[-2:] == ["+b", "\\ No newline at end of file"]
    assert patch(b"a\n", tail.lines) == b"a\nb"
    binary = review.unified("/etc/x", None, b"\x00\x01")
    assert not binary.lines and binary.summary.startswith("binary file, not shown")
    big = review.unified("/etc/x", b"x\n" * 40000, b"y\n")
    assert not big.lines and "larger than 64 KiB" in big.summary and "80000 bytes" in big.summary


def test_irqbalance_diff_shows_only_the_changed_line():
    f = Facts(host="n", cpus=4, scripts={"irqbalance": "pid1 sh\n"})
    f.files = {irqbalance.DEBIAN: DEBIAN_DEFAULTS, irqbalance.RHEL: None}
    (change,) = irqbalance.diff({"banned_cpus": "0"}, f, CTX)
    (d,) = review.change_diffs(change)
    changed = [x for x in d.lines if x[:1] in "+-" and not x.startswith(("+++", "---"))]
    assert changed == ["+# set by netfix (profile test)", "+IRQBALANCE_BANNED_CPULIST=0"]
    assert d.lines[0] == "--- a/etc/default/irqbalance"
    assert patch(DEBIAN_DEFAULTS, d.lines) == irqbalance.edit(DEBIAN_DEFAULTS, "0", CTX)
    # Content that does not hash to its key is never shown as what the step writes.
    forged = copy.deepcopy(change)
    good = b64(irqbalance.edit(DEBIAN_DEFAULTS, "0", CTX))
    forged.ops[0].set = forged.ops[0].set.replace(good, b64(b"IRQBALANCE_BANNED_CPULIST=7\n"))
    assert review.change_diffs(forged) == []


def test_firewall_diff_is_in_the_nodes_nft_form():
    from test_firewall import LISTING_A, LISTING_B, facts, probe_output

    changes = firewall.diff({"nodeports": {"allow": ["10.0.0.0/8", "192.168.0.0/16"]}},
                            facts(b64(LISTING_A.encode()), probe_output()), CTX)
    table = changes[0]
    (d,) = review.change_diffs(table)
    assert d.path == firewall.TABLE
    changed = [x for x in d.lines if x[:1] in "+-" and not x.startswith(("+++", "---"))]
    assert changed == ["-elements = { 10.0.0.0/8 }", "+elements = { 10.0.0.0/8, 192.168.0.0/16 }"]
    # The row keeps a count, not the flattened diff.
    text = review.short_notes(table, review.Footnotes(), diffs=False)
    assert "ruleset +1 -1 line(s) (--diff shows them)" in text and " | " not in text
    assert LISTING_B  # the fixture the probe rendered


# --------------------------------------------------------------------- notes, grouping


def test_long_notes_become_shared_footnotes_and_numbers_stay_inline():
    f = sysctl_facts({"net.ipv4.tcp_syncookies": "1", "net.ipv4.tcp_synack_retries": "5"},
                     {synflood.PERSIST: None})
    rows = [c for c in synflood.diff({"syncookies": 1, "synack_retries": 3}, f, CTX)
            if c.target.startswith("net.")]
    notes = review.Footnotes()
    texts = [review.short_notes(c, notes, False) for c in rows]
    again = [review.short_notes(c, notes, False) for c in rows]  # a second host: same numbers
    assert texts == again and len(notes.texts) == 2
    assert all(len(t) < 40 and t.startswith("[") for t in texts)
    assert notes.texts[0].startswith("SYN flood:")
    # Without --explain the why-texts are left out (and counted), not numbered.
    quiet = review.Footnotes(explain=False)
    assert [review.short_notes(c, quiet, False) for c in rows] == ["", ""]
    assert quiet.texts == [] and len(quiet.hidden) == 2
    pinned = Change("conntrack", "net.netfilter.nf_conntrack_max", "65536", "262144",
                    notes=["max 262144; a full table of 262144 entries pins 76 MiB (304 "
                           "B/entry)"])
    assert review.short_notes(pinned, notes, False) == "pins 76 MiB [3]"
    shadow = Change("sysctl", "net.core.somaxconn", "1", "2", flags=["shadowed"],
                    notes=["shadowed at boot by /etc/sysctl.d/99-x.conf (sets 5): it sorts "
                           "after /etc/sysctl.d/90-netfix.conf; remove the key there or rename"])
    assert review.short_notes(shadow, notes, False) == \
        "shadowed; by /etc/sysctl.d/99-x.conf (5) [4]"


def test_compact_host_lists():
    names = [f"node{i}" for i in range(1, 21) if i != 7]
    assert review.compact(names) == "node[1-6,8-20]"
    assert review.compact(["node7"]) == "node7"
    assert review.compact(["web01", "web02", "web04", "db"]) == "web[01-02,04], db"
    groups = {"edge": {"node1", "node2"}, "all": set(names), "big": {"node1", "node99"}}
    assert review.compact(["node1", "node2", "node3"], groups) == "edge, node3"


def host_plan(name: str, mtu: str = "1500") -> HostPlan:
    changes = [
        Change("sysctl", "net.core.somaxconn", "4096", "8192",
               ops=[Op("value", "/proc/sys/net/core/somaxconn", "4096", "8192")]),
        Change("mtu", "eth1 mtu", mtu, "1450", flags=["disruptive"],
               ops=[Op("cmd", "mtu:eth1", mtu, "1450", "r", "s")]),
        Change("sysctl", sysctl.PERSIST, "absent", "2 lines", ops=[
            Op("file", sysctl.PERSIST, None, b64(b"# netfix\nnet.core.somaxconn = 8192\n"))]),
        Change("sysctl", "net.ipv4.ip_forward", "1", "1", action="ok"),
    ]
    return HostPlan(name, "test", changes, info={"cpus": 2, "kernel": "6.1.0"})


def fleet() -> Plan:
    return Plan([host_plan(f"node{i}", "9000" if i == 7 else "1500") for i in range(1, 21)])


def test_identical_hosts_form_one_group_and_the_odd_one_shows_what_differs():
    groups = review.group_hosts(fleet())
    assert [len(g.plans) for g in groups] == [19, 1]
    assert review.compact(groups[0].hosts) == "node[1-6,8-20]"
    assert [c.target for c in groups[1].differs] == ["eth1 mtu"] and not groups[1].missing
    assert len(review.group_hosts(fleet(), per_host=True)) == 20
    line = review.headline(fleet(), groups)
    assert "60 change(s) on 20 of 20 host(s); 2 group(s)" in line
    assert "node[1-6,8-20] 19 host(s) x 3 change(s), node7 1 host(s) x 3 change(s)" in line


def test_grouped_table_is_short_and_per_host_prints_everyone(capsys):
    render.plan_table(fleet(), diff=True)
    grouped = capsys.readouterr().out.splitlines()
    assert grouped[0].startswith("node[1-6,8-20] [19 hosts] (profile test, 2 CPUs")
    assert "+net.core.somaxconn = 8192" in grouped
    assert any("differs from node[1-6,8-20] in 1 row(s)" in x for x in grouped)
    odd = grouped.index(next(x for x in grouped if x.startswith("node7")))
    assert [x for x in grouped[odd:] if "eth1 mtu" in x][0].split()[4:6] == ["9000", "1450"]
    render.plan_table(fleet(), per_host=True)
    every = capsys.readouterr().out.splitlines()
    assert sum(x.startswith("node") for x in every) == 20
    assert len(grouped) < 25 < len(every)


# -------------------------------------------------------------------------- markdown


def test_markdown_renders_fences_and_details():
    plan = fleet()
    hostile = b"```\n</details>\n<script>x</script>\n"  # must stay inside its fence
    plan.hosts[6].changes.append(Change("sysctl", "/etc/x.conf", "absent", "3 lines", ops=[
        Op("file", "/etc/x.conf", None, b64(hostile))]))
    text = review.markdown(plan, review.group_hosts(plan))
    tokens = MarkdownIt("commonmark").parse(text)
    fences = [t for t in tokens if t.type == "fence"]
    # node7 repeats none of the group's rows: its fence holds only what differs
    assert [t.info for t in fences] == ["diff"] * 2
    assert "+net.core.somaxconn = 8192\n" in fences[0].content
    assert "+```\n+</details>\n+<script>x</script>\n" in fences[1].content
    blocks = [t.content for t in tokens if t.type == "html_block"]
    assert sum(b.count("<details>") for b in blocks) == 2
    assert sum(b.count("</details>") for b in blocks) == 2
    assert any("<summary><b>node7</b>" in b for b in blocks)
    gfm = MarkdownIt("commonmark").enable("table").render(text)  # tables as GitHub has them
    assert gfm.count("<table>") == 2 and "<script>" not in gfm


# ------------------------------------------------------------------ apply asks, CLI


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NETFIX_INVENTORY"}
    return subprocess.run([NETFIX, *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, **kw)


@pytest.mark.parametrize("args,what", [(["apply", "--profile", "base"], "apply"),
                                       (["rollback"], "roll back")])
def test_non_interactive_apply_and_rollback_without_yes_are_refused(tmp_path, args, what):
    inv = tmp_path / "inv.yaml"  # a host nobody can reach: the refusal comes first
    inv.write_text("hosts: {far: {ssh_host: 127.0.0.1, ssh_port: 1}}\n")
    r = run(*args, "-i", str(inv))
    assert r.returncode == 1
    assert f"refusing to {what} without confirmation: stdin is not a terminal" in r.stderr
    assert "--yes" in r.stderr and "Traceback" not in r.stderr


def test_help_texts_name_the_new_options():
    plan = run("plan", "--help").stdout
    for opt in ("--diff", "--per-host", "--explain", "--markdown"):
        assert opt in plan
    assert "--yes" in run("apply", "--help").stdout and "--yes" in run("rollback", "--help").stdout


def test_change_signature_covers_the_bytes_written():
    a, b = host_plan("a"), host_plan("b")
    b.changes[2].ops[0].new = b64(b"other\n")
    assert [len(g.plans) for g in review.group_hosts(Plan([a, b]))] == [1, 1]


def test_notes_that_differ_between_grouped_hosts_are_not_shown_as_everyones():
    plan = fleet()
    plan.hosts[0].changes[0].notes = ["in use now: 10 of 65536 (0%)", "same"]
    for hp in plan.hosts[1:]:
        hp.changes[0].notes = ["in use now: 99 of 65536 (0%)", "same"]
    main = review.group_hosts(plan)[0]
    row = main.common_notes(main.rows[0])
    assert row.notes == ["same", "notes vary per host (--per-host)"]
    assert main.common_notes(main.rows[1]).notes == []  # nothing differs: no marker


def test_markdown_too_long_for_a_comment_leaves_the_diffs_out():
    plan = fleet()
    big = "".join(f"net.core.key{i} = {i}\n" for i in range(1500)).encode()  # ~33 KB each
    for n in range(3):  # each under the per-file limit, together over a comment's
        plan.hosts[6].changes.append(Change("sysctl", f"/etc/big{n}.conf", "absent", "x", ops=[
            Op("file", f"/etc/big{n}.conf", None, b64(big))]))
    text = review.markdown(plan, review.group_hosts(plan))
    assert len(text) <= review.MAX_MARKDOWN and "The diffs are left out" in text
    assert not [t for t in MarkdownIt().parse(text) if t.type == "fence"]
    small = review.markdown(fleet(), review.group_hosts(fleet()))
    assert "left out" not in small


BAR = """
from netfix.cli import Bar
with Bar("applying", 5) as bar:
    for i in range(5):
        bar(f"node{i}: " + ("failed-restored boom" if i == 2 else "applied 3 step(s)"))
with Bar("applying", 5) as plain:  # stderr piped (run twice: see below)
    plain("node9: applied 1 step(s)")
"""


def test_progress_is_one_bar_on_a_terminal_and_lines_when_piped():
    master, slave = os.openpty()
    try:
        p = subprocess.run([sys.executable, "-c", BAR], stderr=slave, stdout=subprocess.PIPE,
                           env={**os.environ, "COLUMNS": "100"}, timeout=60)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    text = out.decode(errors="replace")
    assert p.returncode == 0
    assert "5/5" in text and "1 failed" in text and "node2: failed-restored boom" in text
    assert "node1: applied" not in text  # a bar, not a line per host
    piped = subprocess.run([sys.executable, "-c", BAR], capture_output=True, text=True)
    assert "  node1: applied 3 step(s)" in piped.stderr and "5/5" not in piped.stderr
