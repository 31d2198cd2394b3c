"""drops: why packets die, from the kernel itself (`--trace-drops SECONDS`, off by default).

The `skb:kfree_skb` tracepoint carries the drop reason on kernels since 5.17
(`reason: NETFILTER_DROP`, names from include/net/dropreason-core.h) and where in the kernel
the packet was freed (`location=`: `symbol+0xOFF/0xSIZE` since about 6.4; before, an
address, which tracefs hashes by default). The runner (trace.sh, `nd_trace_*`) enables
it in a tracefs instance of doctor's own for the trace window, with a capped buffer,
reads it once and aggregates it by reason and location on the node, and always disables
it again (a trap, and a guard in its own session that does it anyway).

This detector turns the top reasons into findings that say which detector and remedy
fixes that reason (`NETFILTER_DROP` -> conntrack table / firewall rules,
`NOMEM` -> memory, `QDISC_DROP` -> txqueuelen / qdisc, ...). A reason that is part of
normal life (`NO_SOCKET`: a closed port; `NOT_SPECIFIED`: a free without a reason) is
info. In a network namespace of a larger kernel the tracepoint sees the whole host: it is
not enabled there and the detector says so (info), never reporting the host's drops as
the node's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netfix.doctor import Finding, Remedy, Sample, Severity
from netfix.doctor.parse import kv, sections, to_int

NAME = "drops"
CODES = {
    "drops-reason": "--trace-drops: a top reason the kernel gave for dropping packets "
                    "(skb:kfree_skb), with the detector and remedy that fixes it; warning "
                    "for a reason a setting or an action fixes, info for normal life",
    "drops-trace-unavailable": "--trace-drops: not traced here (network namespace: the "
                               "tracepoint is the host's; no tracefs; kernel < 5.17) (info)",
}
GAUGES = {"trace_drops_per_second": ("Packets the kernel dropped per second in the "
                                     "--trace-drops window, by drop reason", "reason")}
TOP = 5  # reasons turned into findings
WARN_RATE = 1.0  # drops/s of an actionable reason that make it a warning (below: info)

# reason -> (where to look: the detector or the part of the profile, what to do). Names
# from include/net/dropreason-core.h (and the ones newer kernels added).
SEE = {
    "NETFILTER_DROP": ("conntrack", "a netfilter hook dropped them: the conntrack table "
                       "being full (see conntrack-table-full: raise conntrack.max, buckets "
                       "4:1) or a firewall rule that drops (iptables-save / nft list "
                       "ruleset; the profile's `firewall:` section)"),
    "TCP_LISTEN_OVERFLOW": ("synflood", "a listener's accept queue overflowed (see "
                            "synflood-accept-overflow: syn_flood backlogs, somaxconn)"),
    "TCP_REQQFULLDROP": ("synflood", "the SYN queue was full (see synflood-syn-drops: "
                         "syn_flood.syncookies, max_syn_backlog)"),
    "SOCKET_BACKLOG": ("synflood", "a socket's backlog was full (the application reads "
                       "too slowly; see the synflood findings)"),
    "SOCKET_RCVBUFF": ("sysctl", "a socket's receive buffer was full (the application reads "
                       "too slowly, or net.core.rmem_max / its SO_RCVBUF is too small)"),
    "PROTO_MEM": ("sysctl", "the protocol's memory limit was hit (net.ipv4.udp_mem / "
                  "tcp_mem)"),
    "NOMEM": ("memory", "an allocation failed: the node is out of memory (see the memory "
              "findings)"),
    "SKB_UCOPY_FAULT": ("memory", "a copy from user memory failed"),
    "QDISC_DROP": ("nic", "the transmit queue discipline was full (txqueuelen, the qdisc's "
                   "limit; see the nic findings)"),
    "QDISC_OVERLIMIT": ("nic", "the qdisc's limit was hit (txqueuelen, qdisc limit)"),
    "QDISC_CONGESTED": ("nic", "the qdisc dropped on congestion"),
    "FULL_RING": ("nic", "a device ring was full (rings to their maximum; see nic-*)"),
    "DEV_READY": ("nic", "the device was not up or ready"),
    "CPU_BACKLOG": ("softnet", "the per-CPU backlog was full (see softnet: "
                    "netdev_max_backlog, RPS)"),
    "NEIGH_QUEUEFULL": ("sysctl", "packets waiting for ARP/ND overflowed the neighbour "
                        "queue (net.ipv4.neigh.default.unres_qlen, gc_thresh*)"),
    "NEIGH_FAILED": ("addresses", "the neighbour (next hop) did not answer ARP/ND"),
    "NEIGH_CREATEFAIL": ("sysctl", "the neighbour table is full "
                         "(net.ipv4.neigh.default.gc_thresh3)"),
    "PKT_TOO_BIG": ("mtu", "packets larger than the MTU (see mtu-*)"),
    "IP_OUTNOROUTES": ("addresses", "no route to the destination"),
    "IP_INNOROUTES": ("addresses", "no route for a received packet"),
    "IP_RPFILTER": ("sysctl", "reverse path filtering (net.ipv4.conf.*.rp_filter) dropped "
                    "them: asymmetric routing"),
    "TC_INGRESS": ("action", "a tc/eBPF program on ingress dropped them (the CNI's "
                   "policy: cilium, calico eBPF)"),
    "TC_EGRESS": ("action", "a tc/eBPF program on egress dropped them (the CNI's policy)"),
    "XDP": ("action", "an XDP program dropped them"),
    "BPF_CGROUP_EGRESS": ("action", "a cgroup eBPF program dropped them"),
    "IP_CSUM": ("nic", "corrupt packets (bad IP checksum): a NIC, cable or offload problem"),
    "TCP_CSUM": ("nic", "corrupt packets (bad TCP checksum): NIC offloads or the wire"),
    "UDP_CSUM": ("nic", "corrupt packets (bad UDP checksum): NIC offloads or the wire"),
}
# Normal life: no knob and no person needs to act on these by themselves.
BENIGN = {"NOT_SPECIFIED", "NO_SOCKET", "OTHERHOST", "SKB_CONSUMED", "NOT_DROPPED_YET",
          "QUEUE_PURGE", "TCP_OLD_DATA", "TCP_OLD_ACK", "TCP_TOO_OLD_ACK", "TCP_CLOSE",
          "TCP_FLAGS", "TCP_OFO_DROP", "TCP_RESET", "TCP_OLD_SEQUENCE", "TCP_ZEROWINDOW",
          "TCP_INVALID_SEQUENCE", "TCP_OVERWINDOW", "TCP_OFOMERGE", "UNHANDLED_PROTO",
          "IPV6DISABLED", "PKT_TOO_SMALL", "IP_NOPROTO", "UNICAST_IN_L2_MULTICAST"}
UNAVAILABLE = {
    "netns": "network namespace of a larger kernel: the skb:kfree_skb tracepoint sees the "
             "whole host's drops, so it was not enabled (run doctor on the host itself)",
    "notracefs": "no tracefs with instances and skb:kfree_skb (/sys/kernel/tracing, "
                 "/sys/kernel/debug/tracing): not traced",
    "noreason": "this kernel's skb:kfree_skb has no drop reason (kernels before 5.17): "
                "not traced",
    "noinstance": "could not create a tracefs instance (not root, or tracefs read-only): "
                  "not traced",
    "noenable": "could not enable skb:kfree_skb in doctor's tracefs instance: not traced",
    "off": "the trace was not started",
}


@dataclass
class Trace:
    state: str
    seconds: float = 0.0
    lines: int = 0  # events read (at most `cap`)
    cap: int = 0
    entries: int = 0  # events in the ring buffer (all CPUs)
    lost: int = 0  # events that did not fit (buffer full, overwrite off) or were overrun
    rows: list[tuple[int, str, str]] = field(default_factory=list)  # count, reason, symbol

    @property
    def capped(self) -> bool:
        return bool(self.lost) or (self.cap > 0 and self.lines >= self.cap)

    @property
    def scale(self) -> float:
        """Events seen / events read: the counts below are a sample when capped."""
        seen = self.entries + self.lost
        return seen / self.lines if self.lines and seen > self.lines else 1.0


def _symbol(location: str, sym: str) -> str:
    """`nf_hook_slow+0x96/0xf0` (or a kallsyms-resolved address) -> `nf_hook_slow`."""
    if sym and sym != "-":
        return sym
    return location.split("+", 1)[0] or "?"


def parse_trace(text: str | None) -> Trace | None:
    """The runner's `@@ND trace -` part -> Trace (None: --trace-drops not asked)."""
    if text is None:
        return None
    head, _, _ = text.partition("\n== events")
    info = kv(head)
    t = Trace(state=info.get("state", "off"))
    start = _float(info.get("start"))
    stop = _float(info.get("stop"))
    if start is not None and stop is not None:
        t.seconds = round(max(0.0, stop - start), 3)
    t.lines = to_int(info.get("lines"), 0) or 0
    t.cap = to_int(info.get("cap"), 0) or 0
    t.entries = to_int(info.get("entries"), 0) or 0
    t.lost = (to_int(info.get("dropped"), 0) or 0) + (to_int(info.get("overrun"), 0) or 0)
    merged: dict[tuple[str, str], int] = {}
    for line in sections(text).get("events", "").splitlines():
        words = line.split()
        if len(words) < 3:
            continue
        count = to_int(words[0])
        if count is None:
            continue
        key = (words[1], _symbol(words[2], words[3] if len(words) > 3 else ""))
        merged[key] = merged.get(key, 0) + count
    t.rows = sorted(((c, r, s) for (r, s), c in merged.items()), key=lambda x: (-x[0], x[1:]))
    return t


def _float(value: str | None) -> float | None:
    try:
        return float(str(value).split()[0])
    except (ValueError, IndexError):
        return None


def by_reason(t: Trace) -> list[tuple[str, int, list[tuple[str, int]]]]:
    """(reason, count, [(location symbol, count), ...]) by count, largest first."""
    out: dict[str, list[tuple[str, int]]] = {}
    for count, reason, sym in t.rows:
        out.setdefault(reason, []).append((sym, count))
    return sorted(((r, sum(c for _, c in locs), locs) for r, locs in out.items()),
                  key=lambda x: (-x[1], x[0]))


def detect(sample: Sample) -> list[Finding]:
    t = parse_trace(sample.trace)
    if t is None:
        return []
    if t.state != "stopped":
        why = UNAVAILABLE.get(t.state, f"not traced ({t.state})")
        return [Finding(code="drops-trace-unavailable", severity=Severity.INFO,
                        subject="skb:kfree_skb", summary=f"--trace-drops: {why}",
                        why="Without the tracepoint doctor cannot say why the kernel "
                            "dropped packets; the counter-based detectors still ran.",
                        evidence={"state": t.state})]
    found = []
    reasons = by_reason(t)
    total = sum(c for _, c, _ in reasons)
    for reason, count, locs in reasons[:TOP]:
        rate = count * t.scale / t.seconds if t.seconds else 0.0
        see, what = SEE.get(reason, ("", ""))
        actionable = reason not in BENIGN and bool(see)
        severity = Severity.WARNING if actionable and rate >= WARN_RATE else Severity.INFO
        where = ", ".join(f"{s} x{c}" for s, c in locs[:3])
        if reason in BENIGN:
            what = ("normal life on most nodes (a closed port, a free without a reason, "
                    "TCP housekeeping); worth a look only when it is most of the traffic")
        elif not what:
            what = f"see include/net/dropreason-core.h for {reason}"
        action = (f"{what}." if see != "action" else
                  f"{what}: check that program's policy and counters.")
        found.append(Finding(
            code="drops-reason", severity=severity, subject=reason,
            summary=f"kernel dropped {count} packets with reason {reason} in "
                    f"{t.seconds:g} s ({rate:.1f}/s), at {where}"
                    + (" (a sample: the trace buffer was full)" if t.capped else ""),
            why=f"The kernel's own drop reason: {what}.",
            evidence={"count": count, "trace_drops_per_second": round(rate, 2),
                      "share_pct": round(100 * count / total, 1) if total else 0.0,
                      "trace_seconds": t.seconds, "top_location": locs[0][0],
                      "locations": where, "see": see or "-", "events_read": t.lines,
                      "events_lost": t.lost, "capped": int(t.capped)},
            remedy=Remedy(action=action), now=True))
    return found
