"""The controller's cache of the firewall's renders: the desired table as one node's nft
prints it (netfix/sh/firewall-probe.sh), so the next plan of that node can skip the
throwaway-namespace render (an unshare, two nft, sed, base64, mktemp... ~11 ms of a node's
CPU per plan).

A render is a function of the ruleset text, the node's `nft --version` line and its
kernel release (the key). An entry is kept per (node, ruleset) and holds the key it was
made under; the probe is sent the entry and re-renders unless its own key is the same. It
is per node, not shared between nodes with the same key, so that what a node printed only
ever becomes that node's own desired state, as without the cache: a node that lies cannot
shape another node's firewall. Errors are never stored (see `put`).

The files live under $XDG_CACHE_HOME/netfix/renders (~/.cache/netfix/renders), one JSON
file per entry, written atomically, at most MAX_ENTRIES of them (the oldest go first).
A file is input: anything unreadable, malformed or failing `valid_listing` is a miss, and
a cache that cannot be written (a read-only home in a container) is silently no cache.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from netfix.util import atomic_write

VERSION = 1
MAX_ENTRIES = 512
MAX_LISTING = 64 * 1024  # bytes of base64; netfix's table lists in ~1-2 KiB
TABLE_LINE = "table inet netfix {"
_NFT = re.compile(r"[ -~]{1,200}")  # one printable line: "nftables v1.0.6 (Lester Gooch #5)"
_KERNEL = re.compile(r"[A-Za-z0-9._+~-]{1,100}")  # /proc/sys/kernel/osrelease
# nft statements that reach outside the table's own text (files, variables)
_OUTSIDE = re.compile(r"(include|define|redefine|undefine)\b")


@dataclass(frozen=True)
class Render:
    nft: str  # the node's `nft --version` line
    kernel: str  # the node's kernel release
    listing: str  # base64 of the normalised `nft -s list table inet netfix`

    def valid(self) -> bool:
        return (all(isinstance(x, str) for x in (self.nft, self.kernel, self.listing))
                and _NFT.fullmatch(self.nft) is not None
                and _KERNEL.fullmatch(self.kernel) is not None
                and valid_listing(self.listing))


def valid_listing(b64: str) -> bool:
    """Is this a normalised listing of table inet netfix and nothing else: the table line,
    braces balanced outside quoted strings and closed only by the last line, no other
    table, no include or define, printable text. What the probe printed, or a cache file
    said, becomes the table `nft -f` loads on the node: nothing else may ride along."""
    if not isinstance(b64, str) or not 0 < len(b64) <= MAX_LISTING:
        return False
    try:
        text = base64.b64decode(b64, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    lines = text.removesuffix("\n").split("\n")  # the probe's sed ends its last line
    if lines[0] != TABLE_LINE or lines[-1] != "}":
        return False
    depth, last = 0, len(lines) - 1
    for i, line in enumerate(lines):
        if (not line or not line.isprintable() or _OUTSIDE.match(line)
                or (i and line.startswith("table "))):
            return False
        quoted = False
        for c in line:
            if c == '"':
                quoted = not quoted
            elif not quoted and c in "{}":
                depth += 1 if c == "{" else -1
                if depth < 0:
                    return False
        if quoted or (depth == 0) != (i == last):
            return False
    return True


def directory() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if not base or base.startswith("~"):  # no home to expand
        return None
    return Path(base, "netfix", "renders")


class RenderCache:
    """One directory of entries. Thread-safe for the controller's pool of host threads;
    several netfix processes may share it (every write is a rename)."""

    def __init__(self, root: Path, max_entries: int = MAX_ENTRIES):
        self.root = root
        self.max_entries = max_entries
        self._lock = threading.Lock()

    def _path(self, node: str, ruleset: str) -> Path:
        digest = hashlib.sha256(f"{node}\0{ruleset}".encode()).hexdigest()
        return self.root / f"{digest[:40]}.json"

    @staticmethod
    def _ruleset_id(ruleset: str) -> str:
        return hashlib.sha256(ruleset.encode()).hexdigest()

    def get(self, node: str, ruleset: str) -> Render | None:
        """The render last stored for this node and ruleset, or None (also for a file that
        is unreadable, malformed, for another node or ruleset, or fails validation)."""
        try:
            data = json.loads(self._path(node, ruleset).read_bytes())
            if (data.pop("v") != VERSION or data.pop("node") != node
                    or data.pop("ruleset") != self._ruleset_id(ruleset)):
                return None
            render = Render(**data)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        return render if render.valid() else None

    def put(self, node: str, ruleset: str, render: Render) -> None:
        """Store a render the node made itself (never an error: an nft syntax or kernel
        error must show in every plan until it is fixed, and it may be transient, a
        missing unshare or a namespace limit, which a cached error would hide). An invalid
        render is not stored; a write that fails is no cache, not an error."""
        if not render.valid():
            return
        data = {"v": VERSION, "node": node, "ruleset": self._ruleset_id(ruleset), **asdict(render)}
        with self._lock, contextlib.suppress(OSError):
            atomic_write(self._path(node, ruleset), json.dumps(data, sort_keys=True).encode())
            self._prune()

    def _prune(self) -> None:
        entries = []
        for p in self.root.glob("*.json"):
            with contextlib.suppress(OSError):
                entries.append((p.stat().st_mtime, p))
        entries.sort()
        for _, p in entries[:max(0, len(entries) - self.max_entries)]:
            with contextlib.suppress(OSError):
                p.unlink()


@dataclass
class NodeRenders:
    """The cache as one node's firewall knob sees it (knobs.Context.renders)."""

    cache: RenderCache
    node: str  # which node: its inventory name and address

    def get(self, ruleset: str) -> Render | None:
        return self.cache.get(self.node, ruleset)

    def put(self, ruleset: str, render: Render) -> None:
        self.cache.put(self.node, ruleset, render)


_DEFAULT: dict[Path, RenderCache] = {}
_DEFAULT_LOCK = threading.Lock()


def for_node(node: str) -> NodeRenders | None:
    """The default cache (one object per directory, shared by the host threads) for
    `node`, or None when there is no cache directory or NETFIX_RENDER_CACHE=off."""
    root = directory()
    if root is None or os.environ.get("NETFIX_RENDER_CACHE") == "off":
        return None
    with _DEFAULT_LOCK:
        cache = _DEFAULT.setdefault(root, RenderCache(root))
    return NodeRenders(cache, node)
