"""The boot-time sysctl appliers, modelled as they really run: which value each key ends
with at boot, and which file's line decides it.

Two programs apply sysctl.d at boot, with different rules (both read from their source):

systemd-sysctl (systemd 252, src/sysctl/sysctl.c, the version Debian 12 ships; the same
rules hold in later versions):
- Files: /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d
  (CONF_PATHS("sysctl.d")). conf_files_list(): a name in an earlier dir hides the same
  name in later ones, a symlink to /dev/null masks it, then all files sorted by name.
  /etc/sysctl.conf is NOT read: only through the /etc/sysctl.d/99-sysctl.conf symlink
  Debian and RHEL ship, in name order like any other file.
- parse_file(): lines into one ordered hashmap keyed by the normalised key. A later
  assignment with another value removes the earlier entry and appends the new one (so
  the later file wins and moves to the end of the order); the same value keeps the
  earlier entry where it was. `-key = v` only ignores write failures. `-key` without
  `=` is an entry with no value: it excludes the key from globs (and, as a later
  assignment, drops an earlier explicit value).
- apply_all(): entries in order; a glob entry writes every matching /proc/sys path
  except those with an entry of their own (explicit keys win over globs whatever the
  order); so among globs the last one in the order wins.

procps `sysctl --system` (procps-ng 4.0, src/sysctl.c PreloadSystem):
- Files: /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d,
  /lib/sysctl.d, same-name hiding, sorted by name; then /etc/sysctl.conf (when it is a
  regular file), applied LAST, so it wins over all of them (and through the
  99-sysctl.conf symlink it is read twice).
- Every line is appended to one list, written in order: for an explicit key the last
  line wins. A glob line skips paths that have an explicit line anywhere in the list or
  match a `-pattern` exclude line (fnmatch without FNM_PATHNAME).

Both normalise `net/ipv4/ip_forward` like `net.ipv4.ip_forward` (the first separator
decides which of `/` and `.` separates), and both leave a key they cannot write alone;
netfix only asks about keys the node has, so `-` prefixes do not change a value here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

from netfix.facts import DirEntry
from netfix.util import sysctl_path

SYSTEMD_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d")
PROCPS_DIRS = (*SYSTEMD_DIRS, "/lib/sysctl.d")
SYSCTL_DIRS = PROCPS_DIRS  # every dir either applier reads: the fact script lists them all
SYSCTL_CONF = "/etc/sysctl.conf"
GLOB_CHARS = "*?["


class Applier(StrEnum):
    """Which program applies sysctl.d at this node's boot (Writer.name)."""

    SYSTEMD = "systemd-sysctl"
    PROCPS = "procps"


@dataclass(frozen=True)
class Line:
    """One assignment of a sysctl.d file. `key` is the /proc/sys-relative path
    (net/ipv4/conf/eth0.100/rp_filter), or a glob of such paths."""

    key: str
    value: str | None  # None: a `-key` line without `=` (excludes the key from globs)
    file: str

    @property
    def glob(self) -> bool:
        return any(c in self.key for c in GLOB_CHARS)


@dataclass(frozen=True)
class BootValue:
    value: str | None  # what the key holds after the applier ran; None: it leaves the key alone
    source: str  # the file whose line decides ("" when no line names the key)
    glob: str = ""  # the glob that wrote it, when no explicit line did


def key_path(key: str) -> str:
    """A sysctl.d key as a /proc/sys-relative path (systemd's sysctl_normalize, procps'
    slashdot): when the first separator is a dot, dots and slashes swap."""
    key = key.strip()
    first = next((c for c in key if c in "./"), "")
    if first == ".":
        key = key.translate(str.maketrans("./", "/."))
    return "/".join(part for part in key.split("/") if part)


@functools.lru_cache(maxsize=1024)
def parse_lines(content: bytes, file: str) -> tuple[Line, ...]:
    """The assignments of one file, in order (both appliers' syntax: `#`/`;` comments,
    `key = value`, `-key = value`, `-key`); other lines are skipped, as both do. Cached:
    a fleet's nodes mostly hold the same files, each parsed per knob on every host."""
    out = []
    for raw in content.decode(errors="replace").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, eq, value = line.partition("=")
        if key.startswith("-"):
            key = key[1:]
        elif not eq:
            continue  # "Line is not an assignment, ignoring"
        out.append(Line(key_path(key), value.strip() if eq else None, file))
    return tuple(out)


def conf_files(applier: Applier, dirs: dict[str, dict[str, DirEntry]],
               sysctl_conf: bytes | None,
               overrides: dict[str, bytes | None]) -> list[tuple[str, bytes]]:
    """(path, content) of the files the applier reads, in the order it reads them;
    `overrides` (path -> planned content, None = deleted) stand in for netfix's files."""
    chosen: dict[str, tuple[str, DirEntry]] = {}
    for d in SYSTEMD_DIRS if applier is Applier.SYSTEMD else PROCPS_DIRS:
        entries = dict(dirs.get(d, {}))
        for path, content in overrides.items():
            parent, _, base = path.rpartition("/")
            if parent == d:
                if content is None:
                    entries.pop(base, None)
                else:
                    entries[base] = DirEntry(content)
        for base, entry in entries.items():
            chosen.setdefault(base, (f"{d}/{base}", entry))  # earlier dirs hide later ones
    out = [(path, entry.content) for _, (path, entry) in sorted(chosen.items())
           if not entry.masked and entry.content is not None]
    if applier is Applier.PROCPS and sysctl_conf is not None:
        out.append((SYSCTL_CONF, sysctl_conf))
    return out


def _glob_match(pattern: str, path: str) -> bool:
    """glob(3) on /proc/sys: `*`, `?` and `[...]` within one path component."""
    pp, kp = pattern.split("/"), path.split("/")
    return len(pp) == len(kp) and all(fnmatchcase(k, p) for p, k in zip(pp, kp, strict=True))


def _systemd(lines: list[Line], path: str) -> BootValue:
    table: dict[str, Line] = {}
    for line in lines:
        old = table.get(line.key)
        if old is not None and old.value == line.value:
            continue  # same value: the earlier entry stays where it is
        table.pop(line.key, None)
        table[line.key] = line
    own = table.get(path)
    if own is not None:
        return BootValue(own.value, own.file)
    hit = None
    for line in table.values():
        if line.glob and line.value is not None and _glob_match(line.key, path):
            hit = line
    return BootValue(hit.value, hit.file, hit.key) if hit else BootValue(None, "")


def _procps(lines: list[Line], path: str) -> BootValue:
    explicit = [ln for ln in lines if ln.value is not None and ln.key == path]
    if explicit:
        return BootValue(explicit[-1].value, explicit[-1].file)
    exclude = next((ln for ln in lines if ln.value is None and fnmatchcase(path, ln.key)), None)
    if exclude:
        return BootValue(None, exclude.file)
    hit = None
    for line in lines:
        if line.glob and line.value is not None and _glob_match(line.key, path):
            hit = line
    return BootValue(hit.value, hit.file, hit.key) if hit else BootValue(None, "")


def boot_values(applier: Applier, dirs: dict[str, dict[str, DirEntry]],
                sysctl_conf: bytes | None, overrides: dict[str, bytes | None],
                keys: set[str]) -> dict[str, BootValue]:
    """Dotted key (as netfix plans it, present on the node) -> what the applier leaves it
    with at boot, whitespace-normalised as the kernel compares it."""
    lines = [ln for path, content in conf_files(applier, dirs, sysctl_conf, overrides)
             for ln in parse_lines(content, path)]
    model = _systemd if applier is Applier.SYSTEMD else _procps
    out = {}
    for key in keys:
        found = model(lines, sysctl_path(key).removeprefix("/proc/sys/"))
        value = None if found.value is None else " ".join(found.value.split())
        out[key] = BootValue(value, found.source, found.glob)
    return out


@dataclass(frozen=True)
class BootApplier:
    """Which applier this node boots with, why, and what the fact script saw."""

    applier: Applier
    why: str
    version: str = ""
    links: tuple[tuple[str, str], ...] = ()  # (symlinked .conf, its target)

    def link(self, path: str) -> str | None:
        return dict(self.links).get(path)


def detect(output: str) -> BootApplier:
    """From netfix/sh/sysctl-boot.sh's output: systemd-sysctl when systemd is pid 1
    (sd_booted(3): /run/systemd/system exists) and its binary is there, else procps
    (init scripts, or an operator, running `sysctl --system`)."""
    seen: dict[str, str] = {}
    links = []
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "LINK":
            path, _, target = rest.partition(" ")
            links.append((path, target))
        elif word:
            seen[word] = rest.strip()
    pid1 = seen.get("PID1", "")
    systemd = pid1 == "systemd" or "BOOTED" in seen
    binary = seen.get("SYSTEMD_SYSCTL")
    if systemd and binary:
        how = "pid 1" if pid1 == "systemd" else "/run/systemd/system exists"
        return BootApplier(Applier.SYSTEMD, f"systemd booted this node ({how}) and runs "
                           f"{binary} at boot", seen.get("SYSTEMD_VERSION", ""), tuple(links))
    if not output.strip():
        why = "boot applier not detected; assuming procps `sysctl --system`"
    elif systemd:
        why = "systemd booted this node but has no systemd-sysctl; assuming `sysctl --system`"
    else:
        why = f"pid 1 is {pid1 or 'unknown'}, not systemd: boot scripts run `sysctl --system`"
    return BootApplier(Applier.PROCPS, why, seen.get("PROCPS_VERSION", ""), tuple(links))
