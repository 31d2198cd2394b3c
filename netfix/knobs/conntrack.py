"""Conntrack table size (max and buckets as one coupled 4:1 setting) and timeouts.

This module owns the 4:1 rule (`buckets_for`) and the timeout field -> sysctl map
(`TIMEOUTS`, `field_for_sysctl`); `check_profile` applies both to a loaded profile.

Persistence needs three files: sysctl.d for the values, modprobe.d for the hash size at
module load, and modules-load.d so nf_conntrack is loaded before systemd-sysctl runs
(otherwise its net.netfilter.* lines are skipped at boot without a word).
"""

from __future__ import annotations

import re

from netfix.facts import Facts, Needs
from netfix.knobs import Context
from netfix.plan import NOT_SETTABLE, OK, SKIP, Change, Op
from netfix.sysctlfiles import ABSENT_NOTE, file_change, persist_needs, sysctl_changes
from netfix.util import norm

SECTION = "conntrack"
AFTER: tuple[str, ...] = ()
PERSIST = "/etc/sysctl.d/90-netfix-conntrack.conf"
MODPROBE = "/etc/modprobe.d/netfix-conntrack.conf"
MODULES_LOAD = "/etc/modules-load.d/netfix-conntrack.conf"
HASHSIZE = "/sys/module/nf_conntrack/parameters/hashsize"
MAX = "net.netfilter.nf_conntrack_max"
BUCKETS = "net.netfilter.nf_conntrack_buckets"
COUNT = "net.netfilter.nf_conntrack_count"
NOT_LOADED = ("not settable here: nf_conntrack is not loaded on this node; load it "
              "(modprobe nf_conntrack - kube-proxy does when it starts) and plan again")
ENTRY_BYTES, BUCKET_BYTES = 304, 8  # nf_conntrack slab objsize, one hlist head
RAISE_ONLY = "raise-only"  # conntrack.buckets: max(current, max/4), as kube-proxy does

_P = "net.netfilter.nf_conntrack_"
TIMEOUTS = {
    "tcp_established": _P + "tcp_timeout_established",
    "tcp_syn_sent": _P + "tcp_timeout_syn_sent",
    "tcp_syn_recv": _P + "tcp_timeout_syn_recv",
    "tcp_time_wait": _P + "tcp_timeout_time_wait",
    "tcp_close_wait": _P + "tcp_timeout_close_wait",
    "tcp_fin_wait": _P + "tcp_timeout_fin_wait",
    "tcp_last_ack": _P + "tcp_timeout_last_ack",
    "tcp_close": _P + "tcp_timeout_close",
    "udp": _P + "udp_timeout",
    "udp_stream": _P + "udp_timeout_stream",
    "generic": _P + "generic_timeout",
    "icmp": _P + "icmp_timeout",
}
_TIMEOUT_FIELDS = {key: name for name, key in TIMEOUTS.items()}  # sysctl -> timeouts field

def buckets_for(max_entries: int) -> int:
    """The 4:1 rule kube-proxy also uses: about four entries per hash chain."""
    return max_entries // 4


def field_for_sysctl(key: str) -> str | None:
    """The conntrack-section field that owns sysctl `key`, or None if it is a plain sysctl."""
    key = key.replace("/", ".")
    if key in (MAX, "net.nf_conntrack_max"):
        return "conntrack.max"
    if key == BUCKETS:
        return "conntrack.buckets"
    leaf = key.removeprefix("net.netfilter.")
    if leaf != key and leaf.startswith("nf_conntrack_") and "timeout" in leaf:
        known = _TIMEOUT_FIELDS.get(key)
        return f"conntrack.timeouts.{known}" if known else "conntrack.timeouts"
    return None


def check_profile(data: dict) -> list[tuple[str, tuple]]:
    """Buckets only as max/4 of an explicit max (or `raise-only` beside any max), and no
    conntrack key under `sysctl:` (this section owns them). (message, field path) pairs,
    for the profile's checks."""
    problems: list[tuple[str, tuple]] = []
    section = data.get(SECTION) or {}
    if "buckets" in section:
        buckets, max_ = section["buckets"], section.get("max")
        where = (SECTION, "buckets")
        if buckets == RAISE_ONLY:
            if max_ is None:
                problems.append((
                    f"{RAISE_ONLY} without conntrack.max: set max (a number or auto); "
                    "buckets then become max(current, max/4)", where))
        elif max_ == "auto":
            problems.append((
                f"{buckets} cannot be combined with conntrack.max auto: the buckets are "
                "derived from the computed max (max/4); remove buckets", where))
        elif max_ is None:
            problems.append((
                f"{buckets} without conntrack.max: set max and let buckets be derived (max/4)",
                where))
        elif buckets != buckets_for(max_):
            problems.append((
                f"{buckets} breaks the 4:1 rule with conntrack.max {max_} "
                f"(buckets must be max/4 = {buckets_for(max_)}); "
                "leave buckets out to derive it", where))
    for key in data.get("sysctl") or {}:
        owner = field_for_sysctl(key)
        if owner:
            problems.append((
                f"is managed by the conntrack section; set {owner} instead "
                "(it keeps max and buckets coupled and handles the module-load boot race)",
                ("sysctl", key)))
    return problems


def needs(section: dict, ctx: Context) -> Needs:
    keys = {MAX, BUCKETS, COUNT} | {TIMEOUTS[k] for k in section.get("timeouts", {})}
    n = persist_needs(keys, PERSIST)
    n.paths.add(HASHSIZE)
    n.files |= {MODPROBE, MODULES_LOAD}
    return n


def auto_max(section: dict, cpus: int, mem_bytes: int) -> tuple[int, str]:
    """kube-proxy's rule (max(per_core x CPUs, min)) capped by a share of RAM."""
    auto = section.get("auto", {})
    per_core, floor = auto.get("per_core", 32768), auto.get("min", 131072)
    pct = auto.get("max_memory_percent", 5)
    value = max(per_core * cpus, floor)
    why = f"auto: max({per_core} x {cpus} CPUs, {floor})"
    if mem_bytes:
        cap = int(mem_bytes * pct / 100 / (ENTRY_BYTES + BUCKET_BYTES / 4))
        if value > cap:
            value, why = cap, why + f" capped at {pct}% of RAM"
    value -= value % 4  # a whole number of buckets at 4:1
    return value, why


def desired_max(section: dict, facts: Facts) -> tuple[int | None, str]:
    m = section.get("max")
    if m is None:
        return None, ""
    if m == "auto":
        return auto_max(section, facts.cpus, facts.mem_bytes)
    return int(m), f"max {m}"


def pinned(max_: int) -> str:
    mib = (max_ * ENTRY_BYTES + buckets_for(max_) * BUCKET_BYTES) / 2**20
    return f"a full table of {max_} entries pins {mib:.0f} MiB ({ENTRY_BYTES} B/entry)"


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    max_, why = desired_max(section, facts)
    # Without the module no key exists: say that, and what to do, on every row.
    absent = ABSENT_NOTE if facts.sysctl(COUNT).exists else NOT_LOADED
    buckets, rule = desired_buckets(section, max_, facts) if max_ else (None, "")
    desired = {TIMEOUTS[k]: str(v) for k, v in section.get("timeouts", {}).items()}
    comments = {}
    extra: list[Change] = []
    if max_:
        desired[MAX] = str(max_)
        comments[MAX] = f"{why}; buckets = {rule} = {buckets}"
        extra, bucket_key = _buckets(facts, buckets, absent)
        if bucket_key:
            desired[BUCKETS] = str(buckets)
    changes = sysctl_changes(SECTION, desired, facts, PERSIST, ctx, comments, absent)
    changes[-1:-1] = extra  # before the persistence file row

    settable_buckets = any(
        c.target in (BUCKETS, HASHSIZE) and c.action != SKIP for c in changes)
    mod_conf = (ctx.header + f"options nf_conntrack hashsize={buckets}\n").encode() \
        if settable_buckets else None
    any_persisted = any(c.target.startswith("net.netfilter.") and c.action != SKIP
                        for c in changes)
    load_conf = (ctx.header + "nf_conntrack\n").encode() if any_persisted else None
    changes.append(file_change(SECTION, MODPROBE, facts.files.get(MODPROBE), mod_conf))
    changes.append(file_change(SECTION, MODULES_LOAD, facts.files.get(MODULES_LOAD), load_conf))

    for c in changes:
        if c.target == MAX and max_:
            c.notes.append(f"{why}; {pinned(max_)}")
            _add_usage(c, facts)
        elif c.target in (BUCKETS, HASHSIZE) and max_ and buckets:
            note = shrink_note(facts, max_, buckets)
            if note:
                c.notes.append(note)
    return changes


def current_buckets(facts: Facts) -> int | None:
    for value in (facts.sysctl(BUCKETS).value, facts.value(HASHSIZE).value):
        if value and norm(value).isdigit():
            return int(norm(value))
    return None


def desired_buckets(section: dict, max_: int, facts: Facts) -> tuple[int, str]:
    """(buckets, the rule that gave them): exact 4:1 by default; `raise-only` keeps a larger
    table the node already has (kube-proxy's rule: hashsize raised to max/4 when smaller)."""
    given = section.get("buckets")
    if given == RAISE_ONLY:
        cur = current_buckets(facts) or 0
        return max(cur, buckets_for(max_)), "max(current, max/4)"
    if given is not None:
        return int(given), "max/4"
    return buckets_for(max_), "max/4"


def _kernel_at_least(kernel: str, want: tuple[int, int]) -> bool:
    m = re.match(r"(\d+)\.(\d+)", kernel or "")
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= want


def shrink_note(facts: Facts, max_: int, buckets: int) -> str:
    """When 4:1 makes the hash table smaller than it is: the lookup and memory effect, so
    the row says what lowering buckets costs (kernels >= 5.15 default to buckets = max)."""
    cur = current_buckets(facts)
    if not cur or buckets >= cur:
        return ""
    default = (" (since kernel 5.15 the default is buckets = max)"
               if _kernel_at_least(facts.kernel, (5, 15)) else "")
    saved = (cur - buckets) * BUCKET_BYTES
    return (f"lowers buckets from {cur} to {buckets}{default}: a full table of {max_} entries "
            f"then has {max_ / buckets:g} entries per chain instead of {max_ / cur:g} (longer "
            f"lookups) to save {saved / 2**20:.1f} MiB of bucket heads; "
            f"conntrack.buckets: {RAISE_ONLY} keeps {cur}")


def _buckets(facts: Facts, buckets: int, absent: str) -> tuple[list[Change], bool]:
    """Buckets via the sysctl when writable; else via the module parameter, but only where
    nf_conntrack_max is writable too: in a container the parameter is the whole host's."""
    if facts.sysctl(BUCKETS).writable:
        return [], True
    hs = facts.value(HASHSIZE)
    change = Change(SECTION, HASHSIZE, hs.value, str(buckets))
    if facts.sysctl(MAX).writable and hs.writable:
        if norm(hs.value) != str(buckets):
            change.ops.append(Op("value", HASHSIZE, hs.value, str(buckets)))
        else:
            change.action = OK
        return [change], False
    cur = facts.sysctl(BUCKETS)
    change = Change(SECTION, BUCKETS, cur.value, str(buckets), action=SKIP)
    change.flag(NOT_SETTABLE, "absent" if not cur.exists else "read-only",
                absent if not cur.exists else "not settable here: read-only "
                "(host-global, seen from a network namespace or container)")
    return [change], False


def _add_usage(change: Change, facts: Facts) -> None:
    count, current = facts.sysctl(COUNT).value, change.current
    if count and current and count.isdigit() and current.isdigit() and int(current):
        pct = 100 * int(count) / int(current)
        warn = " - above 75%: the table is close to dropping packets" if pct >= 75 else ""
        change.notes.append(f"in use now: {count} of {current} ({pct:.0f}%){warn}")
