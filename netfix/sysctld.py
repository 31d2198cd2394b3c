"""Effective boot-time sysctl values across the files systemd-sysctl and procps read.

systemd-sysctl: files from the dirs below, a name in an earlier dir hides the same name
in later ones (a symlink to /dev/null masks it), then all files sorted by name and applied
in order, so for one key the last-sorting file wins. procps `sysctl --system` applies
/etc/sysctl.conf after them, so it wins over all of them.
"""

from __future__ import annotations

from netfix.facts import DirEntry
from netfix.util import normalize_key

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"


def parse_conf(content: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in content.decode(errors="replace").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = normalize_key(key)
        if "*" in key or "?" in key or "[" in key:
            continue  # systemd globs match live keys only; not part of a plan's keys
        out[key] = " ".join(value.split())
    return out


def effective(
    dirs: dict[str, dict[str, DirEntry]],
    sysctl_conf: bytes | None,
    overrides: dict[str, bytes | None],
) -> dict[str, tuple[str, str]]:
    """key -> (value, file that sets it last), with `overrides` (path -> planned content,
    None = deleted) standing in for the files netfix is about to write."""
    chosen: dict[str, tuple[str, DirEntry]] = {}
    for d in SYSCTL_DIRS:
        entries = dict(dirs.get(d, {}))
        for path, content in overrides.items():
            parent, _, base = path.rpartition("/")
            if parent == d:
                if content is None:
                    entries.pop(base, None)
                else:
                    entries[base] = DirEntry(content)
        for base, entry in entries.items():
            chosen.setdefault(base, (f"{d}/{base}", entry))
    result: dict[str, tuple[str, str]] = {}
    for base in sorted(chosen):
        path, entry = chosen[base]
        if entry.masked or entry.content is None:
            continue
        for key, value in parse_conf(entry.content).items():
            result[key] = (value, path)
    if sysctl_conf:
        for key, value in parse_conf(sysctl_conf).items():
            result[key] = (value, SYSCTL_CONF)
    return result
