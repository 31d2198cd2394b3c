"""memory: the OOM killer and memory pressure stall the node's packet processing (the
kernel reclaims and kills with softirqs waiting; a process with hundreds of threads takes
seconds to die), which shows up as retransmits and timeouts that look like a network
fault. OOM kills from the kernel log (global vs memory cgroup, who was killed),
`oom_kill` in /proc/vmstat, PSI memory and irq pressure.

OOM kills are events without a rate: one within the window is now (critical for a
global OOM), one within the last hour is recent (warning), older ones are info. The
kernel log, vmstat and PSI are host-global: nothing is reported inside a network
namespace.
"""

from __future__ import annotations

from collections import Counter

from netfix.doctor import Files, Finding, Remedy, Sample, Severity
from netfix.doctor.parse import in_window, oom_kills, pressure, sections, vmstat, window

NAME = "memory"
# /proc/vmstat whole (about 180 short lines): its parser keys by name.
SAMPLE_FILES = {"vmstat": Files(("/proc/vmstat",), raw=True),
                "psi_memory": Files(("/proc/pressure/memory",), raw=True),
                "psi_irq": Files(("/proc/pressure/irq",), raw=True)}
CODES = {
    "memory-oom-kill": "the global OOM killer killed processes (critical in the window, "
                       "warning within the hour, else info)",
    "memory-cgroup-oom-kill": "a memory cgroup (container) limit killed processes "
                              "(warning in the window or within the hour, else info)",
    "memory-pressure": "PSI memory: some avg10 >= 10 % (warning), full avg10 >= 10 % "
                       "(critical)",
    "memory-irq-pressure": "PSI irq: full avg10 >= 10 % (warning)",
}

RECENT = 3600.0  # seconds: an OOM kill within the last hour still explains today's stalls
PSI_LIMIT = 10.0  # percent of wall time stalled over the last 10 s


def _oom_findings(sample: Sample, v0: dict, v1: dict, rates: bool) -> list[Finding]:
    kills = oom_kills(sample.klog)
    vm_delta = max(0, v1.get("oom_kill", 0) - v0.get("oom_kill", 0)) if rates else 0
    found = []
    for cgroup in (False, True):
        mine = [k for k in kills if k.cgroup == cgroup]
        # vmstat counts both kinds; alone (no log line at all: the ring buffer was
        # overwritten, or the lines rate-limited away) it is reported as a global kill.
        if not mine and (cgroup or kills or not (vm_delta or v1.get("oom_kill", 0))):
            continue
        now = any(in_window(sample, k.line) for k in mine) or (not kills and vm_delta > 0)
        recent = sample.uptime > 0 and any(k.line.uptime >= sample.uptime - RECENT
                                           for k in mine)
        if now:
            severity = Severity.WARNING if cgroup else Severity.CRITICAL
        else:
            severity = Severity.WARNING if recent else Severity.INFO
        names = Counter(k.comm for k in mine)
        last = mine[-1] if mine else None
        who = last.comm if last else "the killed processes"
        code = "memory-cgroup-oom-kill" if cgroup else "memory-oom-kill"
        count = len(mine) or v1.get("oom_kill", 0)
        found.append(Finding(
            code=code, severity=severity, subject=who,
            summary=(f"{'memory cgroup' if cgroup else 'global'} OOM killer: {count} kill(s)"
                     + (f", last {last.comm} (pid {last.pid})" if last else " (vmstat)")),
            why="While the OOM killer reclaims and kills, the CPU it runs on processes no "
                "packets; a victim with hundreds of threads takes seconds to die, seen as "
                "retransmits and timeouts on this node only.",
            evidence={"kills": count, "process": who, "pid": last.pid if last else 0,
                      "processes": ", ".join(f"{n} x{c}" for n, c in names.most_common()),
                      "oom_kill_delta": vm_delta, "oom_kill": v1.get("oom_kill", 0)},
            remedy=Remedy(action=f"Give {who} more memory (raise its container limit or "
                                 "the node's RAM, or move it): the OOM killer stalls packet "
                                 "processing."),
            now=now, last_seen=last.line.wall if last else ""))
    return found


def detect(sample: Sample) -> list[Finding]:
    if sample.netns:
        return []
    w = window(sample, NAME)
    last = sections(w.last)
    found = _oom_findings(sample, vmstat(sections(w.first).get("vmstat")),
                          vmstat(last.get("vmstat")), w.rates)
    mem = pressure(last.get("psi_memory"))
    some = mem.get("some", {}).get("avg10", 0.0)
    full = mem.get("full", {}).get("avg10", 0.0)
    if some >= PSI_LIMIT or full >= PSI_LIMIT:
        found.append(Finding(
            code="memory-pressure",
            severity=Severity.CRITICAL if full >= PSI_LIMIT else Severity.WARNING,
            subject="memory",
            summary=f"memory pressure: some {some:.1f} %, full {full:.1f} % (avg10)",
            why="Tasks stall on memory reclaim; softirq work that allocates (socket "
                "buffers, conntrack entries) waits with them, and an OOM kill follows.",
            evidence={"some_avg10": some, "full_avg10": full,
                      "some_avg60": mem.get("some", {}).get("avg60", 0.0)},
            remedy=Remedy(action="Find the cgroups under pressure (memory.pressure in "
                                 "/sys/fs/cgroup) and give them more memory, or move "
                                 "workloads off this node."),
            now=True))
    irq = pressure(last.get("psi_irq")).get("full", {}).get("avg10", 0.0)
    if irq >= PSI_LIMIT:
        found.append(Finding(
            code="memory-irq-pressure", severity=Severity.WARNING, subject="irq",
            summary=f"irq pressure: full {irq:.1f} % (avg10)",
            why="Interrupt and softirq handling took that share of the time from tasks: "
                "the receive path is saturating CPUs.",
            evidence={"irq_full_avg10": irq},
            remedy=Remedy(action="See the softnet and nic findings: spread receive work "
                                 "over more CPUs (RPS, channels, irqbalance)."),
            now=True))
    return found
