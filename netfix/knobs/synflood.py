"""SYN-flood settings: four sysctls under names that say what they are for.

The values, persistence and boot-time analysis are the sysctl knob's (`sysctl_changes`);
this module adds its own sysctl.d file and a note per key saying why it matters when
spoofed SYNs arrive faster than half-open connections expire.
"""

from __future__ import annotations

from netfix.facts import Facts, Needs
from netfix.knobs import Context
from netfix.plan import Change
from netfix.sysctlfiles import persist_needs, sysctl_changes
from netfix.util import normalize_key

SECTION = "syn_flood"
AFTER: tuple[str, ...] = ()
PERSIST = "/etc/sysctl.d/90-netfix-synflood.conf"

# field -> (sysctl key, why it matters against a SYN flood)
KEYS: dict[str, tuple[str, str]] = {
    "syncookies": (
        "net.ipv4.tcp_syncookies",
        "SYN flood: with 1, a listener whose SYN queue is full answers with a SYN cookie "
        "instead of dropping, so real clients still connect while spoofed SYNs fill the "
        "queue; 2 sends cookies always (cookie connections lose TCP options), 0 never",
    ),
    "max_syn_backlog": (
        "net.ipv4.tcp_max_syn_backlog",
        "SYN flood: half-open (SYN_RECV) connections a listener may hold; without "
        "syncookies the kernel drops new SYNs once 3/4 of it is used, so a larger queue "
        "absorbs a burst longer (the listener's backlog, capped by somaxconn, bounds it too)",
    ),
    "somaxconn": (
        "net.core.somaxconn",
        "SYN flood: caps every listen() backlog, which bounds both the accept queue and the "
        "SYN queue of a listener; too small and a burst overflows before cookies help",
    ),
    "synack_retries": (
        "net.ipv4.tcp_synack_retries",
        "SYN flood: SYN-ACK retransmits before a half-open connection is dropped (kernel "
        "default 5, about 63 s in the queue; 3 is about 15 s, 2 about 7 s): spoofed SYNs "
        "never answer, so fewer retries free their queue slots sooner",
    ),
}


def desired(section: dict) -> dict[str, str]:
    return {KEYS[f][0]: str(v) for f, v in section.items() if f in KEYS}


def needs(section: dict, ctx: Context) -> Needs:
    return persist_needs(set(desired(section)), PERSIST)


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    why = {key: note for key, note in KEYS.values()}
    changes = sysctl_changes(SECTION, desired(section), facts, PERSIST, ctx, comments=why)
    for c in changes:
        if c.target in why:
            c.notes.insert(0, why[c.target])
    return changes


def check_profile(data: dict) -> list[tuple[str, tuple]]:
    """A key set both here and under `sysctl:` would have two owners, two files and a
    boot-time winner decided by file names: refuse it. (message, field path) pairs."""
    plain = {normalize_key(k): k for k, v in (data.get("sysctl") or {}).items() if v is not None}
    problems = []
    for f in (data.get(SECTION) or {}):
        key = KEYS[f][0] if f in KEYS else None
        if key in plain:
            problems.append((
                f"sets {key}, which sysctl.{plain[key]} sets too; set it in one place "
                f"(to keep it here, delete the inherited one with `{plain[key]}: null` "
                "under sysctl)", (SECTION, f)))
    return problems
