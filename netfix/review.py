"""A plan made for people: file and ruleset diffs, hosts grouped by identical change sets,
short rows with the long explanations as numbered footnotes, and a Markdown rendering.

Everything here is computed from the plan data alone (the ops carry the exact old and new
bytes the journal will record), so `--diff` costs no extra round trip. Data in, text out.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from netfix.plan import OK, SKIP, UPDATE, Change, HostPlan, Plan

# Above this, a file is summarised, never dumped: a review is for people, and a 2 MB
# generated file in a merge-request comment helps nobody.
MAX_DIFF_BYTES = 64 * 1024
# A note up to this long stays on its row; a longer one becomes a footnote.
SHORT_NOTE = 48
ACTION_MARK = {UPDATE: "~", SKIP: "!", OK: "="}


# ------------------------------------------------------------------------------- diffs


@dataclass
class FileDiff:
    """One file (or the nft table) as a unified diff, or a summary when not dumpable."""

    path: str
    lines: list[str] = field(default_factory=list)  # the unified diff, headers included
    summary: str = ""  # set instead of lines for binary or oversized content

    @property
    def added(self) -> int:
        return sum(line.startswith("+") and not line.startswith("+++") for line in self.lines)

    @property
    def removed(self) -> int:
        return sum(line.startswith("-") and not line.startswith("---") for line in self.lines)


def _b64(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


def _text(content: bytes | None) -> str | None:
    """The content as text, or None when it is binary (NUL bytes or not UTF-8)."""
    if content is None:
        return ""
    if b"\0" in content:
        return None
    try:
        return content.decode()
    except UnicodeDecodeError:
        return None


def _size(content: bytes | None) -> str:
    if content is None:
        return "absent"
    return f"{len(content)} bytes, sha256:{hashlib.sha256(content).hexdigest()[:12]}"


def unified(path: str, old: bytes | None, new: bytes | None, context: int = 3,
            old_label: str | None = None, new_label: str | None = None) -> FileDiff:
    """`old` -> `new` (None: absent) as `diff -u` prints it, including the
    "\\ No newline at end of file" marker, so the + side is the new file byte for byte."""
    a, b = _text(old), _text(new)
    if a is None or b is None:
        return FileDiff(path, summary=f"binary file, not shown: {_size(old)} -> {_size(new)}")
    if max(len(old or b""), len(new or b"")) > MAX_DIFF_BYTES:
        return FileDiff(path, summary=f"larger than {MAX_DIFF_BYTES // 1024} KiB, not shown: "
                        f"{_size(old)} -> {_size(new)}")
    out: list[str] = []
    for line in difflib.unified_diff(
            a.splitlines(keepends=True), b.splitlines(keepends=True),
            old_label or ("/dev/null" if old is None else f"a{path}"),
            new_label or ("/dev/null" if new is None else f"b{path}"), n=context):
        if line.endswith("\n"):
            out.append(line[:-1])
        else:  # last line without a newline: diff -u marks it, so nothing is lost
            out += [line, "\\ No newline at end of file"]
    return FileDiff(path, out)


def _ruleset(op_old: str | None, op_new: str | None) -> FileDiff:
    from netfix.knobs.firewall import TABLE, listing

    old, new = listing(op_old), listing(op_new)
    lines = list(difflib.unified_diff(old, new, f"{TABLE} (now, as this node's nft prints it)",
                                      f"{TABLE} (after apply)", lineterm="", n=3))
    return FileDiff(TABLE, lines)


# The irqbalance step rewrites a distro file and restarts the daemon in one `cmd` step whose
# `set` script carries every content it can write, keyed by sha256 (old/new are those
# hashes): NF_CONTENTS='SHA:BASE64 ...' at its top (netfix/sh/irqbalance-set.sh; steps
# journaled by an older netfix have a case arm per content). The contents are read back
# from the script and only trusted when they hash to their key, so what is shown is
# exactly what the step writes.
_CONTENTS = re.compile(r"^NF_CONTENTS='?([0-9a-f:A-Za-z+/= ]*)'?$", re.M)
_CASE = re.compile(r"^  ([0-9a-f]{64}|absent)\) (?:rm -f \S+|t=.*?printf %s ([A-Za-z0-9+/=]*) "
                   r"\| base64 -d)", re.M)


def cmd_file_contents(set_script: str | None) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    m = _CONTENTS.search(set_script or "")
    pairs = [tuple(w.split(":", 1)) for w in m.group(1).split() if ":" in w] if m else \
        _CASE.findall(set_script or "")
    for sha, data in pairs:
        content = None if data == "" and sha == "absent" else base64.b64decode(data)
        if (content is None) != (sha == "absent"):
            continue
        if content is not None and hashlib.sha256(content).hexdigest() != sha:
            continue
        found[sha] = content
    return found


def change_diffs(change: Change) -> list[FileDiff]:
    """The diffs of one change's steps: files, the nft table, files carried by a command."""
    from netfix.knobs.firewall import STATE_LABEL

    out = []
    for op in change.ops:
        if op.kind == "file":
            out.append(unified(op.path, _b64(op.old), _b64(op.new)))
        elif op.kind == "cmd" and op.path == STATE_LABEL:
            out.append(_ruleset(op.old, op.new))
        elif op.kind == "cmd" and change.target.startswith("/"):
            contents = cmd_file_contents(op.set)
            if op.old in contents and op.new in contents:  # target: "PATH what"
                out.append(unified(change.target.split()[0], contents[op.old],
                                   contents[op.new]))
    return out


def host_diffs(changes: Iterable[Change]) -> list[FileDiff]:
    return [d for c in changes if c.action == UPDATE for d in change_diffs(c)]


# ------------------------------------------------------------------------ short rows


def why_texts() -> set[str]:
    """Background that says why a key matters, the same on every run: only with --explain.
    Every other long note says something about this node (a file that shadows, a writer,
    a value the driver refuses) and is always printed, once, as a footnote."""
    from netfix.knobs import synflood

    return {why for _, why in synflood.KEYS.values()}


class Footnotes:
    """Long notes, numbered once per plan however many rows and hosts share them.
    `explain`: also number the why-texts; without it they are left out (and counted)."""

    def __init__(self, explain: bool = True) -> None:
        self.explain = explain
        self.texts: list[str] = []
        self._index: dict[str, int] = {}
        self._why = why_texts()
        self.hidden: set[str] = set()

    def ref(self, text: str) -> int | None:
        if text in self._why and not self.explain:
            self.hidden.add(text)
            return None
        if text not in self._index:
            self.texts.append(text)
            self._index[text] = len(self.texts)
        return self._index[text]


_PINS = re.compile(r"pins (\d+ [KMGT]?i?B)")
_SHADOW = re.compile(r"^shadowed at boot by (\S+) \(sets ([^)]*)\)")


def short_notes(change: Change, notes: Footnotes, diffs: bool) -> str:
    """Flags and the essential number on one line; long texts become `[n]` references."""
    parts: list[str] = list(change.flags)
    refs: list[int] = []
    for note in change.notes:
        if note.startswith("ruleset diff"):
            d = _ruleset(*(next(((o.old, o.new) for o in change.ops if o.kind == "cmd"),
                                 (None, None))))
            parts.append(f"ruleset +{d.added} -{d.removed} line(s)"
                         + ("" if diffs else " (--diff shows them)"))
            continue
        if len(note) <= SHORT_NOTE:
            parts.append(note)
            continue
        if m := _PINS.search(note):
            parts.append(f"pins {m.group(1)}")
        elif m := _SHADOW.match(note):
            parts.append(f"by {m.group(1)} ({m.group(2)})")
        n = notes.ref(note)
        if n is not None:
            refs.append(n)
    text = "; ".join(parts)
    if refs:
        text += (" " if text else "") + "".join(f"[{n}]" for n in refs)
    return text


# -------------------------------------------------------------------------- grouping


def signature(c: Change) -> tuple:
    """What makes two hosts' rows the same change: target, values, flags and the exact
    steps (so a diff shown once for a group is true for every host in it)."""
    return (c.knob, c.target, c.action, c.current, c.desired, c.boot, tuple(c.flags),
            tuple((o.kind, o.path, o.old, o.new, o.set) for o in c.ops),
            # the table prints who writes what: hosts with another writer version differ
            # (not the pid, which is every host's own)
            c.wins, tuple((w.name, w.version, w.when, w.value, w.wins) for w in c.writers))


def shown(change: Change, verbose: bool) -> bool:
    return verbose or change.action != OK or bool(change.flags)


@dataclass
class Group:
    """Hosts whose shown changes are identical; `plans[0]` stands for all of them."""

    plans: list[HostPlan]
    rows: list[Change]
    # For a group other than the largest: the rows that differ from it, what it lacks.
    differs: list[Change] | None = None
    missing: list[Change] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        return [p.host for p in self.plans]

    @property
    def pending(self) -> int:
        return len(self.plans[0].pending)

    def common_notes(self, change: Change) -> Change:
        """The row with only the notes every host shares (usage counters vary per host)."""
        key = (change.knob, change.target)
        shared = list(change.notes)
        varies = False
        for hp in self.plans[1:]:
            other = next((c for c in hp.changes if (c.knob, c.target) == key), None)
            others = [] if other is None else other.notes
            varies = varies or any(n not in shared for n in others)
            shared = [n for n in shared if n in others]
        varies = varies or len(shared) < len(change.notes)
        return Change(**{**change.__dict__,
                         "notes": shared + (["notes vary per host (--per-host)"] if varies
                                            else [])})


def group_hosts(plan: Plan, verbose: bool = False, per_host: bool = False) -> list[Group]:
    """Groups of hosts with identical change sets, largest first; hosts that failed are
    left out (the caller prints their errors). `per_host`: one group per host, in order."""
    order: dict[tuple, list[HostPlan]] = {}
    for hp in plan.hosts:
        if hp.error:
            continue
        rows = tuple(signature(c) for c in hp.changes if shown(c, verbose))
        order.setdefault((hp.host,) if per_host else rows, []).append(hp)
    groups = [Group(hps, [c for c in hps[0].changes if shown(c, verbose)])
              for hps in order.values()]
    if per_host or len(groups) < 2:
        return groups
    groups.sort(key=lambda g: -len(g.plans))
    main = {(c.knob, c.target): signature(c) for c in groups[0].rows}
    for g in groups[1:]:
        mine = {(c.knob, c.target) for c in g.rows}
        g.differs = [c for c in g.rows if main.get((c.knob, c.target)) != signature(c)]
        g.missing = [c for c in groups[0].rows if (c.knob, c.target) not in mine]
    return groups


def compact(names: list[str], groups: dict[str, set[str]] | None = None) -> str:
    """node1..node6, node8..node20 -> "node[1-6,8-20]"; a whole inventory group (all of
    its hosts are here, at least two) is named instead of its hosts."""
    left = list(dict.fromkeys(names))
    named: list[str] = []
    for g, members in sorted((groups or {}).items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if g in ("all", "ungrouped") or len(members) < 2 or not members <= set(left):
            continue
        named.append(g)
        left = [n for n in left if n not in members]
    by_prefix: dict[tuple[str, int], list[int]] = {}
    plain: list[str] = []
    for n in left:
        m = re.fullmatch(r"(.*?)(\d+)", n)
        if not m:
            plain.append(n)
            continue
        digits = m.group(2)
        width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
        by_prefix.setdefault((m.group(1), width), []).append(int(digits))
    parts = list(named)
    for (prefix, width), nums in by_prefix.items():
        nums = sorted(set(nums))
        spans: list[str] = []
        start = prev = nums[0]
        for x in [*nums[1:], None]:
            if x is not None and x == prev + 1:
                prev = x
                continue
            a, b = f"{start:0{width}d}", f"{prev:0{width}d}"
            spans.append(a if start == prev else f"{a}-{b}")
            if x is not None:
                start = prev = x
        parts.append(f"{prefix}{spans[0]}" if len(spans) == 1 and "-" not in spans[0]
                     else f"{prefix}[{','.join(spans)}]")
    return ", ".join(parts + plain)


def headline(plan: Plan, groups: list[Group], names: dict[str, set[str]] | None = None,
             grouped: bool = True) -> str:
    total = sum(len(h.pending) for h in plan.hosts)
    errors = sum(bool(h.error) for h in plan.hosts)
    text = (f"{total} change(s) on {sum(bool(h.pending) for h in plan.hosts)} of "
            f"{len(plan.hosts)} host(s)")
    if grouped and sum(len(g.plans) for g in groups) > 1:
        text += f"; {len(groups)} group(s) of identical changes: " + ", ".join(
            f"{compact(g.hosts, names)} {len(g.plans)} host(s) x {g.pending} change(s)"
            for g in groups)
    if errors:
        text += f"; {errors} host(s) failed"
    return text


def group_info(g: Group) -> str:
    """Profile, CPUs and kernel where every host of the group agrees on them."""
    bits = []
    for label, get in (("profile", lambda p: p.profile),
                       ("CPUs", lambda p: p.info.get("cpus")),
                       ("kernel", lambda p: p.info.get("kernel"))):
        values = {get(p) for p in g.plans}
        if len(values) == 1 and None not in values:
            value = values.pop()
            bits.append(f"{value} {label}" if label == "CPUs" else f"{label} {value}")
    return ", ".join(bits)


# -------------------------------------------------------------------------- markdown


def _cell(text: object) -> str:
    from netfix.report import _md

    return _md(text, limit=200)


def fence_for(lines: list[str]) -> str:
    """A backtick fence longer than any backtick run that starts a line inside it."""
    longest = max((len(m.group(0)) for line in lines
                   if (m := re.match(r"\s*(`{3,})", line))), default=0)
    return "`" * max(3, longest + 1)


# GitHub refuses comments above 65536 characters; leave room for a marker line.
MAX_MARKDOWN = 65000


def markdown(plan: Plan, groups: list[Group], names: dict[str, set[str]] | None = None,
             explain: bool = True, diffs: bool = True) -> str:
    """The plan for a merge-request comment or $GITHUB_STEP_SUMMARY: one collapsible
    <details> per host group with its table and its diffs in fenced `diff` blocks. When
    the diffs would make it too long to post, they are left out and it says so."""
    if diffs:
        text = markdown(plan, groups, names, explain, diffs=False)
        full = _markdown(plan, groups, names, explain, True)
        return full if len(full) <= MAX_MARKDOWN else text.replace(
            "\n\n", f"\n\n_The diffs are left out: with them this would exceed "
            f"{MAX_MARKDOWN} characters. `netfix plan --diff` prints them._\n\n", 1)
    return _markdown(plan, groups, names, explain, False)


def _markdown(plan: Plan, groups: list[Group], names: dict[str, set[str]] | None,
              explain: bool, diffs: bool) -> str:
    notes = Footnotes(explain)
    out = [f"### netfix plan: {html.escape(headline(plan, groups, names, grouped=False))}", ""]
    for hp in plan.hosts:
        if hp.error:
            out += [f"- **{_cell(hp.host)}: error** {_cell(hp.error)}"]
        for note in hp.notices:
            out += [f"- **{_cell(hp.host)}: recovery** {_cell(note)}"]
    if out[-1] != "":
        out.append("")
    main = compact(groups[0].hosts, names) if groups else ""
    for g in groups:
        who = compact(g.hosts, names)
        rows = g.rows if g.differs is None else g.differs
        title = (f"<b>{html.escape(who)}</b> ({len(g.plans)} host(s), "
                 f"{html.escape(group_info(g))}): {g.pending} to change")
        if g.differs is not None:
            title += f", differs from {html.escape(main)} in {len(g.differs)} row(s)"
        out += ["<details>", f"<summary>{title}</summary>", ""]
        if not rows and not g.missing:
            out += ["Nothing to do: the nodes match their profile.", ""]
        if rows:
            out += ["| | knob | target | current | desired | at boot | flags / notes |",
                    "| --- | --- | --- | --- | --- | --- | --- |"]
            for c in rows:
                c = g.common_notes(c)
                out.append(f"| {ACTION_MARK[c.action]} | {_cell(c.knob)} | {_cell(c.target)} | "
                           f"{_cell(c.current)} | {_cell(c.desired)} | {_cell(c.boot or '')} | "
                           f"{_cell(short_notes(c, notes, diffs=True))} |")
            out.append("")
        if g.missing:
            out += ["Not pending here: " + ", ".join(
                f"`{c.knob} {c.target}`".replace("|", "\\|") for c in g.missing), ""]
        for d in host_diffs(rows) if diffs else []:
            if d.summary:
                out += [f"`{d.path}`: {_cell(d.summary)}", ""]
                continue
            fence = fence_for(d.lines)
            out += [f"{fence}diff", *d.lines, fence, ""]
        out += ["</details>", ""]
    if notes.texts:
        out += ["**Notes**", ""] + [f"{n}. {_cell(t)}" for n, t in enumerate(notes.texts, 1)]
        out.append("")
    return "\n".join(out)
