"""The firewall's render cache (netfix/rendercache.py): hit, miss, key mismatch, corrupt
or hostile entries, errors never stored, the size bound; and the probe's processes with and
without a cached render (real nft, counted with strace)."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from test_firewall import FULL, LISTING_B, b64, by_target, facts, probe_output

from netfix import rendercache
from netfix.knobs import Context, firewall
from netfix.plan import SKIP, UPDATE
from netfix.rendercache import Render, RenderCache, valid_listing

RULESET = firewall.ruleset(firewall.config(FULL))
GOOD = Render("nftables v1.0.6", "6.1.0-13-amd64", b64(LISTING_B))


def node(tmp_path: Path, name: str = "n1@10.0.0.1:22") -> rendercache.NodeRenders:
    return rendercache.NodeRenders(RenderCache(tmp_path / "renders"), name)


def test_hit_after_put_and_miss_for_another_node_or_ruleset(tmp_path):
    renders = node(tmp_path)
    assert renders.get(RULESET) is None  # empty cache: a miss
    renders.put(RULESET, GOOD)
    assert renders.get(RULESET) == GOOD
    assert node(tmp_path, "n2@10.0.0.2:22").get(RULESET) is None  # renders are per node
    assert renders.get(RULESET + "\n") is None  # another ruleset text
    renders.put(RULESET, Render("nftables v1.1.1", GOOD.kernel, GOOD.listing))
    assert renders.get(RULESET).nft == "nftables v1.1.1"  # one entry per node and ruleset
    assert len(list((tmp_path / "renders").iterdir())) == 1


@pytest.mark.parametrize("content", [
    b"", b"\x00\xff garbage", b"[]", b'"x"', b"{}", b'{"v": 1}',
    b'{"v": 2, "node": "n1@10.0.0.1:22"}',
])
def test_corrupt_entry_is_a_miss_not_a_crash(tmp_path, content):
    renders = node(tmp_path)
    renders.put(RULESET, GOOD)
    [entry] = (tmp_path / "renders").iterdir()
    entry.write_bytes(content)
    assert renders.get(RULESET) is None


@pytest.mark.parametrize("field, value", [
    ("listing", b64(LISTING_B + "\nflush ruleset")),  # a statement after the table
    ("listing", b64(LISTING_B[:-2])),  # unbalanced
    ("listing", b64(LISTING_B.replace("drop\n", 'include "/etc/shadow"\n'))),
    ("listing", b64(LISTING_B.replace("inet netfix", "ip nat"))),  # another table
    ("listing", b64(LISTING_B.replace("drop\n", "drop\n}\ntable ip x {\n"))),
    ("listing", "not base64!"),
    ("listing", 7),
    ("nft", "nftables\nv1"),
    ("kernel", "6.1'; reboot"),
    ("node", "n2@10.0.0.2:22"),  # another node's entry under this name
])
def test_tampered_entry_is_a_miss(tmp_path, field, value):
    """Invariant: the cache file is input; only a listing of table inet netfix alone, under
    a well-formed key, for this very node and ruleset, is ever sent to the node."""
    renders = node(tmp_path)
    renders.put(RULESET, GOOD)
    [entry] = (tmp_path / "renders").iterdir()
    data = json.loads(entry.read_bytes())
    data[field] = value
    entry.write_text(json.dumps(data))
    assert renders.get(RULESET) is None


def test_valid_listing_keeps_braces_inside_quotes_and_the_real_form():
    assert valid_listing(GOOD.listing)
    assert valid_listing(b64(LISTING_B.replace('"lo"', '"lo}{"')))
    assert not valid_listing(b64(LISTING_B.replace('"lo"', '"lo')))  # an open quote
    assert not valid_listing("")
    assert valid_listing(b64(LISTING_B + "\n")) and not valid_listing(b64(LISTING_B + "\n\n"))


def test_invalid_render_is_not_stored_and_unwritable_cache_is_no_cache(tmp_path):
    renders = node(tmp_path)
    renders.put(RULESET, Render(GOOD.nft, GOOD.kernel, b64("flush ruleset")))
    assert not (tmp_path / "renders").exists()
    (tmp_path / "ro").write_text("a file where the directory should be")
    blocked = rendercache.NodeRenders(RenderCache(tmp_path / "ro" / "renders"), "n1")
    blocked.put(RULESET, GOOD)  # no exception: a cache that cannot be written is none
    assert blocked.get(RULESET) is None


def test_size_is_bounded(tmp_path):
    cache = RenderCache(tmp_path / "renders", max_entries=3)
    for i in range(5):
        cache.put(f"n{i}", RULESET, GOOD)
        os.utime(cache._path(f"n{i}", RULESET), (i, i))  # distinct ages, oldest first
    assert len(list((tmp_path / "renders").iterdir())) == 3
    assert cache.get("n0", RULESET) is None and cache.get("n4", RULESET) == GOOD


def test_directory_follows_xdg_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert rendercache.for_node("n").cache.root == tmp_path / "netfix" / "renders"
    monkeypatch.setenv("NETFIX_RENDER_CACHE", "off")
    assert rendercache.for_node("n") is None


# ------------------------------------------------------------------ through the firewall knob


def kernel_facts(probe: str):
    f = facts(None, probe)
    f.kernel = GOOD.kernel
    return f


def test_fresh_render_is_stored_then_sent_with_its_key(tmp_path):
    ctx = Context("test", renders=node(tmp_path))
    assert "NF_CACHE_RENDER=''" in firewall.needs(FULL, ctx).scripts[firewall.PROBE]  # miss
    probe = probe_output().replace("nftables v1.0.6", GOOD.nft)
    ch = by_target(firewall.diff(FULL, kernel_facts(probe), ctx))
    assert ch[firewall.TABLE].action == UPDATE
    assert ctx.renders.get(RULESET) == GOOD
    snippet = firewall.needs(FULL, ctx).scripts[firewall.PROBE]
    for name, value in (("NF_CACHE_NFT", GOOD.nft), ("NF_CACHE_KERNEL", GOOD.kernel),
                        ("NF_CACHE_RENDER", GOOD.listing)):
        assert f"{name}={shlex.quote(value)}\n" in snippet


def test_cached_reply_gives_the_same_plan_and_writes_nothing(tmp_path):
    ctx = Context("test", renders=node(tmp_path))
    fresh = firewall.diff(FULL, kernel_facts(probe_output()), ctx)
    [entry] = (tmp_path / "renders").iterdir()
    entry.unlink()
    cached = probe_output().replace("RENDER ", "RENDER-CACHED ")
    again = firewall.diff(FULL, kernel_facts(cached), ctx)
    assert again == fresh
    assert not list((tmp_path / "renders").iterdir())  # a hit stores nothing


def test_render_error_is_not_cached_and_still_reported(tmp_path):
    """Errors are not cached: an nft syntax or kernel-support error shows in every plan
    until fixed, and a transient one (no unshare, a namespace limit) is not remembered."""
    ctx = Context("test", renders=node(tmp_path))
    ch = by_target(firewall.diff(
        FULL, kernel_facts(probe_output(rendered=None, error="Error: syntax error")), ctx))
    assert ch[firewall.TABLE].action == SKIP and "syntax error" in ch[firewall.TABLE].notes[0]
    assert ctx.renders.get(RULESET) is None
    assert not (tmp_path / "renders").exists()


def test_hostile_render_from_the_node_is_refused_and_not_stored(tmp_path):
    ctx = Context("test", renders=node(tmp_path))
    bad = probe_output(rendered=LISTING_B + "\ntable ip nat {\n}")
    ch = by_target(firewall.diff(FULL, kernel_facts(bad), ctx))
    assert ch[firewall.TABLE].action == SKIP and "not a listing" in ch[firewall.TABLE].notes[0]
    assert ctx.renders.get(RULESET) is None


# ------------------------------------------------------------------ the probe on this machine


def run_probe(tmp_path: Path, cached: Render | None):
    from execs import run_counted  # tests/unit/execs.py: pytest puts tests/unit on sys.path

    if not shutil.which("nft"):
        pytest.skip("needs nft")
    snippet = firewall.probe(RULESET, cached)
    tmp_path.mkdir()
    p, ran = run_counted(["sh", "-c", snippet], tmp_path / "trace", netns=True)
    return firewall.parse_probe(p.stdout), ran, p


def this_node(listing: str) -> Render:
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout.strip()
    kernel = Path("/proc/sys/kernel/osrelease").read_text().strip()
    return Render(nft, kernel, listing)


def test_probe_processes_render_then_cached(tmp_path):
    """A miss renders in a throwaway netns (unshare, nft x2 more...); with the render it
    made and this node's own key, the probe prints it back and runs only sh and
    `nft --version`; with another kernel in the key it renders again."""
    fresh, ran, p = run_probe(tmp_path / "a", None)
    assert fresh.rendered and not fresh.cached, p.stderr
    assert valid_listing(fresh.rendered)  # this nft's real listing passes the check
    assert ran.get("unshare") == 1 and ran.get("nft") == 3 and "mktemp" in ran, ran
    hit, ran, p = run_probe(tmp_path / "b", this_node(fresh.rendered))
    assert (hit.rendered, hit.cached) == (fresh.rendered, True), p.stdout
    assert ran == {"sh": 1, "nft": 1}, ran
    other = this_node(fresh.rendered)
    miss, ran, _ = run_probe(tmp_path / "c", Render(other.nft, "0.0.0-other", other.listing))
    assert (miss.rendered, miss.cached) == (fresh.rendered, False)
    assert ran.get("unshare") == 1, ran


def test_probe_still_reports_an_nft_error_with_a_cache_for_another_key(tmp_path):
    """A ruleset this nft refuses is rendered (and refused) again when the key differs."""
    from execs import run_counted  # tests/unit/execs.py: pytest puts tests/unit on sys.path

    if not shutil.which("nft"):
        pytest.skip("needs nft")
    bad = RULESET.replace("fib daddr type != local return", "fib daddr type != nonsense return")
    stale = Render("nftables v0.0.1", "0.0.0", base64.b64encode(LISTING_B.encode()).decode())
    p, _ = run_counted(["sh", "-c", firewall.probe(bad, stale)], tmp_path / "t", netns=True)
    pr = firewall.parse_probe(p.stdout)
    assert pr.rendered is None and "nonsense" in pr.render_error, p.stdout
