"""Run the doctor across hosts: one read-only SSH command per host, hosts in parallel.

Each host runs one script: `common.sh` (clock, uptime, CPUs, kernel, netns detection and
the kernel log, read once and filtered), every detector's sh, then every `once_X`, every
`sample_X`, `sleep WINDOW`, every `sample_X` again. Each part of the output starts with a
marker line `@@ND <part> <detector>`; the parser splits on them into a `Sample` and hands
it to each detector's `detect`. The window is measured on the node (its uptime before the
first and before the second sample), so a slow link does not inflate a rate.

A detector that raises is that host's error for that detector (the other detectors'
findings stand); a host that cannot be reached or whose output is cut off is that host's
error (the other hosts carry on). Nothing here prints.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from types import ModuleType

from netfix import transport
from netfix.doctor import SEVERITY_ORDER, Files, Finding, LogLine, Sample, Severity, detectors
from netfix.engine import host_error, parallel
from netfix.errors import NetfixError
from netfix.inventory import Host

__all__ = ["Files"]  # detectors declare their files with it; the runner reads them

SCHEMA = "netfix-doctor/v1"
MARK = "@@ND "
FIRST = "once+before"  # the part of the first grep: the once files and the first sample
MAX_WINDOW = 3600.0
MAX_TRACE = 300.0  # --trace-drops seconds
# Seconds the node may take beyond the window (kernel log, iptables-save of a big ruleset).
SLACK = 90.0
EXIT_OK, EXIT_ERROR, EXIT_FINDINGS = 0, 1, 2

Progress = Callable[[str], None]


@dataclass
class HostDoctor:
    host: str
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # the host could not be checked at all
    detector_errors: dict[str, str] = field(default_factory=dict)  # NAME -> why it failed
    notes: list[str] = field(default_factory=list)  # e.g. "kernel log not readable"
    checked_at: float = 0.0
    duration: float = 0.0
    window: float = 0.0  # as measured on the node
    uptime: float = 0.0
    kernel: str = ""
    netns: bool = False
    detectors: list[str] = field(default_factory=list)  # the detectors that ran
    profile: str | None = None  # the host's profile in the inventory (for --fix-profile)
    groups: list[str] = field(default_factory=list)
    sample: Sample | None = None  # what the node read (not in the JSON report)

    @property
    def problems(self) -> list[Finding]:
        """Findings at warning or above: what makes the exit code 2."""
        return [f for f in self.findings if f.severity != Severity.INFO]

    @property
    def status(self) -> str:
        if self.error or self.detector_errors:
            return "error"
        return "findings" if self.problems else "ok"


@dataclass
class DoctorReport:
    hosts: list[HostDoctor]
    window: float = 0.0  # as asked (--window)
    started: float = field(default_factory=time.time)
    finished: float = 0.0

    @property
    def findings(self) -> list[Finding]:
        return [f for h in self.hosts for f in h.findings]

    @property
    def has_errors(self) -> bool:
        return any(h.status == "error" for h in self.hosts)

    @property
    def exit_code(self) -> int:
        # An error wins: a host (or detector) that was not checked is never "healthy".
        if self.has_errors:
            return EXIT_ERROR
        return EXIT_FINDINGS if any(h.problems for h in self.hosts) else EXIT_OK


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITY_ORDER[Severity(f.severity)], f.detector,
                                           f.code, f.subject))


# ------------------------------------------------------------------------- the script


def _sh(name: str) -> str:
    try:
        return resources.files("netfix.doctor").joinpath(name).read_text()
    except OSError as e:
        raise NetfixError(f"netfix/doctor/{name} is missing ({e.strerror or e}): every "
                          "detector needs its sh next to it (package data)") from None


FILE_PATH = re.compile(r"/[A-Za-z0-9_./*-]+")


def _files(mods: Sequence[ModuleType], attr: str) -> list[str]:
    """Every path the detectors' `attr` (ONCE_FILES / SAMPLE_FILES) names, once each."""
    paths: list[str] = []
    for m in mods:
        for f in getattr(m, attr, {}).values():
            for p in f.paths:  # code, never input; still, it reaches the shell
                if not FILE_PATH.fullmatch(p) or ".." in p:
                    raise NetfixError(f"detector {m.NAME}: file path {p!r} is not plain")
                paths.append(p)
    return list(dict.fromkeys(paths))


def _grep(part: str, paths: list[str]) -> list[str]:
    if not paths:
        return []
    return [f"nd_mark files {part}; grep -H . {' '.join(paths)} 2>/dev/null"]


def build_script(mods: Sequence[ModuleType], window: float,
                 probe: Sequence[str] = (), trace: float = 0.0) -> str:
    """The whole script one host runs, read-only but for `trace`. `window` is a validated
    number; `probe` (--probe-mtu) the IP addresses of the nodes to ping, each checked to be
    an address; `trace` (--trace-drops) seconds of the skb:kfree_skb tracepoint, started
    just before the first sample (so it runs concurrently with the window, or as its own
    window with --window 0), turned off after `trace` seconds and read at once; common.sh
    says how it is capped and always turned off."""
    import ipaddress
    import shlex

    names = [m.NAME for m in mods]
    once, sample = _files(mods, "ONCE_FILES"), _files(mods, "SAMPLE_FILES")
    targets = [str(ipaddress.ip_address(a)) for a in probe]
    for n in names:  # NAME is code, never input; still, it reaches the shell
        if not n.isidentifier():
            raise NetfixError(f"detector name {n!r} is not a plain identifier")
    parts = ["#!/bin/sh", "# netfix doctor (read-only)", "LC_ALL=C; export LC_ALL",
             f"ND_WINDOW={window:g}", f"ND_PROBE={shlex.quote(' '.join(targets))}",
             f"ND_TRACE={trace:g}", "export ND_WINDOW ND_PROBE ND_TRACE",
             _sh("common.sh")]
    if trace > 0:  # the one part that writes on the node: only when asked for
        parts.append(_sh("trace.sh"))
    parts += [_sh(f"{n}.sh") for n in names]
    body = ["nd_common"]
    body += [f"nd_mark once {n}; once_{n} 2>/dev/null" for n in names]
    trace_end = ["nd_trace_off", "nd_trace_read", "nd_trace_cleanup"]
    if trace > 0:
        body += ["nd_trace_start"]
    # The files read once are read with the first sample: one grep (one process) for both;
    # the parser gives its lines to both parts (each detector takes the paths it declared).
    first = list(dict.fromkeys(once + sample))
    body += ["nd_mark t before; nd_uptime", *_grep(FIRST, first)]
    body += [f"nd_mark before {n}; sample_{n} 2>/dev/null" for n in names]
    if trace > 0 and trace <= window:  # the trace ends within the window
        body += [f"sleep {trace:g}", *trace_end]
        if window > trace:
            body += [f"sleep {window - trace:g}"]
    elif window > 0:
        body += [f"sleep {window:g}"]
    if window > 0:
        body += ["nd_mark t after; nd_uptime", *_grep("after", sample)]
        body += [f"nd_mark after {n}; sample_{n} 2>/dev/null" for n in names]
    if trace > window:  # longer than the window, or its own window (--window 0)
        body += [f"sleep {trace - window:g}", *trace_end]
    body += ["nd_mark end -"]
    return "\n".join(parts + body) + "\n"


# ------------------------------------------------------------------------- parsing


def split_output(text: str) -> dict[tuple[str, str], str]:
    """`@@ND part name` sections -> {(part, name): text}; each text ends with one newline
    (or is empty)."""
    out: dict[tuple[str, str], list[str]] = {}
    current: list[str] | None = None
    for line in text.split("\n"):
        if line.startswith(MARK):
            words = line[len(MARK):].split()
            if len(words) == 2:
                current = out.setdefault((words[0], words[1]), [])
                continue
        if current is not None:
            current.append(line)
    parts = {}
    for key, lines in out.items():
        body = "\n".join(lines).strip("\n")
        parts[key] = body + "\n" if body else ""
    return parts


def _float(text: str, what: str) -> float:
    try:
        return float(text.strip().split()[0])
    except (ValueError, IndexError):
        raise NetfixError(f"the node's doctor output has no valid {what}: {text[:80]!r}") \
            from None


def wall_time(clock: float, uptime: float, at_uptime: float) -> str:
    """ISO 8601 UTC of a kernel timestamp (seconds since boot), from the node's clock."""
    ts = clock - (uptime - at_uptime)
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_klog(text: str, clock: float, uptime: float) -> list[LogLine]:
    lines = []
    for line in text.splitlines():
        head, _, message = line.partition(" ")
        try:
            at = float(head)
        except ValueError:
            continue
        lines.append(LogLine(at, message, wall_time(clock, uptime, at) if clock else ""))
    return lines


def by_path(text: str) -> dict[str, list[str]]:
    """`grep -H` output -> path -> its lines, in grep's order. (/proc and /sys paths never
    hold a colon: interface names cannot.)"""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if sep and path.startswith("/"):
            out.setdefault(path, []).append(rest)
    return out


def _matching(patterns: Sequence[str], lines: dict[str, list[str]]) -> set[str]:
    """The paths of `lines` that match one of `patterns`: most are literal paths (a dict
    look-up); fnmatch, one compiled pattern per glob, only for the globs."""
    out: set[str] = set()
    for p in patterns:
        if any(c in p for c in "*?["):
            out.update(fnmatch.filter(lines, p))
        elif p in lines:
            out.add(p)
    return out


def file_sections(mod: ModuleType, attr: str, lines: dict[str, list[str]]) -> str:
    """A detector's declared files as the `== section` text its parsers read (in the
    grep's order)."""
    out = []
    for section, f in getattr(mod, attr, {}).items():
        wanted = _matching(f.paths, lines)
        body = [line if f.raw else f"{path}:{line}"
                for path, got in lines.items() if path in wanted for line in got]
        if body:
            out += [f"== {section}", *body]
    return "\n".join(out) + "\n" if out else ""


def parse_sample(host: str, text: str, names: Sequence[str],
                 groups: Sequence[str] = (), mods: Sequence[ModuleType] = ()
                 ) -> tuple[Sample, list[str]]:
    """One host's output -> (Sample, notes). Raises NetfixError on a cut-off output."""
    parts = split_output(text)
    if ("end", "-") not in parts:
        raise NetfixError("the doctor script's output is incomplete (the node or the "
                          "connection stopped it half-way); run again")
    common = {}
    for line in parts.get(("common", "-"), "").splitlines():
        key, _, value = line.partition(" ")
        common[key] = value.strip()
    # no clock where the kernel log is not read (netns): nothing to date
    clock = _float(common["clock"], "clock") if "clock" in common else 0.0
    uptime = _float(common.get("uptime", ""), "uptime")
    before_t = _float(parts.get(("t", "before"), ""), "sample time")
    after_t = parts.get(("t", "after"))
    window = max(0.0, _float(after_t, "sample time") - before_t) if after_t else 0.0
    sample = Sample(host=host, window=round(window, 3), uptime=uptime,
                    kernel=common.get("kernel", ""), netns=common.get("netns") == "1",
                    groups=list(groups))
    try:
        sample.cpus = max(1, int(common.get("cpus", "1")))
    except ValueError:
        sample.cpus = 1
    notes = []
    source = common.get("klog", "none")
    if source == "none":
        notes.append("kernel log not readable here (no dmesg, no /dev/kmsg access): the "
                     "log-based checks (table full, SYN flooding, OOM) saw nothing")
    elif source == "skipped":
        notes.append("network namespace of a larger kernel: the kernel log and host-global "
                     "counters are the host's, not read as this node's")
    if common.get("uid") not in (None, "0"):
        notes.append(f"not root on the node (uid {common.get('uid')}): some files may be "
                     "unreadable")
    sample.klog = parse_klog(parts.get(("klog", "-"), ""), clock, uptime)
    sample.trace = parts.get(("trace", "-"))
    if sample.trace is not None and sample.netns:
        notes.append("network namespace of a larger kernel: --trace-drops not run here (the "
                     "skb:kfree_skb tracepoint sees the whole host's drops, not this node's)")
    first = by_path(parts.get(("files", FIRST), ""))
    files = {"once": first, "before": first, "after": by_path(parts.get(("files", "after"), ""))}
    by_name = {m.NAME: m for m in mods}
    for n in names:
        mod = by_name.get(n)

        def read(part: str, attr: str, n: str = n, mod: ModuleType | None = mod) -> str:
            own = parts.get((part, n), "")
            return file_sections(mod, attr, files[part]) + own if mod else own

        sample.once[n] = read("once", "ONCE_FILES")
        sample.before[n] = read("before", "SAMPLE_FILES")
        # With --window 0 there is one sample: `after` repeats it (deltas are 0).
        sample.after[n] = read("after", "SAMPLE_FILES") if after_t else sample.before[n]
    return sample, notes


# ------------------------------------------------------------------------- running


def diagnose(sample: Sample, mods: Sequence[ModuleType]) -> tuple[list[Finding], dict[str, str]]:
    """Every detector on one sample; a detector that raises is an error for it alone."""
    findings, errors = [], {}
    for mod in mods:
        try:
            found = list(mod.detect(sample))
            for f in found:
                if not isinstance(f, Finding):
                    raise TypeError(f"detect() returned {type(f).__name__}, not Finding")
                f.detector = mod.NAME
                f.severity = Severity(f.severity)
        except Exception as e:  # one detector's bug never hides another's findings
            errors[mod.NAME] = f"detector {mod.NAME} failed: {host_error(e)}"
            continue
        findings += found
    return sort_findings(findings), errors


def check_host(host: Host, window: float, mods: Sequence[ModuleType] | None = None,
               script: str | None = None, probe: Sequence[str] = (),
               trace: float = 0.0) -> HostDoctor:
    mods = detectors() if mods is None else mods
    hd = HostDoctor(host.name, checked_at=time.time(), detectors=[m.NAME for m in mods],
                    profile=host.profile, groups=list(host.groups))
    started = time.monotonic()
    try:
        res = transport.run(host, script or build_script(mods, window, probe, trace),
                            timeout=max(window, trace) + SLACK)
        if res.rc != 0 and "@@ND end" not in res.stdout:
            raise NetfixError(f"doctor script failed (exit {res.rc}): "
                              f"{res.stderr.strip()[:300]}")
        sample, hd.notes = parse_sample(host.name, res.stdout, hd.detectors, host.groups,
                                        mods)
        hd.sample, hd.window, hd.uptime = sample, sample.window, sample.uptime
        hd.kernel, hd.netns = sample.kernel, sample.netns
        hd.findings, hd.detector_errors = diagnose(sample, mods)
    except Exception as e:
        hd.error = host_error(e)
    hd.duration = time.monotonic() - started
    return hd


def run(hosts: list[Host], window: float = 5.0, progress: Progress | None = None,
        mods: Sequence[ModuleType] | None = None,
        probe: Sequence[str] | None = None, trace: float = 0.0) -> DoctorReport:
    """All hosts in parallel: with a window W the whole run takes about W, not W per host.
    `trace` > 0: --trace-drops for that many seconds (concurrently with the window)."""
    if not 0 <= window <= MAX_WINDOW:
        raise NetfixError(f"--window must be between 0 and {MAX_WINDOW:g} seconds")
    if not 0 <= trace <= MAX_TRACE:
        raise NetfixError(f"--trace-drops must be between 0 and {MAX_TRACE:g} seconds")
    mods = detectors() if mods is None else tuple(mods)
    if trace > 0 and "drops" not in [m.NAME for m in mods]:
        trace = 0.0  # nothing would read it
    script = build_script(mods, window, probe or (), trace)
    report = DoctorReport([], window=window)

    def one(host: Host) -> HostDoctor:
        hd = check_host(host, window, mods, script, trace=trace)
        if progress:
            if hd.error:
                progress(f"{host.name}: ERROR {hd.error}")
            else:
                worst = hd.findings[0].severity if hd.findings else "ok"
                progress(f"{host.name}: {len(hd.problems)} finding(s) at warning or above"
                         + (f" (worst {worst})" if hd.problems else "")
                         + "".join(f"; {e}" for e in hd.detector_errors.values()))
        return hd

    report.hosts = parallel(hosts, one)
    fleet_outliers(report.hosts, mods)
    report.finished = time.time()
    return report


def fleet_outliers(hosts: Sequence[HostDoctor], mods: Sequence[ModuleType]) -> None:
    """After all hosts are sampled: each host's values against its inventory group's
    majority (netfix.doctor.fleet), added to that host's findings as detector `fleet`."""
    from netfix.doctor import fleet

    if not any(m.NAME == fleet.NAME for m in mods):
        return
    checked = [h for h in hosts if h.sample is not None]
    found = fleet.outliers([h.sample for h in checked])
    for h in checked:
        for f in found.get(h.host, []):
            f.detector = fleet.NAME
        h.findings = sort_findings(h.findings + found.get(h.host, []))
