"""softnet: the per-CPU receive path between the NIC and the protocols. A full backlog
drops packets (netdev_max_backlog), an exhausted budget defers work to ksoftirqd and
adds latency (netdev_budget, netdev_budget_usecs), and one CPU doing all of NET_RX caps
the node at one core's worth of packets (one queue, no RPS, IRQs pinned).

All of it is host-global: inside a network namespace these are the host's numbers, so
the detector says nothing there.
"""

from __future__ import annotations

from netfix.doctor import Files, Finding, Remedy, Sample, Severity
from netfix.doctor.parse import flag, leaves, sections, softirqs, softnet, to_int, window

NAME = "softnet"
ONCE_FILES = {"settings": Files(tuple(f"/proc/sys/net/core/{k}" for k in (
    "netdev_max_backlog", "netdev_budget", "netdev_budget_usecs")))}
# /proc/softirqs whole: its parser keys rows by name, so the other rows cost nothing.
SAMPLE_FILES = {"softnet_stat": Files(("/proc/net/softnet_stat",), raw=True),
                "softirqs": Files(("/proc/softirqs",), raw=True)}
CODES = {
    "softnet-backlog-drops": "a CPU's backlog was full and packets were dropped "
                             "(softnet_stat dropped); warning in the window, critical "
                             "from 100/s",
    "softnet-time-squeeze": "NET_RX ran out of budget or time with packets left "
                            "(time_squeeze); warning from 10/s",
    "softnet-rx-one-cpu": "one CPU handles > 80 % of NET_RX softirqs on a node with 2 or "
                          "more CPUs (warning)",
}

CRIT_DROPS = 100.0  # per second
WARN_SQUEEZE = 10.0  # per second: a few squeezes a second are normal under load
ONE_CPU_SHARE = 0.80
# NET_RX softirqs per second below which the spread says nothing (an idle node's few
# interrupts land wherever they land).
MIN_NET_RX = 1000.0


def _raise(settings: dict, key: str, floor: int) -> str:
    current = to_int(settings.get(key), 0) or 0
    return f">={max(2 * current, floor)}"


def _rps_remedy(once: dict[str, str], cpus: int) -> tuple[dict, dict, bool]:
    """The RPS fragment when the default-route interfaces have fewer rx queues than CPUs
    and RPS off; (profile, comments, rps_on)."""
    masks = [line.split() for line in once.get("rps", "").splitlines() if line.strip()]
    rps_on = any(parts[-1].replace(",", "").strip("0") for parts in masks if parts)
    if masks and not rps_on and len(masks) < cpus:
        return ({"nic": {"interfaces": [{"match": {"default_route": True},
                                         "rps": {"cpus": "auto"}}]}},
                {"nic.interfaces": f"softnet-rx-one-cpu: {len(masks)} rx queue(s) for "
                                   f"{cpus} CPUs and RPS off: spread receive work"}, False)
    return {}, {}, rps_on


def detect(sample: Sample) -> list[Finding]:
    if sample.netns:
        return []
    w = window(sample, NAME)
    first, last = sections(w.first), sections(w.last)
    once = sections(sample.once.get(NAME))
    settings = leaves(once.get("settings"))
    rows0 = {r.cpu: r for r in softnet(first.get("softnet_stat"))}
    rows1 = {r.cpu: r for r in softnet(last.get("softnet_stat"))}
    cpus = len(rows1) or sample.cpus

    def per_cpu(attr: str) -> dict[int, float]:
        return {cpu: w.rate(getattr(rows0[cpu], attr), getattr(r, attr), 32)
                for cpu, r in rows1.items() if cpu in rows0}

    return (_backlog(per_cpu("dropped"), rows1, settings)
            + _squeeze(sum(per_cpu("time_squeeze").values()), settings)
            + _one_cpu(w, first, last, once, cpus))


def _backlog(drops: dict[int, float], rows: dict, settings: dict) -> list[Finding]:
    drop_s = sum(drops.values())
    boot_drops = sum(r.dropped for r in rows.values())
    if not drop_s and not boot_drops:
        return []
    worst = max(rows, key=lambda c: (drops.get(c, 0.0), rows[c].dropped))
    key = "net.core.netdev_max_backlog"
    return [Finding(
        code="softnet-backlog-drops",
        severity=(Severity.CRITICAL if drop_s >= CRIT_DROPS else
                  Severity.WARNING if drop_s > 0 else Severity.INFO),
        subject="softnet",
        summary=(f"backlog drops {drop_s:.1f}/s (most on cpu {worst})" if drop_s > 0
                 else f"{boot_drops} backlog drops since boot"),
        why="A CPU's input queue (netdev_max_backlog packets) was full and the kernel "
            "dropped what arrived: retransmits and stalls for the flows hashed to it.",
        evidence={"dropped_per_s": round(drop_s, 2), "dropped": boot_drops, "cpu": worst,
                  "netdev_max_backlog": to_int(settings.get("netdev_max_backlog"), 0) or 0},
        remedy=Remedy(profile={"sysctl": {key: _raise(settings, "netdev_max_backlog", 2000)}},
                      comments={f"sysctl.{key}": f"softnet-backlog-drops: {drop_s:.1f}/s, "
                                                 f"{boot_drops} since boot"}),
        now=drop_s > 0)]


def _squeeze(squeeze_s: float, settings: dict) -> list[Finding]:
    if squeeze_s <= 0:
        return []  # since boot: nearly every busy node has some; only a rate says much
    budget, usecs = "net.core.netdev_budget", "net.core.netdev_budget_usecs"
    return [Finding(
        code="softnet-time-squeeze",
        severity=Severity.WARNING if squeeze_s >= WARN_SQUEEZE else Severity.INFO,
        subject="softnet", summary=f"NET_RX budget exhausted {squeeze_s:.1f}/s",
        why="The receive softirq stopped with packets still queued and left them to "
            "ksoftirqd: latency first, backlog and ring drops next.",
        evidence={"time_squeeze_per_s": round(squeeze_s, 2),
                  "netdev_budget": to_int(settings.get("netdev_budget"), 0) or 0,
                  "netdev_budget_usecs": to_int(settings.get("netdev_budget_usecs"), 0) or 0},
        remedy=Remedy(profile={"sysctl": {
            budget: _raise(settings, "netdev_budget", 600),
            usecs: _raise(settings, "netdev_budget_usecs", 4000)}}, comments={
            f"sysctl.{budget}": f"softnet-time-squeeze: {squeeze_s:.1f}/s",
            f"sysctl.{usecs}": f"softnet-time-squeeze: {squeeze_s:.1f}/s"}),
        now=True)]


def _one_cpu(w, first: dict, last: dict, once: dict, cpus: int) -> list[Finding]:
    if not w.rates or cpus < 2:
        return []
    rx0 = softirqs(first.get("softirqs")).get("NET_RX", {})
    rx1 = softirqs(last.get("softirqs")).get("NET_RX", {})
    rates = {cpu: w.rate(rx0.get(cpu, 0), n, 32) for cpu, n in rx1.items()}
    total = sum(rates.values())
    if total < MIN_NET_RX:
        return []
    top = max(rates, key=lambda c: rates[c])
    share = rates[top] / total
    if share <= ONE_CPU_SHARE:
        return []
    profile, comments, rps_on = _rps_remedy(once, cpus)
    irqbalance = flag(once.get("irqbalance"), "running")
    action = "Spread the NIC's queue interrupts over CPUs: more channels if the NIC has " \
             "them (`nic: interfaces: [{channels: {combined: auto}}]`)"
    action += "; irqbalance is not running: enable it (`irqbalance: {enabled: true, " \
              "running: true}`)" if not irqbalance else "."
    return [Finding(
        code="softnet-rx-one-cpu", severity=Severity.WARNING, subject=f"cpu {top}",
        summary=f"cpu {top} handles {100 * share:.0f} % of {total:.0f} NET_RX/s "
                f"({cpus} CPUs)",
        why="Receive processing for the whole node runs on one core: when it saturates, "
            "packets wait and drop while the other CPUs idle.",
        evidence={"cpu": top, "share_pct": round(100 * share, 1),
                  "net_rx_per_s": round(total, 1), "cpus": cpus, "rps_on": int(rps_on),
                  "irqbalance": int(irqbalance)},
        remedy=Remedy(profile=profile, comments=comments, action=action), now=True)]

