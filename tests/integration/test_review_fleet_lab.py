"""A fleet on one screen: 20 lab nodes planned with public-vds-firewall (plus an eth1 MTU)
print as one group; with one node's eth1 MTU changed, as two groups, the odd one showing
only what makes it differ, and the whole plan within 60 lines. Its Markdown parses as
intended (fenced diff blocks, one <details> per group)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import NETFIX, need_lab
from markdown_it import MarkdownIt

pytestmark = pytest.mark.integration


NODES = 20
ODD = "node7"


@pytest.fixture(scope="module")
def fleet(lab_lock):
    """Twenty nodes of their own (node names are global: this module holds the lab lock)."""
    need_lab()
    from netfix_lab import netns as labmod

    lab_dir = Path(f"/run/netfix-lab-pytest-fleet-{os.getpid()}")
    inv = labmod.lab_up(NODES, lab_dir)
    try:
        yield inv
    finally:
        labmod.lab_down(lab_dir)


def netfix(inv: Path, *args: str, rc: int = 0) -> subprocess.CompletedProcess:
    p = subprocess.run([NETFIX, *args, "-i", str(inv)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == rc, (p.returncode, p.stdout, p.stderr)
    return p


def test_twenty_nodes_group_and_fit_one_screen(fleet, tmp_path):
    from netfix_lab import netns as labmod

    prof = tmp_path / "fleet.yaml"
    prof.write_text("description: public-vds-firewall with eth1 at MTU 1500\n"
                    "extends: public-vds-firewall\n"
                    "nic: {interfaces: [{match: {name: eth1}, mtu: 1500}]}\n")
    same = netfix(fleet, "plan", "--profile", str(prof)).stdout.splitlines()
    # All twenty alike: one group, named by the inventory group that holds exactly them.
    heads = [x for x in same if x.startswith(("lab", "node"))]
    assert len(heads) == 1 and heads[0].startswith(f"lab [{NODES} hosts]"), heads

    labmod.node_exec(ODD, "ip link set eth1 mtu 1400")
    try:
        grouped = netfix(fleet, "plan", "--profile", str(prof)).stdout.splitlines()
        per_host = netfix(fleet, "plan", "--profile", str(prof), "--per-host").stdout
        diffed = netfix(fleet, "plan", "--profile", str(prof), "--diff").stdout.splitlines()
        md_file = tmp_path / "plan.md"
        netfix(fleet, "plan", "--profile", str(prof), "--markdown", str(md_file))
    finally:
        labmod.node_exec(ODD, "ip link set eth1 mtu 1500")

    heads = [x for x in grouped if x.startswith("node")]
    assert [h.split(" (")[0] for h in heads] == ["node[1-6,8-20] [19 hosts]", ODD], heads
    odd = grouped.index(heads[1])
    assert "differs from node[1-6,8-20] in 1 row(s)" in grouped[odd + 1]
    mtu = [x for x in grouped[odd:] if "eth1 mtu" in x]
    assert len(mtu) == 1 and mtu[0].split()[4:6] == ["1400", "1500"], mtu
    assert "disruptive" in mtu[0]
    summary = grouped[-1]
    assert summary.startswith("Plan: ") and "2 group(s) of identical changes" in summary
    assert "node[1-6,8-20] 19 host(s) x" in summary and f"{ODD} 1 host(s) x" in summary
    print(f"\nplan of {NODES} nodes: {len(grouped)} lines grouped, "
          f"{len(per_host.splitlines())} with --per-host, {len(diffed)} with --diff")
    assert len(grouped) <= 60
    assert len(per_host.splitlines()) > 5 * len(grouped)
    # --diff: the group's files once, not twenty times
    assert diffed.count("+++ b/etc/netfix/firewall.nft") == 1

    tokens = MarkdownIt("commonmark").parse(md_file.read_text())
    blocks = "".join(t.content for t in tokens if t.type == "html_block")
    assert blocks.count("<details>") == blocks.count("</details>") == 2
    assert "<summary><b>node[1-6,8-20]</b> (19 host(s)" in blocks
    fences = [t for t in tokens if t.type == "fence"]
    assert fences and all(t.info == "diff" for t in fences)
    assert any("+tcp dport 30000-32767 jump deny\n" in t.content for t in fences)
    assert not any("</details>" in t.content for t in fences)
