"""What the TuneD, link-file and CNI writer models share: their fact records
(netfix/sh/writers.sh), an ini reader for the files they read, and the plan's targets
seen as sysctl keys or interface settings. Not a writer model itself (no NAME)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

from netfix import sh
from netfix.ethtool import FEATURE_ALIASES
from netfix.facts import Facts, Needs
from netfix.plan import OTHER_WRITER, SKIP, Change, Writer


@dataclass
class Proc:
    pid: int
    comm: str
    args: list[str] = field(default_factory=list)

    def flag(self, name: str) -> str | None:
        """`--name=value` or `--name value` on its command line."""
        for i, arg in enumerate(self.args):
            if arg.startswith(f"--{name}="):
                return arg.split("=", 1)[1]
            if arg == f"--{name}" and i + 1 < len(self.args):
                return self.args[i + 1]
        return None


@dataclass
class Records:
    """One writer snippet's output: processes, files (None: masked) and other lines."""

    procs: list[Proc] = field(default_factory=list)
    files: dict[str, str | None] = field(default_factory=dict)
    other: list[list[str]] = field(default_factory=list)


def snippet(name: str) -> str:
    """netfix/sh/NAME after the writers.sh functions it calls (only those: shellcheck
    rightly calls a function nothing calls unreachable)."""
    body = sh.load(name)
    used = [f for f in ("w_procs", "w_dump") if re.search(rf"\b{f}\b", body)]
    return "".join(sh.function("writers.sh", f) for f in used) + body


def needs(script: str, name: str, **extra: set[str]) -> Needs:
    return Needs(scripts={script: snippet(name)}, **extra)


def records(text: str) -> Records:
    rec = Records()
    path, lines = "", []  # the file whose "| " lines are arriving
    for line in text.splitlines() + ["END"]:
        word, _, rest = line.partition(" ")
        if word == "|" and path:
            lines.append(rest)
            continue
        if path:
            rec.files[path] = "".join(f"{x}\n" for x in lines)
            path, lines = "", []
        if word == "PROC":
            pid, _, comm = rest.partition(" ")
            if pid.isdigit():
                rec.procs.append(Proc(int(pid), comm))
        elif word == "ARG" and rec.procs:
            rec.procs[-1].args.append(rest)
        elif word == "F":
            path = rest
        elif word == "M":
            rec.files[rest] = None
        elif word and line != "END":
            rec.other.append(line.split())
    return rec


def ini(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys before any section are in section "".
    Values keep their inner spaces; a `#` after a value is a comment (TuneD's
    inline_comment_prefixes; systemd and NetworkManager take no inline comments, and
    netfix's snippets dropped whole-line comments already)."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, eq, value = line.partition("=")
        if eq:
            out.append((section, key.strip(), value.split(" #")[0].strip()))
    return out


def sections(text: str) -> dict[str, dict[str, str]]:
    """ini() as section -> key -> value, the last value of a key winning."""
    out: dict[str, dict[str, str]] = {}
    for section, key, value in ini(text):
        out.setdefault(section, {})[key] = value
    return out


def sysctl_changes(changes: list[Change]) -> dict[str, Change]:
    """The plan's sysctl rows by key (not the persistence files, not skipped rows)."""
    return {c.target: c for c in changes
            if c.action != SKIP and not c.target.startswith("/") and " " not in c.target
            and "." in c.target}


def iface_changes(changes: list[Change]) -> dict[tuple[str, str], Change]:
    """The plan's per-interface rows ("eth0 rings") by (interface, group)."""
    out = {}
    for c in changes:
        iface, _, group = c.target.partition(" ")
        if group and " " not in group and not c.target.startswith("/") and c.action != SKIP:
            out[(iface, group)] = c
    return out


def state(text: str | None) -> dict[str, str]:
    """'rx=1024 tx=1024' -> {'rx': '1024', 'tx': '1024'}."""
    return dict(kv.split("=", 1) for kv in (text or "").split() if "=" in kv)


@dataclass
class Overlap:
    """Another writer's values for one interface row, beside netfix's."""

    ours: dict[str, str]  # netfix's desired state by key ("" for a one-value row: mtu)
    shared: dict[str, str]  # the other writer's values for the keys netfix sets
    shown: str  # `shared` as a plan shows it

    @property
    def differ(self) -> bool:
        return any(self.ours[k] != v for k, v in self.shared.items())

    @property
    def after(self) -> str:
        """The row's state once the other writer has run."""
        after = {**self.ours, **self.shared}
        return after[""] if "" in after else " ".join(f"{k}={v}" for k, v in after.items())


def overlap(change: Change, theirs: dict[str, str]) -> Overlap:
    """Compare another writer's values ({'rx': '512'}, or {'': '9000'} for one value)
    with an interface row's desired state, offload names in ethtool -k's long form."""
    group = change.target.partition(" ")[2]

    def names(values: dict[str, str]) -> dict[str, str]:
        if group != "offloads":
            return values
        return {FEATURE_ALIASES.get(k, k): v for k, v in values.items()}

    ours = {"": change.desired or ""} if "" in theirs else names(state(change.desired))
    shared = {k: v for k, v in names(theirs).items() if k in ours}
    return Overlap(ours, shared, " ".join(f"{k}={v}" if k else v for k, v in shared.items()))


def file_content(change: Change, facts: Facts) -> bytes | None:
    """What a file the plan owns holds once the plan is applied (None: absent)."""
    if change.ops:
        new = change.ops[-1].new
        return None if new is None else base64.b64decode(new)
    return facts.files.get(change.target)


def add(change: Change, writer: Writer, wins: str, note: str = "",
        conflict: str = "") -> None:
    """Record a writer on a row: who wins, a note for people, and other-writer (with
    `conflict` as its message) only where the writer really undoes netfix's value."""
    change.writers.append(writer)
    change.wins = wins
    if conflict:
        change.flag(OTHER_WRITER, writer.name, conflict)
    elif note:
        change.notes.append(note)
