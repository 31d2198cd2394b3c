"""Drift reports for machines: versioned JSON, JUnit XML, Prometheus text, Markdown.

Data in, text out; `write_reports` writes the files atomically so a CI uploader or
node_exporter's textfile collector never reads half a report. The formats are described
in docs/drift-report.md; the JSON schema name changes (v2) only for incompatible changes.
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from netfix import __version__
from netfix.drift import KINDS, SCHEMA, DriftItem, DriftReport, HostDrift
from netfix.errors import NetfixError
from netfix.util import atomic_write


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# ----------------------------------------------------------------------------- JSON


def _item(i: DriftItem) -> dict[str, Any]:
    return {"host": i.host, "knob": i.knob, "target": i.target, "kind": i.kind,
            "expected": i.expected, "actual": i.actual, "detail": i.detail}


def _host(h: HostDrift) -> dict[str, Any]:
    return {
        "host": h.host,
        "profile": h.profile,
        "status": h.status,
        "error": h.error,
        "checked_at": iso(h.checked_at),
        "duration_seconds": round(h.duration, 3),
        "items": [_item(i) for i in h.items],
        "info": [_item(i) for i in h.info],
        "checked": [{"knob": k, "target": t} for k, t in h.checked],
    }


def summary(report: DriftReport) -> dict[str, Any]:
    status = Counter(h.status for h in report.hosts)
    kinds = Counter(i.kind for i in report.items)
    return {
        "hosts": len(report.hosts),
        "ok": status["ok"],
        "drift": status["drift"],
        "error": status["error"],
        "items": len(report.items),
        "by_kind": {k: kinds[k] for k in KINDS},
    }


def to_dict(report: DriftReport) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "netfix_version": __version__,
        "started_at": iso(report.started),
        "finished_at": iso(report.finished or report.started),
        "profile": report.profile,
        "exit_code": report.exit_code,
        "summary": summary(report),
        "hosts": [_host(h) for h in report.hosts],
    }


def to_json(report: DriftReport, indent: int | None = 2) -> str:
    return json.dumps(to_dict(report), indent=indent)


# ---------------------------------------------------------------------------- JUnit

# XML 1.0 cannot carry most control characters, not even escaped; file contents quoted in
# a detail could hold them.
_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: object) -> str:
    return _XML_BAD.sub("\ufffd", "" if text is None else str(text))


def _junit_time(ts: float) -> str:
    # Ant's schema wants xs:dateTime without a zone; the value is UTC.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def _line(i: DriftItem) -> str:
    return f"{i.kind}: expected {i.expected}, actual {i.actual}"


def _testcases(h: HostDrift) -> list[tuple[str, str, list[DriftItem], list[DriftItem]]]:
    """(knob, target, drift items, info items) for every target checked, in check order."""
    drift: dict[tuple[str, str], list[DriftItem]] = {}
    info: dict[tuple[str, str], list[DriftItem]] = {}
    for i in h.items:
        drift.setdefault((i.knob, i.target), []).append(i)
    for i in h.info:
        info.setdefault((i.knob, i.target), []).append(i)
    seen = dict.fromkeys([*h.checked, *drift, *info])  # ordered, unique
    return [(k, t, drift.get((k, t), []), info.get((k, t), [])) for k, t in seen]


def junit(report: DriftReport) -> bytes:
    """One <testsuite> per host, one <testcase> per host and knob target: <failure> for
    drift (type = the kinds), <skipped> for targets not settable here, and for a host that
    could not be checked one <error> testcase. Kept to what Jenkins, GitLab and GitHub
    reporters all read: one failure/error/skipped child per testcase at most."""
    root = ET.Element("testsuites", name="netfix drift")
    totals = Counter()
    for n, h in enumerate(report.hosts):
        suite = ET.SubElement(root, "testsuite", name=_x(h.host), hostname=_x(h.host),
                              id=str(n), package="netfix.drift",
                              timestamp=_junit_time(h.checked_at), time=f"{h.duration:.3f}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="profile", value=_x(h.profile or ""))
        counts = Counter()
        if h.error:
            case = ET.SubElement(suite, "testcase", classname=_x(h.host), name="drift check",
                                 time=f"{h.duration:.3f}")
            err = ET.SubElement(case, "error", type="check-error", message=_x(h.error))
            err.text = _x(h.error)
            counts.update(tests=1, errors=1)
        for knob, target, items, infos in _testcases(h):
            case = ET.SubElement(suite, "testcase", classname=_x(f"{h.host}.{knob}"),
                                 name=_x(target), time="0")
            counts["tests"] += 1
            if items:
                fail = ET.SubElement(case, "failure", type=_x(",".join(i.kind for i in items)),
                                     message=_x("; ".join(_line(i) for i in items)))
                fail.text = _x("\n".join(f"{_line(i)}\n  {i.detail}" for i in items))
                counts["failures"] += 1
            elif infos:
                ET.SubElement(case, "skipped", message=_x("; ".join(
                    f"{i.kind}: {i.detail}" for i in infos)))
                counts["skipped"] += 1
        for key in ("tests", "failures", "errors", "skipped"):
            suite.set(key, str(counts[key]))
        totals.update(counts)
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    root.set("time", f"{max(0.0, report.finished - report.started):.3f}")
    root.set("timestamp", _junit_time(report.started))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


# ----------------------------------------------------------------------- Prometheus

METRICS = {
    "netfix_drift": "1 for each drift item found by the last check: host, knob, target and "
                    "kind of drift (live, persisted, edited, shadowed, other-writer, "
                    "unconfirmed, incomplete).",
    "netfix_drift_items": "Drift items found on the host by the last check; absent when the "
                          "check failed (see netfix_check_success).",
    "netfix_check_success": "1 if the last drift check of the host succeeded, 0 if it "
                            "failed (unreachable, not root, ...).",
    "netfix_last_check_timestamp_seconds": "Unix time of the last drift check of the host, "
                                           "successful or not.",
}


def label_value(value: str) -> str:
    """Exposition format escaping: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def sample(name: str, labels: dict[str, str], value: float | int | str) -> str:
    """One exposition-format sample line (no timestamp: the textfile collector rejects them)."""
    body = ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items())
    return f"{name}{{{body}}} {value}"


_sample = sample  # the name netfix/doctor/report.py imports


def family(name: str, kind: str, text: str, samples: list[str]) -> list[str]:
    """A metric family's lines: HELP, TYPE (gauge, counter), then its samples."""
    return [f"# HELP {name} {_help(text)}", f"# TYPE {name} {kind}", *samples]


def prometheus(report: DriftReport) -> str:
    """node_exporter textfile collector format: every family once with HELP and TYPE, no
    sample timestamps (the collector rejects them), no duplicate series."""
    samples: dict[str, list[str]] = {name: [] for name in METRICS}
    seen: set[tuple[str, str, str, str]] = set()
    for h in report.hosts:
        host = {"host": h.host}
        for i in h.items:
            key = (h.host, i.knob, i.target, i.kind)
            if key in seen:
                continue
            seen.add(key)
            samples["netfix_drift"].append(sample(
                "netfix_drift", {**host, "knob": i.knob, "target": i.target, "kind": i.kind}, 1))
        if not h.error:  # unknown is not zero: a failed check must not read as "no drift"
            samples["netfix_drift_items"].append(sample("netfix_drift_items", host,
                                                         len(h.items)))
        samples["netfix_check_success"].append(sample("netfix_check_success", host,
                                                       0 if h.error else 1))
        samples["netfix_last_check_timestamp_seconds"].append(sample(
            "netfix_last_check_timestamp_seconds", host, f"{h.checked_at:.3f}"))
    out = []
    for name, text in METRICS.items():
        out += family(name, "gauge", text, samples[name])
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------- Markdown


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _flat(text: object) -> str:
    """One line, no control characters: a table cell must not break the Markdown table."""
    return " ".join(_CONTROL.sub(" ", str("" if text is None else text)).split())


def _md(text: object, limit: int = 160) -> str:
    s = _flat(text)
    if len(s) > limit:
        s = s[:limit - 1] + "…"
    return re.sub(r"([\\|*_<>\[\]`])", r"\\\1", s)


def _md_code(text: object) -> str:
    s = _flat(text)
    if not s:
        return ""
    fence = "``" if "`" in s else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{s.replace('|', chr(92) + '|')}{pad}{fence}"


def headline(report: DriftReport) -> str:
    s = summary(report)
    if s["error"] and not s["drift"]:
        text = f"{s['error']} of {s['hosts']} host(s) could not be checked"
    elif s["drift"]:
        text = f"drift on {s['drift']} of {s['hosts']} host(s), {s['items']} item(s)"
        if s["error"]:
            text += f"; {s['error']} host(s) could not be checked"
    else:
        text = f"no drift on {s['hosts']} host(s)"
    return text


def markdown(report: DriftReport, max_rows: int = 50) -> str:
    """A short summary for a pipeline job page ($GITHUB_STEP_SUMMARY, a GitLab artifact)."""
    out = [f"### netfix drift: {headline(report)}", "",
           "| host | profile | result |", "| --- | --- | --- |"]
    for h in report.hosts:
        if h.error:
            result = f"**error**: {_md(h.error)}"
        elif h.items:
            kinds = Counter(i.kind for i in h.items)
            result = f"**drift**: {len(h.items)} item(s) (" + \
                ", ".join(f"{k} {kinds[k]}" for k in KINDS if kinds[k]) + ")"
        else:
            result = "ok"
        out.append(f"| {_md(h.host)} | {_md(h.profile)} | {result} |")
    items = report.items
    if items:
        out += ["", "| host | knob | target | kind | expected | actual | detail |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for i in items[:max_rows]:
            out.append(f"| {_md(i.host)} | {_md(i.knob)} | {_md_code(i.target)} | {i.kind} | "
                       f"{_md_code(i.expected)} | {_md_code(i.actual)} | {_md(i.detail)} |")
        if len(items) > max_rows:
            out += ["", f"… and {len(items) - max_rows} more item(s): see the JUnit or JSON "
                    "report."]
    out += ["", f"<sub>{SCHEMA} · netfix {__version__} · checked {iso(report.started)} · "
            f"exit code {report.exit_code}</sub>", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------- files


def write_reports(report: DriftReport, junit_path: str | Path | None = None,
                  prometheus_path: str | Path | None = None,
                  markdown_path: str | Path | None = None) -> list[Path]:
    written = []
    for path, render in ((junit_path, junit),
                         (prometheus_path, lambda r: prometheus(r).encode()),
                         (markdown_path, lambda r: markdown(r).encode())):
        if path:
            try:
                atomic_write(Path(path), render(report))
            except OSError as e:
                raise NetfixError(f"cannot write report {path}: {e.strerror or e}") from e
            written.append(Path(path))
    return written
