"""Addresses: an interface holding a static and a DHCP (`dynamic`) IPv4 address, or two
IPv4 addresses in the same subnet. The node then picks its source address by route order
and lease timing: a tunnel (VXLAN, IPIP, WireGuard) or the kubelet's node IP flips between
them, and peers drop the packets from the address they do not expect. No knob fixes the
interface's configuration: the remedy is an action."""

from __future__ import annotations

import ipaddress
import json

from netfix.doctor import Finding, Remedy, Sample, Severity

NAME = "addresses"
CODES = {
    "addresses-static-and-dhcp": "an interface has a static and a DHCP (dynamic) IPv4 "
                                 "address: the source address (tunnel, node IP) flips",
    "addresses-same-subnet": "an interface has two IPv4 addresses in one subnet: which one "
                             "the node sends from depends on the order they were added",
}
WHY = ("with two IPv4 addresses on one interface the kernel picks the source address by "
       "route and address order; when the DHCP lease renews or the order changes, tunnels "
       "(VXLAN, IPIP, WireGuard) and the kubelet's node IP switch to the other address and "
       "peers drop what comes from an address they do not expect")


def _addrs(text: str) -> dict[str, list[dict]]:
    """ifname -> its global IPv4 addr_info entries, from `ip -j addr`."""
    try:
        data = json.loads(text) if text.strip() else []
    except ValueError:
        raise ValueError("`ip -j addr` output is not JSON (iproute2 too old?)") from None
    out: dict[str, list[dict]] = {}
    for item in data if isinstance(data, list) else []:
        v4 = [a for a in item.get("addr_info", []) if a.get("family") == "inet"
              and a.get("scope", "global") != "host" and a.get("local")]
        if len(v4) > 1:
            out[item.get("ifname", "?")] = v4
    return out


def _net(a: dict) -> ipaddress.IPv4Network:
    return ipaddress.ip_interface(f"{a['local']}/{a.get('prefixlen', 32)}").network


def detect(sample: Sample) -> list[Finding]:
    findings = []
    for ifname, v4 in sorted(_addrs(sample.once.get(NAME, "")).items()):
        dynamic = [a for a in v4 if a.get("dynamic")]
        static = [a for a in v4 if not a.get("dynamic")]
        shown = ", ".join(f"{a['local']}/{a.get('prefixlen')}"
                          + (" dynamic" if a.get("dynamic") else " static") for a in v4)
        action = (f"fix {ifname}'s configuration so that it holds one IPv4 address (remove "
                  "the static address or the DHCP client in netplan, NetworkManager, "
                  "systemd-networkd or ifupdown), then pin the tunnel source / kubelet "
                  "--node-ip to it")
        paired = set()
        if dynamic and static:
            same = any(_net(d).overlaps(_net(s)) for d in dynamic for s in static)
            paired = {(d["local"], s["local"]) for d in dynamic for s in static}
            findings.append(Finding(
                "addresses-static-and-dhcp", Severity.WARNING, ifname,
                f"{ifname} has {len(static)} static and {len(dynamic)} DHCP IPv4 "
                f"address(es): {shown}", WHY,
                evidence={"interface": ifname, "addresses": shown, "static": len(static),
                          "dynamic": len(dynamic), "same_subnet": int(same),
                          "valid_lft": min(int(a.get("valid_life_time", 0) or 0)
                                           for a in dynamic)},
                remedy=Remedy(action=action), now=True))
        seen = []
        for i, a in enumerate(v4):
            for b in v4[i + 1:]:
                pair = {(a["local"], b["local"]), (b["local"], a["local"])}
                if _net(a).overlaps(_net(b)) and not pair & paired:
                    seen.append(f"{a['local']} and {b['local']} ({_net(a)})")
        if seen:
            findings.append(Finding(
                "addresses-same-subnet", Severity.WARNING, ifname,
                f"{ifname} has IPv4 addresses in the same subnet: {'; '.join(seen)}", WHY,
                evidence={"interface": ifname, "addresses": shown, "pairs": len(seen)},
                remedy=Remedy(action=action), now=True))
    return findings
