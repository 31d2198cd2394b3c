"""conntrack: a full table drops new connections; the symptoms look random (DNS timeouts,
5xx on ingress, failing probes). Fill ratio, the per-CPU statistics as rates, the
kernel's "table full" lines, hash chain length and long timeouts on a busy table.

Severity: what happens within the window is warning or critical; what only the since-boot
counters or old log lines show is info (it happened; it may be over).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netfix.doctor import Files, Finding, LogLine, Remedy, Sample, Severity
from netfix.doctor.parse import (
    Window,
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
_D = "/proc/sys/net/netfilter/nf_conntrack_"
# Settings read once: bucket count and the timeouts the remedy may shorten.
ONCE_FILES = {"settings": Files(tuple(_D + k for k in (
    "buckets", "tcp_timeout_established", "tcp_timeout_syn_sent", "tcp_timeout_syn_recv",
    "udp_timeout", "udp_timeout_stream")))}
SAMPLE_FILES = {"counts": Files((_D + "count", _D + "max")),
                "stat": Files(("/proc/net/stat/nf_conntrack",), raw=True)}
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


# The kernel rounds the hash table up to whole pages of buckets (512 on 4 KiB pages, in
# nf_ct_alloc_hashtable): below 4 x 512 entries the 4:1 buckets cannot be set (measured on
# the VM node: buckets 256 -> "kernel kept 512", the apply undone).
MIN_REMEDY_MAX = 2048


def _pow2_at_least(n: int) -> int:
    p = MIN_REMEDY_MAX
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


@dataclass
class Table:
    """What the two samples say about this node's (netns's) table."""

    sample: Sample
    w: Window
    settings: dict[str, str]
    count: int
    max: int | None
    stat: tuple[dict[str, int], dict[str, int]]  # summed over CPUs, first and last sample
    log: list[LogLine] = field(default_factory=list)  # "table full" kernel log lines

    @property
    def fill(self) -> float:
        return self.count / self.max if self.max else 0.0

    @property
    def base(self) -> dict:
        return {"count": self.count, "max": self.max or 0,
                "fill_pct": round(100 * self.fill, 1)}

    def rate(self, name: str) -> float:
        st0, st1 = self.stat
        return self.w.rate(st0.get(name, 0), st1[name]) if name in st1 else 0.0

    def total(self, name: str) -> int:
        return self.stat[1].get(name, 0)

    def remedy(self, why: str) -> Remedy:
        return _size_remedy(self.max, self.count, self.settings, why)


def detect(sample: Sample) -> list[Finding]:
    w = window(sample, NAME)
    first, last = sections(w.first), sections(w.last)
    counts = leaves(last.get("counts"))
    t = Table(sample, w, leaves(sections(sample.once.get(NAME)).get("settings")),
              to_int(counts.get("nf_conntrack_count"), 0) or 0,
              to_int(counts.get("nf_conntrack_max")),
              (conntrack_stat(first.get("stat")), conntrack_stat(last.get("stat"))),
              [] if sample.netns else conntrack_full_lines(sample.klog))
    return [f for check in (_table_full, _fill, _insert_failed, _search_restart, _chains,
                            _timeout) for f in check(t)]


def _table_full(t: Table) -> list[Finding]:
    drop_s, early_s = t.rate("drop"), t.rate("early_drop")
    log_now = any(in_window(t.sample, line) for line in t.log)
    now = drop_s > 0 or early_s > 0 or log_now
    if not now and not t.log and not t.total("drop") + t.total("early_drop"):
        return []
    severity = (Severity.CRITICAL if drop_s > 0 or log_now
                else Severity.WARNING if early_s > 0 else Severity.INFO)
    what = (f"{drop_s:.1f} drops/s, {early_s:.1f} early drops/s" if now else
            f"{t.total('drop')} drops, {t.total('early_drop')} early drops since boot")
    return [Finding(
        code="conntrack-table-full", severity=severity, subject="conntrack",
        summary=f"conntrack table full: {what}, {len(t.log)} 'table full' kernel lines, "
                f"{t.count}/{t.max or '?'} entries",
        why="With the table full the kernel drops the first packet of every new connection "
            "(early_drop evicts unanswered entries first): connects time out, DNS over UDP "
            "retries after 5 s, probes fail.",
        evidence={**t.base, "drop_per_s": round(drop_s, 2),
                  "early_drop_per_s": round(early_s, 2), "drop": t.total("drop"),
                  "early_drop": t.total("early_drop"), "log_lines": len(t.log)},
        remedy=t.remedy(f"conntrack-table-full: {drop_s:.1f} drops/s at max {t.max}"),
        now=now, last_seen=t.log[-1].wall if t.log else "")]


def _fill(t: Table) -> list[Finding]:
    if not t.max or t.fill < WARN_FILL:
        return []
    return [Finding(
        code="conntrack-fill-high",
        severity=Severity.CRITICAL if t.fill >= CRIT_FILL else Severity.WARNING,
        subject="conntrack",
        summary=f"conntrack table {100 * t.fill:.0f} % full ({t.count} of {t.max})",
        why="Near the limit the kernel starts evicting entries and then drops new "
            "connections; a burst (deploy, probe storm, scan) tips it over.",
        evidence=t.base, now=True,
        remedy=t.remedy(f"conntrack-fill-high: {t.count} of {t.max} entries"))]


def _insert_failed(t: Table) -> list[Finding]:
    rate, total = t.rate("insert_failed"), t.total("insert_failed")
    if not rate and not total:
        return []
    return [Finding(
        code="conntrack-insert-failed",
        severity=Severity.WARNING if rate > 0 else Severity.INFO, subject="conntrack",
        summary=f"conntrack insert_failed: {rate:.2f}/s, {total} since boot",
        why="Two packets of new flows raced for the same NAT tuple and one was dropped: "
            "typically parallel A and AAAA DNS queries over one UDP socket, seen as 5 s DNS "
            "delays.",
        evidence={"insert_failed_per_s": round(rate, 2), "insert_failed": total},
        remedy=Remedy(action="Avoid parallel DNS queries on one socket (resolv.conf "
                             "`options single-request-reopen`, or NodeLocal DNSCache); no "
                             "kernel knob removes the race."),
        now=rate > 0)]


def _search_restart(t: Table) -> list[Finding]:
    rate = t.rate("search_restart")  # since boot it only says the node has been busy
    if rate <= 0:
        return []
    return [Finding(
        code="conntrack-search-restart", severity=Severity.INFO, subject="conntrack",
        summary=f"conntrack lookups restarted {rate:.1f}/s",
        why="A lookup met a chain that changed under it and started over: lookups get "
            "slower under heavy churn or long chains.",
        evidence={"search_restart_per_s": round(rate, 2)}, now=True)]


def _chains(t: Table) -> list[Finding]:
    buckets = to_int(t.settings.get("nf_conntrack_buckets"))
    if not t.max or not buckets or t.max / buckets <= LONG_CHAIN:
        return []
    chain = t.max / buckets
    return [Finding(
        code="conntrack-long-chains", severity=Severity.WARNING, subject="conntrack",
        summary=f"nf_conntrack_max {t.max} on {buckets} buckets: {chain:.1f} entries per "
                "chain when full",
        why="Every packet walks its hash chain; raising max without buckets makes each "
            "lookup slower exactly when the table is busiest.",
        evidence={"max": t.max, "buckets": buckets, "chain": round(chain, 1)},
        remedy=Remedy(profile={"conntrack": {"max": t.max, "auto": None}}, comments={
            "conntrack.max": f"conntrack-long-chains: {t.max} entries on {buckets} buckets; "
                             f"buckets derived: {buckets_for(t.max)}"}),
        now=True)]


def _timeout(t: Table) -> list[Finding]:
    established = to_int(t.settings.get("nf_conntrack_tcp_timeout_established"))
    if not established or established <= LONG_ESTABLISHED or not t.max \
            or t.fill < LONG_TIMEOUT_FILL:
        return []
    short = t.remedy("")
    timeouts = {"tcp_established": LONG_ESTABLISHED,
                **short.profile.get("conntrack", {}).get("timeouts", {})}
    comments = {k: v for k, v in short.comments.items() if ".timeouts." in k}
    comments["conntrack.timeouts.tcp_established"] = (
        f"conntrack-long-timeout: {established} s at {100 * t.fill:.0f} % full; "
        f"{LONG_ESTABLISHED} is kube-proxy's value")
    return [Finding(
        code="conntrack-long-timeout", severity=Severity.WARNING, subject="conntrack",
        summary=f"tcp established timeout {established} s with the table "
                f"{100 * t.fill:.0f} % full",
        why="Peers that vanish without FIN or RST (scanners, NAT'd clients) keep an entry "
            f"for {established // 86400} days; on a busy table they crowd out real "
            "connections.",
        evidence={**t.base, "tcp_timeout_established": established},
        remedy=Remedy(profile={"conntrack": {"timeouts": timeouts}}, comments=comments),
        now=True)]
