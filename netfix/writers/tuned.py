"""TuneD: the keys the running daemon writes at its start, and who ends up live.

Read from TuneD's own source (redhat-performance/tuned; docs/writers.md, "TuneD"):
- tuned/consts.py: /etc/tuned/active_profile names the profile (several names, space
  separated, are merged in order), /etc/tuned/tuned-main.conf holds `reapply_sysctl`
  (default True); profiles live in /usr/lib/tuned and /etc/tuned (newer releases:
  /usr/lib/tuned/profiles, /etc/tuned/profiles), the last dir of the list first.
- tuned/profiles/loader.py: `include=` in [main] (names split on `,` or `;`) loads the
  included profiles first, so the including profile's values win.
- tuned/plugins/plugin_sysctl.py: at start TuneD writes its [sysctl] values, then, with
  reapply_sysctl, re-applies /run/sysctl.d and /etc/sysctl.d (a name in /run hides the
  same name in /etc; files sorted by name) and /etc/sysctl.conf last, so a key set in
  those files ends with the files' value (netfix's included), not TuneD's. Keys set only
  in /usr/lib/sysctl.d are not re-applied: TuneD's value stays.
- plugin_net.py: [net] writes ring, channels, coalesce, features, mtu, txqueuelen and
  nf_conntrack_hashsize on the matching devices at start and whenever a device appears;
  it runs after netfix's boot unit (tuned.service is ordered after network.target) and
  after netfix's udev rule (TuneD hears the device from udev once its rules ran), so its
  value is the one the interface ends with.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from netfix.ethtool import FEATURE_ALIASES
from netfix.facts import Facts, Needs
from netfix.plan import Change, When, Writer
from netfix.sysctld import parse_lines
from netfix.util import norm, normalize_key
from netfix.writers import _common as common

NAME = "tuned"
SCRIPT = "tuned"
MAIN_CONF = "/etc/tuned/tuned-main.conf"
ACTIVE = "/etc/tuned/active_profile"
# Searched in this order (tuned/profiles/locator.py walks the configured list backwards).
PROFILE_DIRS = ("/etc/tuned/profiles", "/etc/tuned", "/usr/lib/tuned/profiles", "/usr/lib/tuned")
REAPPLY_DIRS = ("/run/sysctl.d", "/etc/sysctl.d")  # plugin_sysctl.py SYSCTL_CONFIG_DIRS
SYSCTL_CONF = "/etc/sysctl.conf"
# Sections that are not plugin options.
RESERVED = {"type", "devices", "replace", "enabled", "priority", "devices_udev_regex",
            "uname_regex", "cpuinfo_regex"}
# [net] option -> netfix's per-interface group
NET_GROUPS = {"ring": "rings", "channels": "channels", "coalesce": "coalesce",
              "features": "offloads"}
TOUCHED = ("sysctl", "conntrack", "syn_flood", "nic")  # profile sections TuneD may write


@dataclass
class Profile:
    names: list[str]
    files: list[str] = field(default_factory=list)  # tuned.conf files, in load order
    sysctl: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (value, file)
    net: list[tuple[dict[str, str], str]] = field(default_factory=list)  # (options, file)
    problems: list[str] = field(default_factory=list)


def needs(data: dict) -> Needs:
    if not any(data.get(s) for s in TOUCHED):
        return Needs()
    return common.needs(SCRIPT, "tuned.sh", files={SYSCTL_CONF}, dirs=set(REAPPLY_DIRS),
                        procs={"tuned"})


def load(files: dict[str, str | None]) -> Profile:
    """The active profile with its include= chain, merged as TuneD's loader merges it."""
    names = (files.get(ACTIVE) or "").split()
    prof = Profile(names)
    merged: dict[str, dict[str, str]] = {}
    origin: dict[str, str] = {}  # section -> file that last set it
    _load(names, files, prof, merged, origin, [])
    for section, opts in merged.items():
        kind = opts.get("type", section)
        if kind == "sysctl":
            for key, value in opts.items():
                if key not in RESERVED:
                    prof.sysctl[normalize_key(key)] = (value, origin[f"{section}.{key}"])
        elif kind == "net":
            prof.net.append((opts, origin[section]))
    return prof


def _load(names: list[str], files: dict[str, str | None], prof: Profile,
          merged: dict[str, dict[str, str]], origin: dict[str, str], seen: list[str]) -> None:
    for name in names:
        found = [f"{d}/{name}/tuned.conf" for d in PROFILE_DIRS
                 if files.get(f"{d}/{name}/tuned.conf") is not None]
        # locator.get_config skips files already loaded: a profile can include one of
        # the same name in a later dir (an /etc override of a shipped profile).
        path = next((p for p in found if p not in seen), None)
        if path is None:
            prof.problems.append(f"TuneD profile {name!r}: include cycle through {found[0]}"
                                 if found else f"TuneD profile {name!r} not found in "
                                 f"{', '.join(PROFILE_DIRS)}")
            continue
        seen.append(path)
        conf = common.sections(files[path] or "")
        include = conf.get("main", {}).get("include") or conf.get("", {}).get("include")
        if include:
            _load([n for n in re.split(r"\s*[,;]\s*", include) if n], files, prof, merged,
                  origin, seen)
        prof.files.append(path)
        for section, opts in conf.items():
            if section in ("", "main"):
                continue
            if opts.get("replace", "").lower() in ("1", "true", "yes"):
                merged[section] = {}
            merged.setdefault(section, {}).update(opts)
            origin[section] = path
            for key in opts:
                origin[f"{section}.{key}"] = path


def reapply_sysctl(files: dict[str, str | None]) -> bool:
    value = common.sections(files.get(MAIN_CONF) or "").get("", {}).get("reapply_sysctl", "1")
    return value.strip().lower() not in ("0", "false", "no", "off")


def reapplied(facts: Facts, changes: list[Change]) -> dict[str, tuple[str, str]]:
    """key -> (value, file) as TuneD's reapply leaves it, with the files this plan
    writes in place of what the node has now."""
    chosen: dict[str, str] = {}
    for d in REAPPLY_DIRS:
        names = set(facts.dirs.get(d, {}))
        names |= {c.target.rpartition("/")[2] for c in changes if c.target.startswith(d + "/")}
        for base in sorted(names):
            if base.endswith(".conf"):
                chosen.setdefault(base, f"{d}/{base}")
    planned = {c.target: c for c in changes if c.target.startswith("/")}
    out: dict[str, tuple[str, str]] = {}
    for path in [chosen[b] for b in sorted(chosen)] + [SYSCTL_CONF]:
        if path in planned:
            content = common.file_content(planned[path], facts)
        else:
            parent, _, base = path.rpartition("/")
            entry = facts.dirs.get(parent, {}).get(base)
            content = entry.content if entry else facts.files.get(path)
        for line in parse_lines(content or b"", path):
            if not line.glob and line.value is not None:  # TuneD re-applies explicit keys
                out[normalize_key(line.key)] = (" ".join(line.value.split()), path)
    return out


def _modified(value: str, current: str | None) -> str | None:
    """TuneD's `>N` / `<N` assignment modifiers: write only to raise (lower); None: no
    write. netfix's value is what TuneD finds when it starts."""
    if value[:1] not in "<>" or not value[1:].strip().lstrip("-").isdigit():
        return norm(value)
    want, cur = int(value[1:]), current
    if cur is None or not cur.lstrip("-").isdigit():
        return str(want)
    if (value[0] == ">" and want > int(cur)) or (value[0] == "<" and want < int(cur)):
        return str(want)
    return None


def annotate(changes: list[Change], facts: Facts) -> None:
    rec = common.records(facts.scripts.get(SCRIPT, ""))
    if not rec.procs:
        return
    pid = rec.procs[0].pid
    prof = load(rec.files)
    reapply = reapply_sysctl(rec.files)
    keys = common.sysctl_changes(changes)
    owned = {c.target for c in changes if c.target.startswith("/")}
    after = reapplied(facts, changes) if reapply else {}
    for key, (raw, path) in prof.sysctl.items():
        c = keys.get(key)
        if c is None:
            continue
        _sysctl(c, raw, path, pid, reapply, after.get(key), owned)
    if prof.net:
        _net(changes, prof, pid)
    for problem in prof.problems:
        for c in keys.values():
            c.notes.append(problem)
            break


def _sysctl(c: Change, raw: str, path: str, pid: int, reapply: bool,
            after: tuple[str, str] | None, owned: set[str]) -> None:
    if "${" in raw:
        common.add(c, Writer(NAME, When.START, None, source=path), c.wins or "",
                   f"TuneD (pid {pid}) writes {c.target} from {path} with variables netfix "
                   "does not expand: not modelled")
        return
    theirs = _modified(raw, c.desired)
    w = Writer(NAME, When.START, theirs, source=f"{path} [sysctl]")
    if reapply and after:
        value, file = after
        how = f"TuneD (pid {pid}) writes {theirs} at its start from {path}, then re-applies " \
              f"{file} (reapply_sysctl=1 in {MAIN_CONF} or by default)"
        if file in owned or value == c.desired:
            common.add(c, w, "netfix", f"{how}: netfix's value {c.desired} stays")
        else:
            w.value, w.source, w.wins = value, f"{file} (re-applied by TuneD)", True
            c.boot = value
            common.add(c, w, NAME, conflict=f"{how}, which sets {value}: remove the key there")
        return
    if theirs is None or theirs == c.desired:
        common.add(c, w, "netfix", f"TuneD (pid {pid}) writes the same {c.target} at start "
                   f"({path})")
        return
    w.wins = True
    c.boot = theirs  # tuned.service starts after systemd-sysctl.service
    why = "reapply_sysctl=0" if not reapply else "no file TuneD re-applies sets the key"
    common.add(c, w, NAME, conflict=(
        f"TuneD (pid {pid}) writes {theirs} at each start from {path} [sysctl] and keeps it "
        f"({why} in {MAIN_CONF}): remove {c.target} from that profile, or set "
        "reapply_sysctl=1 so the sysctl.d files win"))


def _net_values(opts: dict[str, str]) -> dict[str, dict[str, str]]:
    """[net] options as netfix's groups: {'rings': {'rx': '1024'}, 'mtu': {'': '9000'}}."""
    out: dict[str, dict[str, str]] = {}
    for opt, group in NET_GROUPS.items():
        words = opts.get(opt, "").replace("=", " ").split()
        pairs = dict(zip(words[::2], words[1::2], strict=False))
        if group == "offloads":
            pairs = {FEATURE_ALIASES.get(k, k): v for k, v in pairs.items()}
        if pairs:
            out[group] = pairs
    for opt in ("mtu", "txqueuelen"):
        if opts.get(opt, "").strip():
            out[opt] = {"": opts[opt].strip()}
    return out


def _matches(iface: str, devices: str) -> bool:
    """TuneD's `devices=`: comma-separated globs, `!` excludes; absent: every device."""
    pats = [p.strip() for p in devices.split(",") if p.strip()]
    if not pats:
        return True
    neg = [p[1:] for p in pats if p.startswith("!")]
    pos = [p for p in pats if not p.startswith("!")] or ["*"]
    return (any(fnmatch.fnmatchcase(iface, p) for p in pos)
            and not any(fnmatch.fnmatchcase(iface, p) for p in neg))


def _net(changes: list[Change], prof: Profile, pid: int) -> None:
    rows = common.iface_changes(changes)
    keys = common.sysctl_changes(changes)
    for opts, path in prof.net:
        values = _net_values(opts)
        for (iface, group), c in rows.items():
            if group not in values or not _matches(iface, opts.get("devices", "")):
                continue
            o = common.overlap(c, values[group])
            if not o.shared:
                continue
            shown, differ = o.shown, o.differ
            w = Writer(NAME, When.START, shown, source=f"{path} [net]", wins=differ)
            if differ:
                c.boot = o.after  # tuned.service starts after netfix's boot unit
            common.add(c, w, NAME if differ else "netfix",
                       f"TuneD (pid {pid}) sets the same {c.target} ({path})",
                       conflict=(f"TuneD (pid {pid}) sets {c.target} to {shown} at its start "
                                 f"and when the interface reappears ({path} [net]), after "
                                 "netfix's boot unit and udev rule: remove it there")
                       if differ else "")
        hashsize = opts.get("nf_conntrack_hashsize", "").strip()
        c = keys.get("net.netfilter.nf_conntrack_buckets")
        if hashsize and c is not None:
            differ = hashsize != c.desired
            common.add(c, Writer(NAME, When.START, hashsize, source=f"{path} [net]",
                                 wins=differ), NAME if differ else "netfix",
                       f"TuneD (pid {pid}) sets the same hash size ({path})",
                       conflict=(f"TuneD (pid {pid}) writes nf_conntrack hashsize {hashsize} "
                                 f"at its start ({path} [net] nf_conntrack_hashsize): remove "
                                 "it there") if differ else "")
