"""MTU per interface, and the overlay check: an overlay device (VXLAN, IPIP, WireGuard,
Geneve) whose MTU exceeds its underlay's MTU minus the encapsulation overhead drops or
fragments large packets, while small requests still work - the classic "SSH works, big
transfers stall" failure. The check only reports; the CNI owns the overlay's MTU.
"""

from __future__ import annotations

import shlex

from netfix import ifaces
from netfix.facts import Facts, Needs
from netfix.ifaces import ERROR, Net, Setting, skip
from netfix.knobs import Context
from netfix.plan import OK, SKIP, Change

SECTION = "nic"
KNOB = "mtu"
OVERLAY_MTU = "overlay-mtu"  # flag: overlay MTU too large for its underlay
OVERLAYS = ("flannel.1", "vxlan.calico", "tunl0", "cilium_vxlan", "wireguard.cali")
# Encapsulation overhead in bytes over an IPv4 / IPv6 underlay (outer IP + UDP + headers).
OVERHEAD = {"vxlan": (50, 70), "geneve": (50, 70), "ipip": (20, 40), "wireguard": (60, 80)}
NAMES = {"vxlan": "VXLAN", "geneve": "Geneve", "ipip": "IPIP", "wireguard": "WireGuard"}


def needs(section: dict, ctx: Context) -> Needs:
    return ifaces.needs(section)


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    mine = settings(section, facts)
    planned = {s.iface: int(s.desired) for s in mine if s.settable and s.desired}
    return [s.change() for s in mine] + overlay_rows(section, ifaces.node(facts), planned)


def settings(section: dict, facts: Facts) -> list[Setting]:
    net = ifaces.node(facts)
    out = []
    for name, want in ifaces.select(section, net).wants.items():
        if "mtu" not in want:
            continue
        link, mtu = net.links[name], int(want["mtu"])
        lo, hi = link.min_mtu or 0, link.max_mtu or 0  # 0: the driver sets no bound
        if (hi and mtu > hi) or mtu < lo:
            out.append(skip(KNOB, name, "mtu", str(mtu), f"{mtu} is outside the MTU range "
                            f"{lo}-{hi} of {name} ({link.driver_name}): not applied",
                            current=str(link.mtu), flag=ERROR))
            continue
        path = shlex.quote(f"/sys/class/net/{name}/mtu")
        s = Setting(KNOB, name, "mtu", str(link.mtu), str(mtu), f"cat {path}",
                    f'ip link set dev {shlex.quote(name)} mtu "$1"')
        out.append(ifaces.disruptive(s, net))
    return out


def _v6_underlay(info: dict, under: ifaces.Link) -> bool:
    """From the tunnel's own endpoints when it has them, else from the underlay's addresses."""
    for key in ("local", "remote", "group"):
        if info.get(key + "6"):
            return True
        if info.get(key):
            return ifaces.is_v6(str(info[key]))
    fams = {fam for fam, addr in under.addrs if not addr.startswith("fe80:")}
    return "inet" not in fams and "inet6" in fams


def overlay_rows(section: dict, net: Net, planned: dict[str, int]) -> list[Change]:
    cfg = section.get("overlay", {})
    rows = []
    for name in dict.fromkeys([*OVERLAYS, *cfg.get("devices", [])]):
        link = net.links.get(name)
        target = f"overlay {name}"
        if link is None:
            if name in cfg.get("devices", []):
                rows.append(Change(KNOB, target, None, None, OK, notes=["not on this node"]))
            continue
        over = planned.get(name, link.mtu or 0)
        under_name = cfg.get("underlay") or link.info.get("link") or \
            (net.default_devs[0] if net.default_devs else None)
        under = net.links.get(under_name or "")
        if link.kind not in OVERHEAD or under is None:
            why = (f"encapsulation {link.kind or 'unknown'} is not one netfix knows"
                   if under is not None else "no underlay found (set nic.overlay.underlay)")
            rows.append(Change(KNOB, target, str(over), None, OK, notes=[why + "; not checked"]))
            continue
        v6 = _v6_underlay(link.info, under)
        overhead = OVERHEAD[link.kind][v6]
        limit = planned.get(under.name, under.mtu or 0) - overhead
        how = (f"{under.name} MTU {limit + overhead} - {overhead} ({NAMES[link.kind]} over "
               f"IPv{6 if v6 else 4}) = {limit}")
        row = Change(KNOB, target, str(over), f"<= {limit}", OK, notes=[f"fits: {how}"])
        if over > limit:
            row.action, row.flags = SKIP, [OVERLAY_MTU]
            row.notes = [f"MTU {over} > {how}: large packets are dropped or fragmented; set the "
                         f"overlay MTU to {limit} in the CNI config, or raise {under.name}'s MTU"]
        rows.append(row)
    return rows
