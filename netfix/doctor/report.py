"""Doctor reports: the table, versioned JSON (netfix-doctor/v1, docs/doctor-report.schema.json),
JUnit XML, Prometheus textfile, Markdown. Data in, text out; the formats are described in
docs/doctor.md. Files are written atomically, as drift's are.

Raw gauges: a detector module may declare `GAUGES`, evidence key -> help text, or
(help text, label name). For every finding of that detector whose evidence has the key
with a number, the Prometheus file gets `netfix_doctor_<key>{host=...}` (and, with a
label name, that label set to the finding's subject: `drops_per_second{host, source}`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from netfix import __version__
from netfix.doctor import Finding, Severity
from netfix.doctor.run import SCHEMA, DoctorReport, HostDoctor, sort_findings
from netfix.errors import NetfixError
from netfix.report import _XML_BAD, _help, _junit_time, _md, _md_code, _sample, iso
from netfix.util import atomic_write

SEVERITIES = (Severity.CRITICAL, Severity.WARNING, Severity.INFO)

# ----------------------------------------------------------------------------- JSON


def _value(v: Any) -> float | int | str:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float | str):
        return v
    return str(v)


def finding_dict(f: Finding) -> dict[str, Any]:
    return {
        "code": f.code,
        "severity": str(f.severity),
        "detector": f.detector,
        "subject": f.subject,
        "summary": f.summary,
        "why": f.why,
        "now": bool(f.now),
        "last_seen": f.last_seen or None,
        "evidence": {str(k): _value(v) for k, v in f.evidence.items()},
        "remedy": {
            "profile": f.remedy.profile,
            "comments": dict(f.remedy.comments),
            "action": f.remedy.action,
        },
    }


def host_dict(h: HostDoctor) -> dict[str, Any]:
    sev = Counter(str(f.severity) for f in h.findings)
    return {
        "host": h.host,
        "status": h.status,
        "error": h.error,
        "detector_errors": dict(h.detector_errors),
        "notes": list(h.notes),
        "checked_at": iso(h.checked_at),
        "duration_seconds": round(h.duration, 3),
        "window_seconds": round(h.window, 3),
        "uptime_seconds": round(h.uptime, 3),
        "kernel": h.kernel,
        "netns": h.netns,
        "profile": h.profile,
        "detectors": list(h.detectors),
        "counts": {s.value: sev[s.value] for s in SEVERITIES},
        "findings": [finding_dict(f) for f in sort_findings(h.findings)],
    }


def summary(report: DoctorReport) -> dict[str, Any]:
    status = Counter(h.status for h in report.hosts)
    sev = Counter(str(f.severity) for f in report.findings)
    return {"hosts": len(report.hosts), "ok": status["ok"], "findings": status["findings"],
            "error": status["error"], "by_severity": {s.value: sev[s.value] for s in SEVERITIES}}


def to_dict(report: DoctorReport) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "netfix_version": __version__,
        "started_at": iso(report.started),
        "finished_at": iso(report.finished or report.started),
        "window_seconds": report.window,
        "exit_code": report.exit_code,
        "summary": summary(report),
        "hosts": [host_dict(h) for h in report.hosts],
    }


def to_json(report: DoctorReport, indent: int | None = 2) -> str:
    return json.dumps(to_dict(report), indent=indent)


# ---------------------------------------------------------------------------- table

STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


def evidence_text(f: Finding, limit: int = 6) -> str:
    items = list(f.evidence.items())
    text = ", ".join(f"{k}={v}" for k, v in items[:limit])
    return text + (f", +{len(items) - limit} more" if len(items) > limit else "")


def headline(report: DoctorReport) -> str:
    s = summary(report)
    bad = s["by_severity"]
    parts = [f"{s['hosts']} host(s)"]
    if bad["critical"] or bad["warning"]:
        hosts = sum(1 for h in report.hosts if h.problems)
        parts.append(f"{bad['critical']} critical and {bad['warning']} warning finding(s) on "
                     f"{hosts} host(s)")
    else:
        parts.append("no finding at warning or above")
    if s["error"]:
        parts.append(f"{s['error']} host(s) could not be checked fully")
    return "; ".join(parts)


def table(report: DoctorReport, verbose: bool = False, stderr: bool = False) -> None:
    """Critical first, across hosts; info findings with -v only (counted otherwise)."""
    from netfix.render import Out, columns

    out = Out(stderr)
    for h in report.hosts:
        if h.error:
            out.line(f"{h.host}: ERROR {h.error}", "bold red")
        for err in h.detector_errors.values():
            out.line(f"{h.host}: ERROR {err}", "bold red")
    rows = [(h, f) for h in report.hosts for f in h.findings
            if verbose or f.severity != Severity.INFO]
    rows.sort(key=lambda r: (SEVERITIES.index(Severity(r[1].severity)), r[0].host,
                             r[1].detector, r[1].code))
    if rows:
        cells = [[str(f.severity), h.host, f.code, f.subject,
                  ("now: " if f.now else "since boot: ") + f.summary
                  + (f" (last {f.last_seen})" if f.last_seen else "")] for h, f in rows]
        lines = columns(["severity", "host", "code", "subject", "finding"], cells, out.width,
                        caps={1: 24, 2: 28, 3: 24})
        out.line(lines[0], "dim")
        n = -1
        for text in lines[1:]:
            if not text.startswith(" "):
                n += 1
            out.line(text, STYLE[Severity(rows[n][1].severity)])
        if verbose:
            for h, f in rows:
                out.line(f"  {h.host} {f.code}: {f.why}", "dim")
                if f.evidence:
                    out.line(f"    evidence: {evidence_text(f, 20)}", "dim")
                if f.remedy.action:
                    out.line(f"    action: {f.remedy.action}", "dim")
    info = sum(f.severity == Severity.INFO for f in report.findings)
    if info and not verbose:
        out.line(f"({info} info finding(s) not shown: -v shows them)", "dim")
    for h in report.hosts:
        for note in h.notes if verbose else []:
            out.line(f"{h.host}: note: {note}", "dim")
    out.line(f"doctor: {headline(report)}", "bold")


# ---------------------------------------------------------------------------- JUnit


def _x(text: object) -> str:
    return _XML_BAD.sub("\ufffd", "" if text is None else str(text))


def _failure_text(f: Finding) -> str:
    lines = [f.summary, f"why: {f.why}"]
    if f.evidence:
        lines.append(f"evidence: {evidence_text(f, 50)}")
    if f.remedy.action:
        lines.append(f"action: {f.remedy.action}")
    if f.remedy.profile:
        lines.append(f"profile: {json.dumps(f.remedy.profile, sort_keys=True)}")
    return "\n".join(lines)


def junit(report: DoctorReport) -> bytes:
    """One <testsuite> per host, one <testcase> per host and detector: one <failure> when
    the detector found anything at warning or above (all of them in its text; the XSD CI
    systems read allows one failure per case), <error> when it failed to run, and for a
    host that could not be checked one <error> testcase."""
    root = ET.Element("testsuites", name="netfix doctor")
    totals: Counter = Counter()
    for n, h in enumerate(report.hosts):
        suite = ET.SubElement(root, "testsuite", name=_x(h.host), hostname=_x(h.host), id=str(n),
                              package="netfix.doctor", timestamp=_junit_time(h.checked_at),
                              time=f"{h.duration:.3f}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="window_seconds", value=f"{h.window:g}")
        ET.SubElement(props, "property", name="kernel", value=_x(h.kernel))
        counts: Counter = Counter()
        if h.error:
            case = ET.SubElement(suite, "testcase", classname=_x(h.host), name="doctor check",
                                 time=f"{h.duration:.3f}")
            err = ET.SubElement(case, "error", type="check-error", message=_x(h.error))
            err.text = _x(h.error)
            counts.update(tests=1, errors=1)
        for name in [] if h.error else h.detectors:
            case = ET.SubElement(suite, "testcase", classname=_x(f"{h.host}.doctor"),
                                 name=_x(name), time="0")
            counts["tests"] += 1
            found = [f for f in sort_findings(h.findings) if f.detector == name]
            bad = [f for f in found if f.severity != Severity.INFO]
            if name in h.detector_errors:
                err = ET.SubElement(case, "error", type="detector-error",
                                    message=_x(h.detector_errors[name]))
                err.text = _x(h.detector_errors[name])
                counts["errors"] += 1
            elif bad:
                fail = ET.SubElement(
                    case, "failure", type=_x(",".join(dict.fromkeys(f.code for f in bad))),
                    message=_x("; ".join(f"{f.severity} {f.code} {f.subject}: {f.summary}"
                                         for f in bad)))
                fail.text = _x("\n\n".join(f"[{f.severity}] {f.code} ({f.subject})\n"
                                           + _failure_text(f) for f in bad))
                counts["failures"] += 1
            infos = [f for f in found if f.severity == Severity.INFO]
            if infos:
                out = ET.SubElement(case, "system-out")
                out.text = _x("\n".join(f"[info] {f.code} ({f.subject}): {f.summary}"
                                        for f in infos))
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
    "netfix_doctor_finding": "1 for each finding of the last doctor run: host, finding code "
                             "and severity (critical, warning, info).",
    "netfix_doctor_findings": "Findings of the last doctor run on the host, by severity; "
                              "absent when the host could not be checked.",
    "netfix_doctor_check_success": "1 if the last doctor run checked the host (every "
                                   "detector ran), 0 if not.",
    "netfix_doctor_last_check_timestamp_seconds": "Unix time of the last doctor run of the "
                                                  "host.",
    "netfix_doctor_window_seconds": "Seconds between the two counter samples, measured on "
                                    "the node (0: since boot only).",
}


def gauges() -> dict[str, tuple[str, str | None]]:
    """Evidence key -> (help, label or None), from every detector's GAUGES."""
    from netfix.doctor import detectors

    out: dict[str, tuple[str, str | None]] = {}
    for mod in detectors():
        for key, spec in getattr(mod, "GAUGES", {}).items():
            help_text, label = (spec, None) if isinstance(spec, str) else spec
            out.setdefault(key, (f"{help_text} (detector {mod.NAME})", label))
    return out


def _metric_name(key: str) -> str:
    import re

    return "netfix_doctor_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


def prometheus(report: DoctorReport) -> str:
    """node_exporter textfile collector format: every family once with HELP and TYPE, no
    timestamps, no duplicate series (a repeated gauge keeps its largest value)."""
    spec = gauges()
    samples: dict[str, dict[tuple, float]] = {n: {} for n in METRICS}
    gauge_samples: dict[str, dict[tuple, float]] = {}
    for h in report.hosts:
        host = (("host", h.host),)
        checked = not (h.error or h.detector_errors)
        for f in h.findings:
            key = host + (("code", f.code), ("severity", str(f.severity)))
            samples["netfix_doctor_finding"][key] = 1
            for ev, value in f.evidence.items():
                if ev not in spec or isinstance(value, bool) or \
                        not isinstance(value, int | float):
                    continue
                _, label = spec[ev]
                labels = host + (((label, f.subject),) if label else ())
                fam = gauge_samples.setdefault(_metric_name(ev), {})
                fam[labels] = max(fam.get(labels, float("-inf")), float(value))
        if not h.error:
            for s in SEVERITIES:
                n = sum(str(f.severity) == s.value for f in h.findings)
                samples["netfix_doctor_findings"][host + (("severity", s.value),)] = n
            samples["netfix_doctor_window_seconds"][host] = round(h.window, 3)
        samples["netfix_doctor_check_success"][host] = 1 if checked else 0
        samples["netfix_doctor_last_check_timestamp_seconds"][host] = round(h.checked_at, 3)
    out = []
    help_by_name = {_metric_name(k): v[0] for k, v in spec.items()}
    families = [(n, METRICS[n], samples[n]) for n in METRICS]
    families += [(n, help_by_name[n], gauge_samples[n]) for n in sorted(gauge_samples)]
    for name, text, series in families:
        out += [f"# HELP {name} {_help(text)}", f"# TYPE {name} gauge"]
        out += [_sample(name, dict(labels), _num(v)) for labels, v in series.items()]
    return "\n".join(out) + "\n"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# ------------------------------------------------------------------------- Markdown


def markdown(report: DoctorReport, max_rows: int = 50) -> str:
    out = [f"### netfix doctor: {headline(report)}", "",
           "| host | result |", "| --- | --- |"]
    for h in report.hosts:
        if h.error:
            result = f"**error**: {_md(h.error)}"
        else:
            sev = Counter(str(f.severity) for f in h.findings)
            result = ", ".join(f"{s.value} {sev[s.value]}" for s in SEVERITIES if sev[s.value])
            result = (f"**{result}**" if h.problems else (result or "ok"))
            for err in h.detector_errors.values():
                result += f"; **error**: {_md(err)}"
        out.append(f"| {_md(h.host)} | {result} |")
    rows = sorted(((h, f) for h in report.hosts for f in h.problems),
                  key=lambda r: (SEVERITIES.index(Severity(r[1].severity)), r[0].host))
    if rows:
        out += ["", "| severity | host | code | subject | finding | remedy |",
                "| --- | --- | --- | --- | --- | --- |"]
        for h, f in rows[:max_rows]:
            remedy = f.remedy.action or ("profile: " + ", ".join(
                sorted(f.remedy.comments) or sorted(f.remedy.profile)) if f.remedy.profile
                else "")
            out.append(f"| {f.severity} | {_md(h.host)} | {_md_code(f.code)} | "
                       f"{_md(f.subject)} | {_md(f.summary)} | {_md(remedy)} |")
        if len(rows) > max_rows:
            out += ["", f"… and {len(rows) - max_rows} more finding(s): see the JSON report."]
    out += ["", f"<sub>{SCHEMA} · netfix {__version__} · window {report.window:g} s · "
            f"checked {iso(report.started)} · exit code {report.exit_code}</sub>", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------- files


def write_reports(report: DoctorReport, junit_path: str | None = None,
                  prometheus_path: str | None = None,
                  markdown_path: str | None = None) -> list[Path]:
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
