"""conntrack: a full table drops new connections; the symptoms look random (DNS timeouts,
5xx on ingress, failing probes). Fill ratio, the per-CPU statistics as rates, the
kernel's "table full" lines, hash chain length and long timeouts on a busy table.

Severity: what happens within the window is warning or critical; what only the since-boot
counters or old log lines show is info (it happened; it may be over).
"""

from __future__ import annotations

from netfix.doctor import Finding, Remedy, Sample, Severity
from netfix.doctor.parse import (
    conntrack_full_lines,
    conntrack_stat,
    in_window,
    leaves,
    sections,
    to_int,
    window,
)
from netfix.knobs.conntrack import BUCKET_BYTES, ENTRY_BYTES, buckets_for

NAME = "conntrack"
CODES = {
    "conntrack-table-full": "table full: new connections dropped (stat drop/early_drop, "
                            "kernel 'table full' lines); critical on drops in the window",
    "conntrack-fill-high": "nf_conntrack_count at >= 75 % (warning) or >= 90 % (critical) "
                           "of nf_conntrack_max",
    "conntrack-insert-failed": "insert_failed grows (NAT port clash: the classic 5 s DNS "
                               "delay); warning in the window",
    "conntrack-search-restart": "lookups restarted while chains changed (info)",
    "conntrack-long-chains": "nf_conntrack_max above 4 x buckets: average chain > 4 when full",
    "conntrack-long-timeout": "established timeout above kube-proxy's 1 day on a table at "
                              ">= 50 %: dead peers' entries stay for days",
}

WARN_FILL, CRIT_FILL = 0.75, 0.90
LONG_CHAIN = 4  # entries per bucket at max; the 4:1 rule kube-proxy and the profile use
# kube-proxy's tcp established timeout. Longer (the kernel's 5 days) keeps entries of
# peers that vanished without FIN/RST for days; that matters once the table is half full.
LONG_ESTABLISHED, LONG_TIMEOUT_FILL = 86400, 0.50
# public-vds's values for the states scans create (see that profile for the reasons).
SHORT_TIMEOUTS = {
    "tcp_syn_sent": ("nf_conntrack_tcp_timeout_syn_sent", 30),
    "tcp_syn_recv": ("nf_conntrack_tcp_timeout_syn_recv", 30),
    "udp": ("nf_conntrack_udp_timeout", 15),
}
FIREWALL_HINT = ("If the node exposes NodePorts to the internet, scans fill the table: "
                 "allow them only from known networks with the profile's `firewall:` section "
                 "(profiles/public-vds-firewall.yaml). kube-proxy rewrites nf_conntrack_max when "
                 "it starts unless conntrack.maxPerCore is 0; the plan shows it.")


def _pow2_at_least(n: int) -> int:
    p = 1024
    while p < n:
        p *= 2
    return p


def _size_remedy(max_: int | None, count: int, settings: dict, why: str) -> Remedy:
    """Double the table (to a power of two) with buckets derived 4:1, plus the public-vds
    timeouts for scan states where the node's are longer."""
    if not max_:
        return Remedy(action="Load nf_conntrack and raise conntrack.max in the profile.")
    new = _pow2_at_least(2 * max(max_, count))
    cost = new * ENTRY_BYTES + buckets_for(new) * BUCKET_BYTES
    mem_kb = to_int(settings.get("mem_total_kb"))
    share = f", {100 * cost / (mem_kb * 1024):.1f} % of RAM" if mem_kb else ""
    profile: dict = {"conntrack": {"max": new, "auto": None}}
    comments = {
        "conntrack.max": f"{why}; {new} entries pin about {cost / 2**20:.0f} MB "
                         f"({ENTRY_BYTES} B each + {BUCKET_BYTES} B per bucket{share}); "
                         f"buckets derived: {buckets_for(new)}",
        "conntrack.auto": "an explicit max replaces auto sizing",
    }
    timeouts = {}
    for field_, (key, short) in SHORT_TIMEOUTS.items():
        current = to_int(settings.get(key))
        if current is not None and current > short:
            timeouts[field_] = short
            comments[f"conntrack.timeouts.{field_}"] = (
                f"{current} s now; scan entries in this state expire {current // short}x sooner")
    if timeouts:
        profile["conntrack"]["timeouts"] = timeouts
    return Remedy(profile=profile, comments=comments, action=FIREWALL_HINT)


def detect(sample: Sample) -> list[Finding]:
    w = window(sample, NAME)
    first, last = sections(w.first), sections(w.last)
    settings = leaves(sections(sample.once.get(NAME)).get("settings"))
    counts = leaves(last.get("counts"))
    count = to_int(counts.get("nf_conntrack_count"), 0) or 0
    max_ = to_int(counts.get("nf_conntrack_max"))
    st0, st1 = conntrack_stat(first.get("stat")), conntrack_stat(last.get("stat"))
    log = [] if sample.netns else conntrack_full_lines(sample.klog)
    fill = count / max_ if max_ else 0.0
    base = {"count": count, "max": max_ or 0, "fill_pct": round(100 * fill, 1)}

    def rate(name: str) -> float:
        return w.rate(st0.get(name, 0), st1.get(name, 0)) if name in st1 else 0.0

    found = []
    drop_s, early_s = rate("drop"), rate("early_drop")
    boot_drops = st1.get("drop", 0) + st1.get("early_drop", 0)
    log_now = any(in_window(sample, line) for line in log)
    if drop_s > 0 or early_s > 0 or log_now or boot_drops or log:
        now = drop_s > 0 or early_s > 0 or log_now
        severity = (Severity.CRITICAL if drop_s > 0 or log_now
                    else Severity.WARNING if early_s > 0 else Severity.INFO)
        what = (f"{drop_s:.1f} drops/s, {early_s:.1f} early drops/s" if now else
                f"{st1.get('drop', 0)} drops, {st1.get('early_drop', 0)} early drops since boot")
        found.append(Finding(
            code="conntrack-table-full", severity=severity, subject="conntrack",
            summary=f"conntrack table full: {what}, {len(log)} 'table full' kernel lines, "
                    f"{count}/{max_ or '?'} entries",
            why="With the table full the kernel drops the first packet of every new "
                "connection (early_drop evicts unanswered entries first): connects time out, "
                "DNS over UDP retries after 5 s, probes fail.",
            evidence={**base, "drop_per_s": round(drop_s, 2),
                      "early_drop_per_s": round(early_s, 2), "drop": st1.get("drop", 0),
                      "early_drop": st1.get("early_drop", 0), "log_lines": len(log)},
            remedy=_size_remedy(max_, count, settings,
                                f"conntrack-table-full: {drop_s:.1f} drops/s at max {max_}"),
            now=now, last_seen=log[-1].wall if log else ""))

    if max_ and fill >= WARN_FILL:
        found.append(Finding(
            code="conntrack-fill-high",
            severity=Severity.CRITICAL if fill >= CRIT_FILL else Severity.WARNING,
            subject="conntrack", summary=f"conntrack table {100 * fill:.0f} % full "
                                         f"({count} of {max_})",
            why="Near the limit the kernel starts evicting entries and then drops new "
                "connections; a burst (deploy, probe storm, scan) tips it over.",
            evidence=base, now=True,
            remedy=_size_remedy(max_, count, settings,
                                f"conntrack-fill-high: {count} of {max_} entries")))

    ins_s = rate("insert_failed")
    if ins_s > 0 or st1.get("insert_failed", 0):
        found.append(Finding(
            code="conntrack-insert-failed",
            severity=Severity.WARNING if ins_s > 0 else Severity.INFO, subject="conntrack",
            summary=f"conntrack insert_failed: {ins_s:.2f}/s, "
                    f"{st1.get('insert_failed', 0)} since boot",
            why="Two packets of new flows raced for the same NAT tuple and one was dropped: "
                "typically parallel A and AAAA DNS queries over one UDP socket, seen as 5 s "
                "DNS delays.",
            evidence={"insert_failed_per_s": round(ins_s, 2),
                      "insert_failed": st1.get("insert_failed", 0)},
            remedy=Remedy(action="Avoid parallel DNS queries on one socket (resolv.conf "
                                 "`options single-request-reopen`, or NodeLocal DNSCache); "
                                 "no kernel knob removes the race."),
            now=ins_s > 0))

    restart_s = rate("search_restart")
    if restart_s > 0:
        found.append(Finding(
            code="conntrack-search-restart", severity=Severity.INFO, subject="conntrack",
            summary=f"conntrack lookups restarted {restart_s:.1f}/s",
            why="A lookup met a chain that changed under it and started over: lookups get "
                "slower under heavy churn or long chains.",
            evidence={"search_restart_per_s": round(restart_s, 2)}, now=True))

    buckets = to_int(settings.get("nf_conntrack_buckets"))
    if max_ and buckets and max_ / buckets > LONG_CHAIN:
        found.append(Finding(
            code="conntrack-long-chains", severity=Severity.WARNING, subject="conntrack",
            summary=f"nf_conntrack_max {max_} on {buckets} buckets: "
                    f"{max_ / buckets:.1f} entries per chain when full",
            why="Every packet walks its hash chain; raising max without buckets makes each "
                "lookup slower exactly when the table is busiest.",
            evidence={"max": max_, "buckets": buckets, "chain": round(max_ / buckets, 1)},
            remedy=Remedy(profile={"conntrack": {"max": max_, "auto": None}}, comments={
                "conntrack.max": f"conntrack-long-chains: {max_} entries on {buckets} "
                                 f"buckets; buckets derived: {buckets_for(max_)}"}),
            now=True))

    established = to_int(settings.get("nf_conntrack_tcp_timeout_established"))
    if established and established > LONG_ESTABLISHED and max_ and fill >= LONG_TIMEOUT_FILL:
        remedy = _size_remedy(max_, count, settings, "")
        timeouts = {"tcp_established": LONG_ESTABLISHED,
                    **remedy.profile.get("conntrack", {}).get("timeouts", {})}
        comments = {k: v for k, v in remedy.comments.items() if ".timeouts." in k}
        comments["conntrack.timeouts.tcp_established"] = (
            f"conntrack-long-timeout: {established} s at {100 * fill:.0f} % full; "
            f"{LONG_ESTABLISHED} is kube-proxy's value")
        found.append(Finding(
            code="conntrack-long-timeout", severity=Severity.WARNING, subject="conntrack",
            summary=f"tcp established timeout {established} s with the table "
                    f"{100 * fill:.0f} % full",
            why="Peers that vanish without FIN or RST (scanners, NAT'd clients) keep an "
                f"entry for {established // 86400} days; on a busy table they crowd out "
                "real connections.",
            evidence={**base, "tcp_timeout_established": established},
            remedy=Remedy(profile={"conntrack": {"timeouts": timeouts}}, comments=comments),
            now=True))
    return found

