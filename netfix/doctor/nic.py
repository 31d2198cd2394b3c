"""nic: packets the NIC or its driver dropped before the kernel saw them (ring full, no
buffer, hardware FIFO overrun) and cloud allowance drops, per interface, from the driver's
`ethtool -S` counters (names differ per driver) and the generic sysfs statistics.

sysfs rx_dropped is kept apart: it also counts frames no protocol wanted (LLDP, IPv6
with IPv6 off) and grows on idle nodes, so it warns only at a real rate and share.
Interfaces without a device (veth, bridges, tunnels) never go above info.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netfix import ethtool
from netfix.doctor import Files, Finding, Remedy, Sample, Severity
from netfix.doctor.parse import (
    Window,
    ethtool_stats,
    flag,
    iface_lines,
    sections,
    sysfs_stats,
    window,
)

NAME = "nic"
SAMPLE_FILES = {"stats": Files(tuple(f"/sys/class/net/*/statistics/{k}" for k in (
    "rx_packets", "rx_dropped", "rx_missed_errors", "rx_fifo_errors")))}
CODES = {
    "nic-rx-drops": "the NIC or driver dropped received packets (ring full, no buffer, "
                    "FIFO): warning in the window, critical from 1000/s or 1 % of packets",
    "nic-allowance-exceeded": "ENA: the instance's bandwidth/pps/conntrack allowance was "
                              "exceeded and the hypervisor dropped packets",
    "nic-rx-dropped": "sysfs rx_dropped grows: warning from 100/s and 0.1 % of packets",
}

# Driver counters that are receive drops (DOMAIN.md "Diagnostics"). Totals by name...
HW_TOTALS = {
    "rx_out_of_buffer", "rx_discards_phy",  # mlx5
    "rx_missed_errors", "rx_no_buffer_count", "rx_no_dma_resources",  # ixgbe, e1000e
    "port.rx_discards",  # i40e
    "rx_drops",  # virtio_net total (newer kernels print it besides the per-queue ones)
}
I40E_TOTALS = {"rx_dropped"}  # i40e fills it from the VSI's hardware discards
# ...and per-queue counters, summed per pattern.
HW_QUEUES = (
    re.compile(r"^rx_queue_(\d+)_drops$"),  # virtio_net (older names)
    re.compile(r"^rx(\d+)_drops$"),  # virtio_net
    re.compile(r"^queue_(\d+)_rx_page_alloc_fail$"),  # ena
)
ALLOWANCE = re.compile(r"_allowance_exceeded$")  # ena: bw_in, bw_out, pps, conntrack, ...
SYSFS_HW = ("rx_missed_errors", "rx_fifo_errors")

CRIT_RATE, CRIT_SHARE = 1000.0, 0.01
SOFT_RATE, SOFT_SHARE = 100.0, 0.001


def _counters(stats: dict[str, int], sysfs: dict[str, int], driver: str) -> dict[str, int]:
    """The drop counters of one interface: name -> value, per-queue ones summed under
    their pattern (`rx*_drops`), sysfs ones as `sysfs:NAME`."""
    out: dict[str, int] = {}
    for name, value in stats.items():
        if name in HW_TOTALS or (driver == "i40e" and name in I40E_TOTALS):
            out[name] = value
            continue
        for pattern in HW_QUEUES:
            if pattern.match(name):
                key = pattern.pattern.strip("^$").replace(r"(\d+)", "N")
                out[key] = out.get(key, 0) + value
    for name in SYSFS_HW:
        if name in sysfs:
            out[f"sysfs:{name}"] = sysfs[name]
    return out


def _ring_remedy(iface: str, ring_text: str | None, why: str) -> tuple[Remedy, dict]:
    lim = ethtool.limits(ethtool.Output("g", "text", 0, ring_text or ""), ethtool.RING_KEYS)
    current, maximum = lim.current.get("rx"), lim.maximum.get("rx") or 0
    evidence = {"ring_rx": current or 0, "ring_rx_max": maximum}
    if current and maximum and current < maximum:
        return Remedy(
            profile={"nic": {"interfaces": [{"match": {"name": iface},
                                             "rings": {"rx": "max"}}]}},
            comments={"nic.interfaces": f"{why}; rx ring {current} of {maximum}"}), evidence
    return Remedy(action=(
        f"The rx ring of {iface} is at its maximum ({maximum})" if maximum else
        f"{iface} reports no ring sizes") + ": add channels (`channels: {combined: max}`) "
        "so more queues and CPUs share the load, or raise coalescing (`adaptive-rx: on`)."
    ), evidence


@dataclass
class Iface:
    """One interface's two samples: sysfs statistics and `ethtool -S` counters."""

    name: str
    hw: bool  # backed by a device; virtual interfaces are capped at info
    driver: str
    sysfs: tuple[dict[str, int], dict[str, int]]
    stats: tuple[dict[str, int], dict[str, int]]
    rx_s: float  # received packets per second

    def severity(self, severity: Severity) -> Severity:
        return severity if self.hw else Severity.INFO


def detect(sample: Sample) -> list[Finding]:
    w = window(sample, NAME)
    first, last = sections(w.first), sections(w.last)
    once = sections(sample.once.get(NAME))
    ifaces = iface_lines(once.get("ifaces"))
    irqbalance = flag(once.get("irqbalance"), "running")
    sys0, sys1 = sysfs_stats(first.get("stats")), sysfs_stats(last.get("stats"))
    found = []
    for name in sorted(set(sys1) - {"lo"}):
        info = ifaces.get(name, {})
        s0, s1 = sys0.get(name, {}), sys1.get(name, {})
        iface = Iface(name, info.get("kind") == "hw", info.get("driver", ""), (s0, s1),
                      (ethtool_stats(first.get(f"ethtool {name}")),
                       ethtool_stats(last.get(f"ethtool {name}"))),
                      w.rate(s0.get("rx_packets", 0), s1.get("rx_packets", 0)))
        found += _drops(iface, w, once.get(f"ring {name}"), irqbalance)
        found += _allowance(iface, w)
        found += _soft_drops(iface, w)
    return found


def _drops(iface: Iface, w: Window, ring_text: str | None, irqbalance: bool) -> list[Finding]:
    c0 = _counters(iface.stats[0], iface.sysfs[0], iface.driver)
    c1 = _counters(iface.stats[1], iface.sysfs[1], iface.driver)
    rates = {k: w.rate(c0.get(k, 0), v) for k, v in c1.items()}
    drop_s = max(rates.values(), default=0.0)  # max, not sum: totals repeat queues
    boot = max(c1.values(), default=0)
    if not drop_s and not boot:
        return []
    top = max(c1, key=lambda k: (rates.get(k, 0.0), c1[k]))
    share = drop_s / (iface.rx_s + drop_s) if drop_s else 0.0
    severity = (Severity.CRITICAL if drop_s >= CRIT_RATE or share >= CRIT_SHARE
                else Severity.WARNING) if drop_s > 0 else Severity.INFO
    remedy, ring = _ring_remedy(iface.name, ring_text,
                                f"nic-rx-drops: {drop_s:.1f}/s on {iface.name} ({top})")
    if not irqbalance and iface.hw:
        remedy.action = (remedy.action + " irqbalance is not running: the queue interrupts "
                         "may all land on one CPU.").strip()
    return [Finding(
        code="nic-rx-drops", severity=iface.severity(severity), subject=iface.name,
        summary=(f"{iface.name} drops {drop_s:.1f} packets/s on receive ({top})" if drop_s
                 else f"{iface.name}: {boot} receive drops since boot ({top})"),
        why="The NIC had no free buffer for arriving packets (ring full, CPU too slow to "
            "refill it, or no memory): they are lost before the kernel sees them.",
        evidence={"drops_per_s": round(drop_s, 2), "drops": boot, "counter": top,
                  "rx_packets_per_s": round(iface.rx_s, 1), "share_pct": round(100 * share, 3),
                  "driver": iface.driver, **ring,
                  **{f"{k}_per_s": round(v, 2) for k, v in rates.items() if v}},
        remedy=remedy, now=drop_s > 0)]


def _allowance(iface: Iface, w: Window) -> list[Finding]:
    e0, e1 = iface.stats
    total = {k: v for k, v in e1.items() if ALLOWANCE.search(k)}
    rates = {k: w.rate(e0.get(k, 0), v) for k, v in total.items()}
    if not any(rates.values()) and not any(total.values()):
        return []
    top = max(total, key=lambda k: (rates[k], total[k]))
    now = rates[top] > 0
    return [Finding(
        code="nic-allowance-exceeded",
        severity=iface.severity(Severity.WARNING if now else Severity.INFO),
        subject=iface.name,
        summary=f"{iface.name}: {top} {rates[top]:.1f}/s, {total[top]} since boot",
        why="The cloud hypervisor enforces per-instance limits on bandwidth, packets per "
            "second and tracked connections, and drops what exceeds them.",
        evidence={"counter": top, "per_s": round(rates[top], 2),
                  **{k: v for k, v in total.items() if v}},
        remedy=Remedy(action="Move the node to an instance type with a higher allowance, "
                             "or spread the traffic over more nodes; "
                             "conntrack_allowance_exceeded: fewer tracked flows (security "
                             "groups track every connection)."),
        now=now)]


def _soft_drops(iface: Iface, w: Window) -> list[Finding]:
    s0, s1 = iface.sysfs
    soft_s = w.rate(s0.get("rx_dropped", 0), s1.get("rx_dropped", 0))
    if soft_s <= 0:
        return []  # since boot it is nearly always > 0 and says nothing
    share = soft_s / (iface.rx_s + soft_s)
    loud = soft_s >= SOFT_RATE and share >= SOFT_SHARE
    return [Finding(
        code="nic-rx-dropped",
        severity=iface.severity(Severity.WARNING if loud else Severity.INFO),
        subject=iface.name,
        summary=f"{iface.name} rx_dropped {soft_s:.1f}/s ({100 * share:.2f} % of packets)",
        why="The kernel discarded received frames: a full backlog, a filter, or frames no "
            "protocol wanted (which is harmless).",
        evidence={"rx_dropped_per_s": round(soft_s, 2), "rx_packets_per_s":
                  round(iface.rx_s, 1), "share_pct": round(100 * share, 3)},
        remedy=Remedy(action="Compare with softnet-backlog-drops; if those are zero, "
                             "capture with `tcpdump -e` to see which frames are dropped "
                             "(LLDP, unknown ethertypes)."),
        now=True)]
