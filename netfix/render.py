"""Output: plan / results / history as rich tables or JSON. Data in, text out."""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
from dataclasses import asdict
from typing import Any

from netfix import review
from netfix.plan import SKIP, UPDATE, Change, Plan

ACTION_MARK = review.ACTION_MARK


def console(stderr: bool = False):  # -> rich.console.Console
    from rich.console import Console

    # Wide enough that CI logs keep whole rows instead of wrapping every cell.
    width = None if sys.stdout.isatty() else 160
    return Console(stderr=stderr, width=width, highlight=False)


shown = review.shown


def columns(headers: list[str], rows: list[list[str]], width: int,
            caps: dict[int, int] | None = None) -> list[str]:
    """Aligned columns. Cells wrap within their column: the last column takes what the
    others leave, the others at most `caps[i]` characters. rich's Table measured 25 ms per
    host here, which made a 20-node plan spend more time drawing than asking."""
    caps = caps or {}
    widths = [min(max([len(h)] + [len(r[i]) for r in rows]), caps.get(i, 10**6))
              for i, h in enumerate(headers)]
    lead = sum(widths[:-1]) + 2 * (len(widths) - 1)
    widths[-1] = max(30, width - lead)
    out = []
    for r in [headers, *rows]:
        cells = [textwrap.wrap(c, w, break_on_hyphens=False) or [""]
                 for c, w in zip(r, widths, strict=True)]
        for n in range(max(len(c) for c in cells)):
            parts = [(c[n] if n < len(c) else "").ljust(w) for c, w in zip(cells, widths,
                                                                             strict=True)]
            out.append(("  ".join(parts)).rstrip() if n == 0 else "  " + "  ".join(parts)[2:])
    return [line.rstrip() for line in out]


class Out:
    """Plain text when piped (fast, stable in CI logs); colour through rich on a terminal."""

    def __init__(self, stderr: bool = False) -> None:
        self.stream = sys.stderr if stderr else sys.stdout
        self.tty = self.stream.isatty()
        self.width = shutil.get_terminal_size((160, 40)).columns if self.tty else 160
        self.con = console(stderr) if self.tty else None

    def line(self, text: str, style: str = "") -> None:
        if self.con:
            self.con.print(text, style=style or None, markup=False, highlight=False,
                           soft_wrap=True)
        else:
            self.stream.write(text + "\n")


DIFF_STYLE = {"+": "green", "-": "red", "@": "cyan"}


def _rows(out: Out, rows: list[Change], notes: review.Footnotes, diffs: bool,
          group: review.Group | None = None) -> None:
    cells = []
    for c in rows:
        shown_c = group.common_notes(c) if group else c
        text = "; ".join(t for t in (writers_note(c), review.short_notes(shown_c, notes, diffs))
                         if t)
        cells.append([ACTION_MARK[c.action], c.knob, c.target, _brief(c.current),
                      _brief(c.desired), "" if c.boot is None else c.boot, text])
    lines = columns(["", "knob", "target", "current", "desired", "at boot",
                     "flags / notes"], cells, out.width, caps={2: 60, 3: 24, 4: 24, 5: 16})
    out.line(lines[0], "dim")
    styles = [{UPDATE: "yellow", SKIP: "red"}.get(c.action, "") for c in rows]
    row = -1
    for text in lines[1:]:
        if not text.startswith(" "):
            row += 1
        out.line(text, styles[row])


def writers_note(c: Change) -> str:
    """The `wins` verdict as a flag and the other writers in one line: who writes what,
    when, and whether it undoes netfix's value (the JSON has them as data)."""
    if not c.writers:
        return ""
    who = ", ".join(f"{w.name} {w.version} at {w.when}: {w.value}"
                    + ("" if w.wins else " (leaves netfix's)") for w in c.writers)
    return f"wins:{c.wins or '?'} ({who})"


def _brief(value: str | None) -> str:
    """A file's "13 lines, sha256:..." as "13 lines": one table line per row; the digest
    is in the JSON, and --diff shows the content itself."""
    return re.sub(r", sha256:[0-9a-f]{12}$", "", str(value))


def diff_block(out: Out, diffs: list[review.FileDiff]) -> None:
    """Unindented, so that a piped diff can be fed to `patch` or pasted as it is."""
    for d in diffs:
        if d.summary:
            out.line(f"{d.path}: {d.summary}", "dim")
            continue
        for text in d.lines:
            style = "bold" if text.startswith(("+++", "---")) else DIFF_STYLE.get(text[:1], "")
            out.line(text, style)


def plan_table(plan: Plan, verbose: bool = False, *, diff: bool = False,
               per_host: bool = False, explain: bool = False,
               names: dict[str, set[str]] | None = None, stderr: bool = False) -> None:
    """The plan grouped: hosts with identical change sets printed once under a compact host
    list; a smaller group shows only the rows that make it differ from the largest.
    Long explanations become footnotes, printed with `explain`; `diff` adds the unified
    diffs of files and the nft table after each group's rows."""
    out = Out(stderr)
    notes = review.Footnotes(explain)
    for hp in plan.hosts:
        if hp.error:
            out.line(f"{hp.host}: ERROR {hp.error}", "bold red")
        for note in hp.notices:  # transport.limitations() or a recovered transaction
            label = "NOTE" if note.startswith("transport ") else "RECOVERY"
            out.line(f"{hp.host}: {label} {note}", "bold magenta")
    groups = review.group_hosts(plan, verbose, per_host)
    main = review.compact(groups[0].hosts, names) if groups else ""
    for g in groups:
        hp = g.plans[0]
        skipped = sum(c.action == SKIP for c in hp.changes)
        who = review.compact(g.hosts, names)
        count = f" [{len(g.plans)} hosts]" if len(g.plans) > 1 else ""
        out.line(f"{who}{count} ({review.group_info(g)}): {g.pending} to change"
                 + (f", {skipped} not applicable here" if skipped else ""), "bold")
        if g.differs is not None:
            out.line(f"  differs from {main} in {len(g.differs)} row(s); every other row "
                     "is the same", "bold")
        rows = g.rows if g.differs is None else g.differs
        if rows:
            _rows(out, rows, notes, diff, g)
        elif not g.missing:
            out.line("  nothing to do: the node matches its profile")
        if g.missing:
            out.line("  not pending here: " + ", ".join(f"{c.knob} {c.target}"
                                                      for c in g.missing))
        if diff:
            diff_block(out, review.host_diffs(rows))
    for n, text in enumerate(notes.texts, 1):
        # Piped, one line per note: CI logs do not wrap, and grep finds a whole note.
        parts = textwrap.wrap(text, max(40, out.width - 6)) if out.tty else [text]
        for i, part in enumerate(parts):
            out.line((f"[{n}] " if i == 0 else "     ") + part, "dim")
    if notes.hidden:
        out.line(f"({len(notes.hidden)} explanation(s) of why these keys matter: --explain)",
                 "dim")
    out.line("Plan: " + review.headline(plan, groups, names, grouped=not per_host))


def to_json(obj: Any) -> str:
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    elif isinstance(obj, list):
        obj = [asdict(o) if hasattr(o, "__dataclass_fields__") else o for o in obj]
    return json.dumps(obj, indent=2, default=str)


def results_table(results: list, title: str) -> None:
    from rich.table import Table

    con = console()
    t = Table(title=title, show_edge=False, box=None, padding=(0, 1))
    for col in ("host", "status", "transaction", "message"):
        t.add_column(col, overflow="fold")
    for r in results:
        style = "green" if r.ok else "red"
        t.add_row(r.host, r.status, r.tx or "", r.message, style=style)
        for d in r.details:
            t.add_row("", "", "", f"  {d}", style=style)
    con.print(t)


def history_table(rows: list) -> None:
    from rich.table import Table

    con = console()
    t = Table(show_edge=False, box=None, padding=(0, 1))
    for col in ("host", "transaction", "kind", "profile", "steps", "status", "by"):
        t.add_column(col, overflow="fold")
    for host, txs in rows:
        if isinstance(txs, str):
            t.add_row(host.name, "", "", "", "", f"ERROR {txs}", "", style="red")
            continue
        for note in txs.notices:
            t.add_row(host.name, "", "recovery", "", "", note, "", style="magenta")
        for bad in txs.unreadable:
            t.add_row(host.name, bad.id, "?", "", "?", f"UNREADABLE {bad.advice()}", "",
                      style="red")
        if not txs.txs and not txs.unreadable:
            t.add_row(host.name, "(none)", "", "", "", "", "")
        for tx in txs.txs:
            kind = tx.kind + (f" of {tx.rolls_back}" if tx.rolls_back else "")
            t.add_row(host.name, tx.id, kind, tx.profile or "", str(len(tx.steps)), tx.status,
                      f"{tx.user}@{tx.controller}")
    con.print(t)


def drift_table(report, diff: bool = False) -> None:  # report: netfix.drift.DriftReport
    """Per host: drift items (kind, knob, target, expected, actual, detail), then the targets
    not settable on this node as `info:` rows, then one summary line. Same plain/rich
    output as plan_table: a watcher prints this every few minutes, so it must stay cheap."""
    from netfix.report import headline

    out = Out()
    for h in report.hosts:
        if h.error:
            out.line(f"{h.host}: ERROR {h.error}", "bold red")
            continue
        for note in h.notices:
            out.line(f"{h.host}: RECOVERY {note}", "bold magenta")
        out.line(f"{h.host} (profile {h.profile}): "
                 + (f"{len(h.items)} drift item(s)" if h.items else "no drift")
                 + (f", {len(h.info)} not applicable here" if h.info else ""), "bold")
        if not h.items and not h.info:
            continue
        rows = [(i.kind, i) for i in h.items] + [(f"info: {i.kind}", i) for i in h.info]
        cells = [[kind, i.knob, i.target, str(i.expected), str(i.actual), i.detail]
                 for kind, i in rows]
        lines = columns(["kind", "knob", "target", "expected", "actual", "detail"], cells,
                        out.width)
        out.line(lines[0], "dim")
        styles = ["yellow"] * len(h.items) + ["dim"] * len(h.info)
        row = -1
        for text in lines[1:]:
            if not text.startswith(" "):  # continuation lines of a wrapped detail are indented
                row += 1
            out.line(text, styles[row])
        if diff:  # what apply would write to bring the node back, file by file
            diff_block(out, review.host_diffs(h.pending))
    out.line(f"Drift: {headline(report)}", "bold")
