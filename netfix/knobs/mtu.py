"""The overlay MTU check (the MTU itself is a link attribute, planned by knobs/link.py):
an overlay device (VXLAN, IPIP, WireGuard, Geneve) whose MTU exceeds its underlay's MTU
minus the encapsulation overhead drops or fragments large packets, while small requests
still work - the classic "SSH works, big transfers stall" failure. The check only
reports; the CNI owns the overlay's MTU.
"""

from __future__ import annotations

from netfix import ifaces
from netfix.facts import Facts, Needs
from netfix.ifaces import Net
from netfix.knobs import Context
from netfix.plan import OK, SKIP, Change, Code

SECTION = "nic"
AFTER = ("link",)  # checks the MTUs link plans, not only today's
KNOB = "mtu"
OVERLAY_MTU = Code.OVERLAY_MTU  # overlay MTU too large for its underlay
OVERLAYS = ("flannel.1", "vxlan.calico", "tunl0", "cilium_vxlan", "wireguard.cali")
# Encapsulation overhead in bytes over an IPv4 / IPv6 underlay (outer IP + UDP + headers).
OVERHEAD = {"vxlan": (50, 70), "geneve": (50, 70), "ipip": (20, 40), "wireguard": (60, 80)}
NAMES = {"vxlan": "VXLAN", "geneve": "Geneve", "ipip": "IPIP", "wireguard": "WireGuard"}


def needs(section: dict, ctx: Context) -> Needs:
    return ifaces.needs(section)


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    view = ctx.interfaces(section, facts)
    planned = {s.iface: int(s.desired) for s in view.settings
               if s.group == "mtu" and s.settable and s.desired}
    return overlay_rows(section, view.net, planned)


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
            row.action, row.notes = SKIP, []
            row.flag(OVERLAY_MTU, name, f"MTU {over} > {how}: large packets are dropped or "
                     f"fragmented; set the overlay MTU to {limit} in the CNI config, or raise "
                     f"{under.name}'s MTU")
        rows.append(row)
    return rows
