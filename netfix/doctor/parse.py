"""Pure parsers for the kernel files the doctor reads, and the counter arithmetic the
detectors share. Every parser reads by header names or counts columns at run time:
these files grew columns over the kernel releases, and a parser that hard-codes one
layout silently reads the wrong column on the next kernel.

The detectors' sh prints each file after a marker line `== NAME`; `sections` splits that
output back up. A file the node does not have is simply not printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from netfix.doctor import LogLine, Sample


def sections(text: str | None) -> dict[str, str]:
    """`== NAME` marker lines -> the text up to the next marker."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (text or "").splitlines():
        if line.startswith("== "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in out.items()}


def kv(text: str | None) -> dict[str, str]:
    """`key value` lines (the sh's own format for single-value files)."""
    out = {}
    for line in (text or "").splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            out[key] = value.strip()
    return out


def files(text: str | None) -> dict[str, str]:
    """`path:value` lines, as `grep -H . FILE...` prints one-line files -> path -> value.
    (Paths from /proc and /sys never contain a colon: interface names cannot.)"""
    out = {}
    for line in (text or "").splitlines():
        path, sep, value = line.partition(":")
        if sep and path.startswith("/"):
            out[path] = value.strip()
    return out


def leaves(text: str | None) -> dict[str, str]:
    """`path:value` lines -> file name -> value (nf_conntrack_max -> "262144")."""
    out = {path.rsplit("/", 1)[-1]: value for path, value in files(text).items()}
    # Lines the sh prints itself in the same form (mem_total_kb:N).
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("/") and key.isidentifier():
            out[key] = value.strip()
    return out


def flag(text: str | None, key: str) -> bool:
    """`key 1` in the sh's own `key value` lines (`running 1`)."""
    return kv(text).get(key) == "1"


def to_int(value: str | None, default: int | None = None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


# ---------------------------------------------------------------- /proc/net/softnet_stat


@dataclass
class SoftnetRow:
    cpu: int
    processed: int
    dropped: int  # backlog full: net.core.netdev_max_backlog
    time_squeeze: int  # budget or time ran out with work left: netdev_budget(_usecs)
    received_rps: int = 0
    flow_limit: int = 0
    columns: int = 0


def softnet(text: str | None) -> list[SoftnetRow]:
    """One hex row per *online* CPU (net/core/net-procfs.c softnet_seq_show): 1 processed,
    2 dropped, 3 time_squeeze, 4-9 zero, 10 received_rps, 11 flow_limit_count (about 3.11+),
    12 backlog length and 13 CPU id (about 5.10+), 14-15 the two queue lengths (about 6.4+).
    Rows are mapped to CPUs by column 13 where present, else by position, which is only
    right while no CPU is offline (offline CPUs print no row)."""
    rows = []
    for index, line in enumerate(ln for ln in (text or "").splitlines() if ln.strip()):
        try:
            cols = [int(c, 16) for c in line.split()]
        except ValueError:
            continue
        if len(cols) < 3:
            continue
        rows.append(SoftnetRow(
            cpu=cols[12] if len(cols) >= 13 else index,
            processed=cols[0], dropped=cols[1], time_squeeze=cols[2],
            received_rps=cols[9] if len(cols) >= 10 else 0,
            flow_limit=cols[10] if len(cols) >= 11 else 0,
            columns=len(cols)))
    return rows


# ---------------------------------------------------------------------- /proc/softirqs


def softirqs(text: str | None) -> dict[str, dict[int, int]]:
    """`NET_RX: n n ...` rows under a `CPU0 CPU1 ...` header (one column per *possible*
    CPU, fs/proc/softirqs.c) -> name -> {cpu: count}. CPU numbers come from the header,
    since possible CPUs need not be numbered densely."""
    cpus: list[int] = []
    out: dict[str, dict[int, int]] = {}
    for line in (text or "").splitlines():
        words = line.split()
        if words and all(w.startswith("CPU") for w in words):
            cpus = [int(w[3:]) for w in words if w[3:].isdigit()]
        elif words and words[0].endswith(":") and cpus:
            values = [to_int(w, 0) or 0 for w in words[1:len(cpus) + 1]]
            out[words[0][:-1]] = dict(zip(cpus, values, strict=False))
    return out


# ------------------------------------------------------------ /proc/net/stat/nf_conntrack


def conntrack_stat(text: str | None) -> dict[str, int]:
    """Header line, then one `%08x` row per *possible* CPU
    (net/netfilter/nf_conntrack_standalone.c ct_cpu_seq_show). Summed over CPUs by the
    header's names, which changed: `searched` became `clashres` (5.10) and `delete_list`
    `chainlength`; 3.x has no `search_restart`. `entries` is the per-netns total repeated
    on every row: it is taken once, never summed. {} when there is no header."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    if not lines or not lines[0].split()[0].isalpha():
        return {}
    names = lines[0].split()
    total: dict[str, int] = {name: 0 for name in names}
    rows = 0
    for line in lines[1:]:
        try:
            values = [int(v, 16) for v in line.split()]
        except ValueError:
            continue
        rows += 1
        for name, value in zip(names, values, strict=False):
            if name == "entries":
                total[name] = value
            else:
                total[name] += value
    total["cpus"] = rows
    return total


# ------------------------------------------------------- /proc/net/netstat, /proc/vmstat


def netstat(text: str | None) -> dict[str, dict[str, int]]:
    """`TcpExt: names` followed by `TcpExt: values` (net/ipv4/proc.c netstat_seq_show),
    the same for IpExt and MPTcpExt -> {"TcpExt": {"ListenOverflows": 3, ...}}."""
    out: dict[str, dict[str, int]] = {}
    pending: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        prefix, _, rest = line.partition(":")
        words = rest.split()
        if not words:
            continue
        if prefix in pending:
            names = pending.pop(prefix)
            out[prefix] = {n: to_int(v, 0) or 0 for n, v in zip(names, words, strict=False)}
        else:
            pending[prefix] = words
    return out


def vmstat(text: str | None) -> dict[str, int]:
    """`name value` lines; oom_kill exists since 4.13."""
    return {k: v for k, v in ((k, to_int(v)) for k, v in kv(text).items()) if v is not None}


def pressure(text: str | None) -> dict[str, dict[str, float]]:
    """/proc/pressure/{memory,irq}: `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and
    `full ...` (irq has only `full`) -> {"some": {"avg10": 0.0, ..., "total": 0.0}}."""
    out: dict[str, dict[str, float]] = {}
    for line in (text or "").splitlines():
        words = line.split()
        if not words or words[0] not in ("some", "full"):
            continue
        values = {}
        for word in words[1:]:
            key, _, value = word.partition("=")
            try:
                values[key] = float(value)
            except ValueError:
                continue
        out[words[0]] = values
    return out


# --------------------------------------------------------- ethtool -S, sysfs statistics


def ethtool_stats(text: str | None) -> dict[str, int]:
    """`ethtool -S IF`: `NIC statistics:` then `     name: value` lines. Names are the
    driver's own (mlx5 rx_out_of_buffer, i40e port.rx_discards, ena queue_0_rx_page_...,
    virtio_net rx0_drops); the value is after the last ': ' since a few drivers put
    spaces or colons in names. Lines whose value is not a number are skipped."""
    out = {}
    for line in (text or "").splitlines():
        name, sep, value = line.strip().rpartition(": ")
        if sep and name and value.strip().lstrip("-").isdigit():
            out[name.strip()] = int(value)
    return out


def iface_lines(text: str | None) -> dict[str, dict[str, str]]:
    """`IF NAME VALUE` lines (the nic sh's interface list) -> IF -> NAME -> VALUE."""
    out: dict[str, dict[str, str]] = {}
    for line in (text or "").splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3:
            out.setdefault(parts[0], {})[parts[1]] = parts[2].strip()
    return out


def sysfs_stats(text: str | None) -> dict[str, dict[str, int]]:
    """`/sys/class/net/IF/statistics/NAME:VALUE` lines -> IF -> NAME -> value."""
    out: dict[str, dict[str, int]] = {}
    for path, value in files(text).items():
        parts = path.split("/")
        if len(parts) == 7 and parts[5] == "statistics" and value.isdigit():
            out.setdefault(parts[4], {})[parts[6]] = int(value)
    return out


# --------------------------------------------------------------------- kernel log lines

CONNTRACK_FULL = re.compile(r"nf_conntrack: (nf_conntrack: )?table full")
# Both forms print "Killed process PID (comm)"; the cgroup one after "Memory cgroup out
# of memory:", the global one after "Out of memory:" (mm/oom_kill.c __oom_kill_process).
OOM_KILL = re.compile(
    r"(?P<where>Memory cgroup out of memory|Out of memory)[^:]*: Killed process "
    r"(?P<pid>\d+) \((?P<comm>[^)]*)\)")


def conntrack_full_lines(klog: list[LogLine]) -> list[LogLine]:
    return [line for line in klog if CONNTRACK_FULL.search(line.message)]


@dataclass
class OomKill:
    pid: int
    comm: str
    cgroup: bool  # memory cgroup limit (a container) rather than the whole node
    line: LogLine = field(repr=False, default_factory=lambda: LogLine(0.0, ""))


def oom_kills(klog: list[LogLine]) -> list[OomKill]:
    out = []
    for line in klog:
        m = OOM_KILL.search(line.message)
        if m:
            out.append(OomKill(int(m["pid"]), m["comm"],
                               m["where"].startswith("Memory cgroup"), line))
    return out


# ------------------------------------------------------------------- counter arithmetic


def delta(before: int, after: int, width: int = 64) -> int:
    """after - before, allowing one wrap of a `width`-bit counter; a counter that went
    backwards without wrapping (driver reset, device re-created) counts as 0."""
    if after >= before:
        return after - before
    if width < 64 and before < (1 << width):
        return after + (1 << width) - before
    return 0


@dataclass
class Window:
    """One detector's two samples. `window` 0 means a single sample: `first` and `last`
    are then the same text and no rate exists (since boot only)."""

    first: str
    last: str
    seconds: float

    @property
    def rates(self) -> bool:
        return self.seconds > 0

    def rate(self, before: int, after: int, width: int = 64) -> float:
        return delta(before, after, width) / self.seconds if self.seconds > 0 else 0.0


def window(sample: Sample, name: str) -> Window:
    before = sample.before.get(name)
    after = sample.after.get(name)
    if before is None:
        before = after or ""
    if after is None or sample.window <= 0:
        # One sample: the runner may leave `after` out or repeat `before`.
        return Window(before, before if after is None else after, 0.0)
    return Window(before, after, sample.window)


def in_window(sample: Sample, line: LogLine) -> bool:
    """The kernel logged it within the sampling window (uptime clocks of the same boot)."""
    return sample.window > 0 and sample.uptime > 0 and line.uptime >= sample.uptime - sample.window
