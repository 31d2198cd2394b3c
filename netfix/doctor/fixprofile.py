"""--fix-profile: the remedies of the knob-fixable findings as profiles.

One profile per distinct remedy set (hosts with the same profile and the same merged
remedies share one file): it `extends` the host's current profile (the inventory's
`profile:`) and holds only the remedies, merged from the findings' Remedy.profile
fragments (where two ask for different numbers, the larger wins), each value with a
comment citing the finding and its evidence. Values the parent profile already sets are
combined with it, never lowered (`>=N` stays a floor), and a SYN-flood setting the parent
keeps under `sysctl:` stays there (one owner per key, as the profile checks demand).

The top of each file and `<stem>.hosts.yaml` name the hosts that get it. Findings no knob
fixes are listed with their action in the header and returned for stderr, never dropped.
Every file written is loaded back with the profile loader: it is valid, or not written.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import yaml

from netfix.doctor import Finding
from netfix.doctor.run import DoctorReport, HostDoctor, sort_findings
from netfix.errors import InputError, NetfixError
from netfix.util import atomic_write, normalize_key


def _num(v: Any) -> int | float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return v
    if isinstance(v, str):
        s = v.strip().removeprefix(">=").strip()
        try:
            return int(s)
        except ValueError:
            return None
    return None


def combine(old: Any, new: Any) -> Any:
    """Two values for one setting: the larger (safer) one; `>=N` keeps its form."""
    a, b = _num(old), _num(new)
    if a is None or b is None:
        return new if old is None else old
    top = max(a, b)
    if isinstance(old, str) and old.strip().startswith(">=") or \
            isinstance(new, str) and new.strip().startswith(">="):
        return f">={top}"
    return top


def merge(into: dict[str, Any], frag: dict[str, Any]) -> dict[str, Any]:
    for key, value in frag.items():
        if isinstance(value, dict):
            into[key] = merge(dict(into.get(key) or {}), value)
        elif key in into:
            into[key] = combine(into[key], value)
        else:
            into[key] = value
    return into


def fixable(h: HostDoctor) -> list[Finding]:
    return [f for f in sort_findings(h.problems) if f.remedy.profile]


def by_hand(h: HostDoctor) -> list[Finding]:
    """Findings at warning or above that need a person: no knob, or an action besides."""
    return [f for f in sort_findings(h.problems) if f.remedy.action or not f.remedy.profile]


def _parent(h: HostDoctor) -> tuple[str | None, dict[str, Any]]:
    if not h.profile:
        return None, {}
    from netfix.profile import load_profile

    prof = load_profile(h.profile)
    return h.profile, prof.data


def adjust(remedy: dict[str, Any], parent: dict[str, Any],
           comments: dict[str, list[str]]) -> dict[str, Any]:
    """The remedy as a child of `parent`: never below the parent's value, and SYN-flood keys
    the parent sets under `sysctl:` moved there (with their comments)."""
    from netfix.knobs import synflood

    out = json.loads(json.dumps(remedy))
    plain = {normalize_key(k): k for k in (parent.get("sysctl") or {})}
    for field in list(out.get("syn_flood") or {}):
        key = synflood.KEYS[field][0] if field in synflood.KEYS else None
        if key in plain:
            name = plain[key]
            value = out["syn_flood"].pop(field)
            out.setdefault("sysctl", {})[name] = combine(parent["sysctl"][name], value)
            moved = comments.pop(f"syn_flood.{field}", [])
            comments.setdefault(f"sysctl.{name}", []).extend(moved)
    if out.get("syn_flood") == {}:
        del out["syn_flood"]

    def floor(node: dict, base: dict) -> None:
        for k, v in node.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                floor(v, base[k])
            elif k in base and not isinstance(v, dict):
                node[k] = combine(base[k], v)

    floor(out, parent)
    return out


def _scalar(v: Any) -> str:
    return yaml.safe_dump([v], default_flow_style=True, width=10_000).strip()[1:-1]


def _comment(text: str, indent: str, lead: str = "# ") -> list[str]:
    width = 96 - len(indent) - len(lead)
    return [f"{indent}{lead}{line}" if n == 0 else f"{indent}{lead}  {line}"
            for n, line in enumerate(textwrap.wrap(text, width, break_on_hyphens=False))]


def emit(data: dict[str, Any], comments: dict[str, list[str]], path: tuple[str, ...] = (),
         depth: int = 0) -> list[str]:
    lines = []
    indent = "  " * depth
    for key, value in data.items():
        dotted = ".".join((*path, str(key)))
        for c in comments.get(dotted, []):
            lines += _comment(c, indent)
        if isinstance(value, dict):
            lines.append(f"{indent}{_scalar(key)}:")
            lines += emit(value, comments, (*path, str(key)), depth + 1)
        else:
            lines.append(f"{indent}{_scalar(key)}: {_scalar(value)}")
    return lines


def _files(path: Path, n: int) -> list[Path]:
    return [path if i == 0 else path.with_name(f"{path.stem}-{i + 1}{path.suffix or '.yaml'}")
            for i in range(n)]


def write(report: DoctorReport, file: str | Path) -> list[str]:
    """Write the remedy profiles; return the lines for stderr (what was written, which
    hosts, and every finding that needs a person)."""
    path = Path(file)
    sets: dict[str, dict[str, Any]] = {}
    clean, messages = [], []
    for h in report.hosts:
        if h.error:
            messages.append(f"{h.host}: not checked ({h.error}): no remedy for it")
            continue
        found = fixable(h)
        if not found:
            clean.append(h.host)
            continue
        remedy: dict[str, Any] = {}
        comments: dict[str, list[str]] = {}
        for f in found:
            merge(remedy, f.remedy.profile)
            for dotted, text in f.remedy.comments.items():
                comments.setdefault(dotted, []).append(f"{f.code} ({f.severity}, {h.host}): "
                                                       f"{text}")
        try:
            parent_name, parent = _parent(h)
        except InputError as e:
            messages.append(f"{h.host}: its profile {h.profile} does not load ({e}): no "
                            "remedy profile for it")
            continue
        remedy = adjust(remedy, parent, comments)
        key = json.dumps([parent_name, remedy], sort_keys=True)
        entry = sets.setdefault(key, {"parent": parent_name, "remedy": remedy, "hosts": [],
                                      "comments": {}, "findings": []})
        entry["hosts"].append(h.host)
        entry["findings"] += [(h.host, f) for f in found]
        for dotted, texts in comments.items():
            entry["comments"].setdefault(dotted, [])
            entry["comments"][dotted] += [t for t in texts if t not in entry["comments"][dotted]]
    manual = [(h.host, f) for h in report.hosts if not h.error for f in by_hand(h)]
    files = _files(path, len(sets))
    written = []
    for out, entry in zip(files, sets.values(), strict=True):
        text = render(entry, manual, clean, out)
        try:
            atomic_write(out, text.encode())
        except OSError as e:
            raise NetfixError(f"cannot write {out}: {e.strerror or e}") from e
        from netfix.profile import validate_file

        try:
            validate_file(out)
        except InputError as e:
            out.unlink(missing_ok=True)
            raise NetfixError(f"the remedy profile for {', '.join(entry['hosts'])} did not "
                              f"validate, not written: {e}") from e
        written.append(out)
        hosts = ",".join(entry["hosts"])
        messages.append(f"wrote {out} for {hosts} (extends {entry['parent'] or 'nothing'}): "
                        f"netfix plan --profile {out} --limit {hosts}")
    if written:
        snippet = path.with_name(f"{path.stem}.hosts.yaml")
        lines = ["# netfix doctor: which hosts get which remedy profile. Merge into the",
                 "# inventory (each host's `profile:`), then plan and apply as usual.", "hosts:"]
        for out, entry in zip(written, sets.values(), strict=True):
            for host in entry["hosts"]:
                lines.append(f"  {_scalar(host)}: {{profile: {_scalar(str(out.resolve()))}}}")
        atomic_write(snippet, ("\n".join(lines) + "\n").encode())
        messages.append(f"wrote {snippet}: the inventory snippet naming which hosts get which")
    else:
        messages.append(f"no knob-fixable finding at warning or above: no profile written to "
                        f"{path}")
    for host, f in manual:
        what = f.remedy.action or "no remedy known: investigate"
        kind = "also by hand" if f.remedy.profile else "by hand (no knob fixes it)"
        messages.append(f"{kind}: {host} {f.code} ({f.severity}, {f.subject}): {what}")
    return messages


def render(entry: dict[str, Any], manual: list[tuple[str, Finding]], clean: list[str],
           out: Path) -> str:
    hosts = entry["hosts"]
    head = [
        "# netfix doctor remedy profile: only the remedies of knob-fixable findings, each",
        "# value with the finding and evidence it comes from. Review, then:",
        f"#   netfix plan --profile {out} --limit {','.join(hosts)}",
        "#",
        "# Hosts that get this profile (inventory snippet; also in the .hosts.yaml file):",
        "#   hosts:",
    ]
    head += [f"#     {h}: {{profile: {out.resolve()}}}" for h in hosts]
    head.append("#")
    head.append("# Findings fixed here:")
    for host, f in entry["findings"]:
        head += _comment(f"{host} {f.code} [{f.severity}] {f.subject}: {f.summary}", "", "#   ")
    mine = [(h, f) for h, f in manual if h in hosts]
    for title, rows in (("NOT fixed by any knob - do these by hand:",
                         [(h, f) for h, f in mine if not f.remedy.profile]),
                        ("Also to do by hand (besides the values below):",
                         [(h, f) for h, f in mine if f.remedy.profile]),
                        ("Other hosts' findings that need a person:",
                         [(h, f) for h, f in manual if h not in hosts])):
        if rows:
            head += ["#", f"# {title}"]
        for host, f in rows:
            head += _comment(f"{host} {f.code} [{f.severity}] {f.subject}: "
                             f"{f.remedy.action or 'no remedy known: investigate'}", "", "#   ")
    if clean:
        head += ["#", f"# No knob-fixable finding on: {', '.join(clean)}"]
    body: dict[str, Any] = {"description": f"netfix doctor remedy for {', '.join(hosts)}"}
    if entry["parent"]:
        body["extends"] = entry["parent"]
    body.update(entry["remedy"])
    comments = dict(entry["comments"])
    if entry["parent"]:
        comments["extends"] = ["the profile these hosts have in the inventory"]
    else:
        comments["extends"] = []
        head += ["#", "# These hosts have no profile in the inventory: this one stands alone."]
    return "\n".join(head + [""] + emit(body, comments)) + "\n"

