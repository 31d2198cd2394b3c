"""netfix doctor: find what is wrong with a node's network, say why, and write the remedy
as a profile (diagnose -> remedy profile -> plan -> apply -> diagnose again).

One detector per symptom family, one contract (checked for every module by
tests/unit/test_doctor_contract.py). A module in this package is a detector when it has
`NAME`. It provides:

    NAME: str                        # "conntrack", "synflood", ...
    CODES: dict[str, str]            # every finding code it can return -> one line for --help
    detect(sample: Sample) -> list[Finding]

and its sh next to it, `netfix/doctor/<NAME>.sh` (package data), which defines two POSIX
sh functions: `once_<NAME>` (state read once: config, addresses, processes) and
`sample_<NAME>` (cumulative counters, read twice, `--window` seconds apart, inside the
same SSH session). Either may print nothing. Their output reaches `detect` as
`sample.once[NAME]`, `sample.before[NAME]` and `sample.after[NAME]`. The shared part
(`common.sh`) reads the kernel log once (`sample.klog`) and the node's clock and uptime.

Detectors are pure: text in, findings out; parsers for kernel files live in
`doctor/parse.py` and read files by their header names, counting columns at run time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import StrEnum
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from netfix.util import plugin_modules


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass
class LogLine:
    """One kernel log record: seconds since boot, and the wall time when it is known."""

    uptime: float
    message: str
    wall: str = ""  # ISO 8601 UTC, from the node's clock and uptime at sampling time


@dataclass
class Remedy:
    """What fixes a finding. `profile` is a netfix profile fragment (merged into the remedy
    profile that --fix-profile writes; {} when no knob fixes it), `comments` the comment
    for each value it sets, by dotted path ("conntrack.max" -> "table full: 1,204 drops/s
    at max 512"). `action` is what a person must do when no knob fixes it, or in
    addition."""

    profile: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    action: str = ""


@dataclass
class Finding:
    code: str  # stable, listed in its detector's CODES: "conntrack-drops", ...
    severity: Severity
    subject: str  # what it is about: "conntrack", "eth0", "port 80", "cpu 3"
    summary: str  # one line, with the key numbers
    why: str  # why it hurts
    evidence: dict[str, float | int | str] = field(default_factory=dict)  # the numbers
    remedy: Remedy = field(default_factory=Remedy)
    now: bool = False  # happening within the window (a rate), else seen since boot
    last_seen: str = ""  # wall time of the last kernel log line about it, if any
    detector: str = ""  # filled in by the runner


@dataclass
class Sample:
    """What one host's doctor script read."""

    host: str
    window: float  # seconds between the two counter samples, measured on the node (0: one)
    once: dict[str, str] = field(default_factory=dict)  # detector NAME -> output
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    klog: list[LogLine] = field(default_factory=list)
    uptime: float = 0.0
    cpus: int = 1
    kernel: str = ""
    # The node is a network namespace (or container) of a larger kernel: the kernel log,
    # tracepoints and host-global counters are the host's, never reported as the node's.
    netns: bool = False
    groups: list[str] = field(default_factory=list)  # inventory groups (fleet outliers)
    # --trace-drops: the runner's skb:kfree_skb part (doctor/drops.py parses it); None when
    # not asked for.
    trace: str | None = None


@dataclass(frozen=True)
class Files:
    """Files a detector reads with no process of its own. A detector module may declare
    `ONCE_FILES` and `SAMPLE_FILES`, section name -> Files: the runner reads every
    detector's files with one `grep -H` per sample (one process per file was most of a
    node's cost) and hands each detector `== section` parts as if its sh had printed them,
    before its sh's own output."""

    paths: tuple[str, ...]  # absolute; shell globs allowed; [A-Za-z0-9_./*-] only
    raw: bool = False  # the lines as in the file (like cat); default `path:line` (grep -H)


@runtime_checkable
class Detector(Protocol):
    NAME: str
    CODES: dict[str, str]

    def detect(self, sample: Sample) -> list[Finding]: ...


@functools.cache
def detectors() -> tuple[ModuleType, ...]:
    """Every detector module, by name."""
    return plugin_modules(__name__, __path__, "NAME")
