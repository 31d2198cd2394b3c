"""MTU: an overlay device (VXLAN, IPIP, WireGuard, Geneve) whose MTU exceeds its underlay's
MTU minus the encapsulation overhead drops or fragments large packets while small ones
pass: SSH and health checks work, large transfers stall. The check is plan's own
(netfix.knobs.mtu.overlay_rows over netfix.ifaces.parse). With --probe-mtu, a full-size
ping with don't-fragment to the inventory's other nodes finds a black hole on the path.
The CNI owns the overlay's MTU, so the remedy is an action."""

from __future__ import annotations

import ipaddress

from netfix import ifaces
from netfix.doctor import Files, Finding, Remedy, Sample, Severity
from netfix.doctor.parse import sections
from netfix.knobs import mtu as mtu_knob
from netfix.plan import SKIP

NAME = "mtu"
CODES = {
    "mtu-overlay-too-large": "an overlay's MTU is above its underlay's MTU minus the "
                             "encapsulation overhead: large packets are dropped or fragmented",
    "mtu-black-hole": "--probe-mtu: small pings to another node pass, full-MTU pings with "
                      "don't-fragment do not: large transfers stall on that path",
}

# The default routes, for the overlay's underlay when it names no link of its own: from the
# kernel's route files rather than two `ip route show default` processes. /proc/net/route
# lists the main table only, like `ip route show` (fib_route_seq_show walks
# iter->main_trie, net/ipv4/fib_trie.c) and names each route's first nexthop device only
# (fib_info_nhc(fi, 0)), which is the one the underlay fallback takes. /proc/net/ipv6_route
# walks every table (ipv6_route_seq_next_table, net/ipv6/ip6_fib.c; `ip -6 route show` the
# main one): a default route of another table counts too, after the IPv4 ones.
ONCE_FILES = {"route4": Files(("/proc/net/route",), raw=True),
              "route6": Files(("/proc/net/ipv6_route",), raw=True)}
RTF_UP, RTF_REJECT = 0x0001, 0x0200  # include/uapi/linux/route.h


def _flags(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        return 0


def default_devs(route4: str, route6: str) -> list[str]:
    """The devices of the usable default routes, IPv4 first, in the kernel's order.
    route4: Iface Destination Gateway Flags RefCnt Use Metric Mask... (by header name);
    route6: dest plen src plen nexthop metric refcnt use flags dev (fixed columns)."""
    devs = []
    lines = route4.splitlines()
    head = lines[0].split() if lines else []
    if {"Iface", "Destination", "Flags", "Mask"} <= set(head):
        col = {name: i for i, name in enumerate(head)}
        for line in lines[1:]:
            w = line.split()
            if len(w) < len(head):
                continue
            flags = _flags(w[col["Flags"]])
            if w[col["Destination"]] == w[col["Mask"]] == "00000000" and flags & RTF_UP \
                    and not flags & RTF_REJECT:
                devs.append(w[col["Iface"]])
    for line in route6.splitlines():
        w = line.split()
        if len(w) == 10 and w[1] == "00" and set(w[0]) == {"0"}:
            flags = _flags(w[8])
            if flags & RTF_UP and not flags & RTF_REJECT:
                devs.append(w[9])
    return list(dict.fromkeys(devs))


def probe_targets(hosts) -> list[str]:
    """The addresses --probe-mtu pings: the selected inventory hosts' own, IPs only."""
    out = []
    for h in hosts:
        try:
            out.append(str(ipaddress.ip_address(h.address)))
        except (ValueError, TypeError, AttributeError):
            continue
    return [a for a in dict.fromkeys(out) if not ipaddress.ip_address(a).is_loopback]


def detect(sample: Sample) -> list[Finding]:
    text = sample.once.get(NAME, "")
    net = ifaces.parse(text)
    files = sections(text)
    net.default_devs = default_devs(files.get("route4", ""), files.get("route6", ""))
    findings = []
    for row in mtu_knob.overlay_rows({}, net, {}):
        if row.action != SKIP:
            continue
        reason = row.reason(mtu_knob.OVERLAY_MTU)
        name = row.target.removeprefix("overlay ")
        limit = int(str(row.desired).removeprefix("<= ") or 0)
        findings.append(Finding(
            "mtu-overlay-too-large", Severity.WARNING, name,
            reason.message if reason else f"{name} MTU {row.current} > {row.desired}",
            "packets larger than the underlay can carry after encapsulation are dropped "
            "(or fragmented): small requests work, large responses and transfers stall",
            evidence={"overlay": name, "overlay_mtu": int(row.current or 0), "limit": limit},
            remedy=Remedy(action=f"set {name}'s MTU to {limit} or less in the CNI's "
                          "configuration (it owns the overlay), or raise the underlay's MTU "
                          "(nic.<iface>.mtu in a profile) on every node"),
            now=True))
    for line in text.splitlines():
        words = line.split()
        if words[:2] != ["==", "probe"] or len(words) != 7:
            continue
        addr, dev, mtu, small, big = words[2:]
        if small == "ok" and big != "ok":
            findings.append(Finding(
                "mtu-black-hole", Severity.CRITICAL, f"{dev} -> {addr}",
                f"pings to {addr} via {dev} pass at 84 bytes but not at the interface MTU "
                f"{mtu} with don't-fragment: an MTU black hole on the path",
                "a hop on the path carries less than this node's MTU and the ICMP "
                "'fragmentation needed' never comes back: TCP sessions hang as soon as a "
                "full-size segment is sent",
                evidence={"peer": addr, "interface": dev, "mtu": int(mtu)
                          if mtu.isdigit() else 0},
                remedy=Remedy(action=f"find the hop with the smaller MTU between this node "
                              f"and {addr} (tracepath), and make the MTUs on the path agree; "
                              "or lower this node's MTU (nic.<iface>.mtu)"),
                now=True))
    return findings
