"""The reviewable plan on real lab nodes: `plan --diff` shows the exact bytes of the files
netfix writes (90-netfix.conf, an edited /etc/default/irqbalance: only the changed line)
and the firewall table's lines as the node's own nft prints them; after apply, the node's
files and table equal the + side. And apply asks on a terminal: "no" changes nothing."""

from __future__ import annotations

import base64
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import NETFIX

pytestmark = pytest.mark.integration
NODE = "node1"
SYSCTL = "/etc/sysctl.d/90-netfix.conf"
IRQ = "/etc/default/irqbalance"
TABLE = "table inet netfix"
# Debian's /etc/default/irqbalance as the package ships it (trimmed).
DEBIAN_DEFAULTS = (b"# irqbalance is a daemon process that distributes interrupts across\n"
                   b"# CPUS on SMP systems.\n#\n#IRQBALANCE_ONESHOT=\n\n"
                   b"# Should irqbalance be enabled?\n#ENABLED=1\n\n"
                   b"#IRQBALANCE_BANNED_CPULIST=\n\n#IRQBALANCE_ARGS=\n")


def profile(tmp_path) -> str:
    p = tmp_path / "review.yaml"
    p.write_text(textwrap.dedent("""\
        description: public-vds-firewall plus a banned CPU, to review before applying
        extends: public-vds-firewall
        irqbalance: {banned_cpus: "0"}
        """))
    return str(p)


def diff_blocks(stdout: str) -> dict[str, list[str]]:
    """Every unified diff in a plan's output, by the path on its +++ (or ---) line."""
    lines = stdout.splitlines()
    blocks: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        if lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            block = [lines[i], lines[i + 1]]
            i += 2
            while i < len(lines) and lines[i][:1] in ("+", "-", "@", " ", "\\") and not (
                    lines[i].startswith("--- ") and i + 1 < len(lines)
                    and lines[i + 1].startswith("+++ ")):
                block.append(lines[i])
                i += 1
            # "+++ b/etc/x", or "+++ table inet netfix (after apply)" for the ruleset
            new, old = block[1][4:].split(" (")[0], block[0][4:].split(" (")[0]
            name = new if new != "/dev/null" else old
            blocks[name[1:] if name.startswith("b/") or name.startswith("a/") else name] = block
            continue
        i += 1
    return blocks


def changed(block: list[str]) -> list[str]:
    return [x for x in block[2:] if x[:1] in "+-"]


def plus_side(block: list[str]) -> bytes:
    """The new content from a diff whose old side is empty (a new file, a new table)."""
    body = [x for x in block[2:] if not x.startswith("@@")]
    assert all(x[:1] in "+\\" for x in body), body
    out = []
    for i, line in enumerate(body):
        if line.startswith("+"):
            last = i + 1 < len(body) and body[i + 1].startswith("\\")
            out.append(line[1:] + ("" if last else "\n"))
    return "".join(out).encode()


def patch(old: bytes, block: list[str]) -> bytes:
    """`old` with the diff applied, hunk by hunk, checking every context and - line."""
    src = old.decode().splitlines(keepends=True)
    out: list[str] = []
    pos = 0
    for line in block[2:]:
        if line.startswith("@@"):
            start = max(0, int(line.split()[1].split(",")[0][1:]) - 1)
            out += src[pos:start]
            pos = start
        elif line[:1] in (" ", "-"):
            assert src[pos].rstrip("\n") == line[1:], (src[pos], line)
            out += [src[pos]] if line[0] == " " else []
            pos += 1
        elif line[:1] == "+":
            out.append(line[1:] + "\n")
    return "".join(out + src[pos:]).encode()


def node_file(lab, path: str) -> bytes | None:
    out = lab.sh(NODE, f"if [ -f {path} ]; then base64 -w0 {path}; else echo ABSENT; fi")
    return None if out.strip() == "ABSENT" else base64.b64decode(out.strip())


def node_table(lab) -> list[str]:
    """The live table normalised as netfix's fact script reads it."""
    out = lab.sh(NODE, "nft -s list table inet netfix | sed 's/^[[:space:]]*//; "
                 "s/[[:space:]]*$//; /^$/d'")
    return out.splitlines()


def test_diff_shows_exact_files_and_ruleset_and_apply_writes_the_plus_side(lab, tmp_path):
    prof = profile(tmp_path)
    lab.sh(NODE, f"printf %s {base64.b64encode(DEBIAN_DEFAULTS).decode()} | base64 -d > {IRQ}")
    try:
        p = lab.netfix("plan", "--profile", prof, "--limit", NODE, "--diff")
        assert "\x1b[" not in p.stdout  # piped: plain text, no colour codes
        blocks = diff_blocks(p.stdout)
        assert {SYSCTL, IRQ, TABLE, "/etc/netfix/firewall.nft",
                "/etc/systemd/system/netfix-firewall.service"} <= set(blocks), list(blocks)

        sysctl = blocks[SYSCTL]
        assert sysctl[:2] == ["--- /dev/null", f"+++ b{SYSCTL}"]
        assert "+net.ipv4.ip_forward = 1" in sysctl
        # The edited distro file: only the banned-CPU line (and netfix's marker) change.
        irq = blocks[IRQ]
        assert irq[:2] == [f"--- a{IRQ}", f"+++ b{IRQ}"]
        assert changed(irq) == ["+# set by netfix (profile review)",
                                "+IRQBALANCE_BANNED_CPULIST=0"]
        # The table in the node's own nft form (e.g. `priority mangle` where it prints so).
        table = blocks[TABLE]
        for rule in ("+tcp dport 30000-32767 jump deny", "+ct direction reply return",
                     '+iifname "cali*" return', "+ip6 saddr @allow6 return", "+drop"):
            assert rule in table, (rule, table)
        assert not any(x.startswith("-") and not x.startswith("---") for x in table)
        # The row itself no longer carries the flattened diff.
        row = next(x for x in p.stdout.splitlines() if x.startswith("~") and TABLE in x)
        assert " | " not in row and "ruleset +" in row

        lab.netfix("apply", "--yes", "--profile", prof, "--limit", NODE)
        for path, block in blocks.items():
            if path == TABLE:
                assert node_table(lab) == plus_side(block).decode().splitlines()
            elif block[0] == "--- /dev/null":
                assert node_file(lab, path) == plus_side(block), path
            else:
                assert node_file(lab, path) == patch(DEBIAN_DEFAULTS, block), path
        again = lab.netfix("plan", "--profile", prof, "--limit", NODE, "--diff")
        assert diff_blocks(again.stdout) == {} and "0 to change" in again.stdout
    finally:
        lab.netfix("rollback", "--yes", "--limit", NODE, check_rc=None)
        assert node_file(lab, IRQ) == DEBIAN_DEFAULTS  # rollback put the distro's bytes back
        lab.sh(NODE, f"rm -f {IRQ}")


def run_on_tty(lab, answer: str, *args: str) -> subprocess.CompletedProcess:
    """netfix with stdin on a pseudo-terminal that has `answer` typed into it."""
    master, slave = os.openpty()
    try:
        os.write(master, answer.encode() + b"\n")
        return subprocess.run([NETFIX, *args, "-i", str(lab.inventory)], stdin=slave,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "200"})
    finally:
        os.close(slave)
        os.close(master)


def test_apply_shows_the_plan_and_asks_on_a_terminal(lab, tmp_path):
    prof = tmp_path / "ask.yaml"
    prof.write_text("description: one key\nsysctl: {net.ipv4.tcp_synack_retries: 2}\n")
    node = "node2"
    before = lab.files(node)
    key = "net.ipv4.tcp_synack_retries"
    was = lab.sysctl(node, key)
    assert was != "2"
    no = run_on_tty(lab, "no", "apply", "--profile", str(prof), "--limit", node)
    assert no.returncode == 1, no
    assert key in no.stdout and "Plan: 2 change(s)" in no.stdout  # it showed what it would do
    assert "Only 'yes' will be accepted" in no.stderr and "Apply cancelled" in no.stderr
    assert lab.sysctl(node, key) == was and lab.files(node) == before
    try:
        yes = run_on_tty(lab, "yes", "apply", "--profile", str(prof), "--limit", node)
        assert yes.returncode == 0, yes
        assert lab.sysctl(node, key) == "2"
        # Rollback asks too, after naming the transaction it would undo.
        keep = run_on_tty(lab, "", "rollback", "--limit", node)
        assert keep.returncode == 1 and "roll back transaction" in keep.stderr
        assert "Rollback cancelled" in keep.stderr and lab.sysctl(node, key) == "2"
        back = run_on_tty(lab, "yes", "rollback", "--limit", node)
        assert back.returncode == 0, back
    finally:
        lab.netfix("rollback", "--yes", "--limit", node, check_rc=None)
    assert lab.sysctl(node, key) == was and lab.files(node) == before
    # Without a terminal and without --yes: refused before any node is contacted.
    p = subprocess.run([NETFIX, "apply", "--profile", str(prof), "-i", str(lab.inventory),
                        "--limit", node], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True)
    assert p.returncode == 1 and "refusing to apply without confirmation" in p.stderr


def step(job: str, name: str) -> str:
    import yaml

    wf = yaml.safe_load((Path(__file__).parents[2] / "examples" / "ci" / "github-plan.yml")
                        .read_text())
    run = next(s for s in wf["jobs"][job]["steps"] if s.get("name") == name)["run"]
    assert "${{" not in run  # runs the same outside Actions
    return run


def test_ci_example_posts_the_plan_and_applies_the_saved_plan(lab, tmp_path):
    """The example pipeline's own command lines, as written: plan on the merge request
    (saved plan, Markdown for the comment), then apply of that saved plan."""
    import yaml
    from markdown_it import MarkdownIt

    data = yaml.safe_load(lab.inventory.read_text())
    data["vars"]["profile"] = "public-vds-firewall"  # the example takes it from the inventory
    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump(data))
    env = {**os.environ, "NETFIX_INVENTORY": str(inv),
           "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
           "PATH": f"{Path(NETFIX).parent}:{os.environ['PATH']}"}

    def run(command: str) -> subprocess.CompletedProcess:
        # bash -eo pipefail: how Actions runs a `run:` step
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                               command], cwd=tmp_path, env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)

    nodes = ("node1", "node2", "node3")
    before = {n: lab.files(n, ("/etc/sysctl.d", "/etc/netfix")) for n in nodes}
    plan = run(step("plan", "netfix plan"))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert (tmp_path / "output").read_text() == "changes=yes\n"
    md = (tmp_path / "plan.md").read_text()
    assert (tmp_path / "summary.md").read_text() == md
    tokens = MarkdownIt("commonmark").parse(md)
    # three identical nodes: one group, named by the inventory group that is exactly them
    assert "<summary><b>lab</b> (3 host(s)" in "".join(
        t.content for t in tokens if t.type == "html_block")
    assert any(t.type == "fence" and t.info == "diff" and f"+++ b{SYSCTL}" in t.content
               for t in tokens)
    try:
        apply = run(step("apply", "netfix apply"))
        assert apply.returncode == 0, apply.stdout + apply.stderr
        assert apply.stdout.count(" applied ") == 3, apply.stdout
        assert lab.sh("node1", f"cat {SYSCTL}").count("net.ipv4.ip_forward = 1") == 1
    finally:
        lab.netfix("rollback", "--yes", "-i", str(inv), check_rc=None)
    assert {n: lab.files(n, ("/etc/sysctl.d", "/etc/netfix")) for n in before} == before


def test_drift_diff_shows_what_apply_would_write_back(lab, tmp_path):
    """A netfix file edited by hand: `drift --diff` shows, as a unified diff, the exact line
    apply would put back (from the edited bytes to the profile's)."""
    small = tmp_path / "small.yaml"
    small.write_text("sysctl:\n  net.ipv4.tcp_fin_timeout: 23\n")
    lab.netfix("apply", "--profile", str(small), "--limit", "node2", "--yes")
    try:
        lab.sh("node2", f"sed -i 's/= 23/= 24/' {SYSCTL}")
        p = lab.netfix("drift", "--profile", str(small), "--limit", "node2", "--diff",
                       check_rc=2)
        blocks = diff_blocks(p.stdout)
        assert SYSCTL in blocks, p.stdout
        changed = [x for x in blocks[SYSCTL] if x[:1] in "+-" and x[:3] not in ("+++", "---")]
        assert changed == ["-net.ipv4.tcp_fin_timeout = 24", "+net.ipv4.tcp_fin_timeout = 23"]
        plain = lab.netfix("drift", "--profile", str(small), "--limit", "node2", check_rc=2)
        assert "@@" not in plain.stdout  # diffs only when asked
    finally:
        lab.netfix("rollback", "--limit", "node2", "--yes", "--force", check_rc=None)
