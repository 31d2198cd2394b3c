"""Plain link attributes per interface (MTU, txqueuelen, ...): every ifsettings.REGISTRY
entry planned by "link". The value is read from the facts' `ip -j -d link`, checked
against the link's own bounds where `ip` reports them, set with `ip link set`, and read
back from sysfs by the journal's stale check. Persistence is knobs/nicpersist.py; the
overlay MTU check is knobs/mtu.py.
"""

from __future__ import annotations

import shlex

from netfix import ifaces
from netfix.facts import Facts, Needs
from netfix.ifaces import ERROR, HostView, Setting, skip
from netfix.ifsettings import IfaceSetting, planned_by
from netfix.knobs import Context
from netfix.plan import Change

SECTION = "nic"
AFTER = ("nic",)  # the order nic.sh re-applies them at boot too: ethtool first


def needs(section: dict, ctx: Context) -> Needs:
    return ifaces.needs(section)


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    names = {e.name for e in planned_by("link")}
    return [s.change() for s in ctx.interfaces(section, facts).settings if s.group in names]


def plan_interfaces(section: dict, facts: Facts, view: HostView) -> list[Setting]:
    out = []
    for name, want in view.selection.wants.items():
        for entry in planned_by("link"):
            if entry.name in want:
                out.append(_setting(entry, view.net.links[name], int(want[entry.name]), view))
    return out


def _setting(entry: IfaceSetting, link: ifaces.Link, value: int, view: HostView) -> Setting:
    attr = entry.link
    assert attr is not None, f"registry entry {entry.name} has planner link but no LinkAttr"
    knob, label = entry.name, entry.label or entry.name
    current = link.attrs.get(attr.json)
    if current is None:
        return skip(knob, link.name, entry.name, str(value), f"`ip -j link` reports no "
                    f"{attr.json} for {link.name} on this node: not applied", group=entry.name,
                    detail="absent")
    if attr.bounds:
        lo, hi = (link.attrs.get(b) or 0 for b in attr.bounds)  # 0: the driver sets no bound
        if (hi and value > hi) or value < lo:
            return skip(knob, link.name, entry.name, str(value), f"{value} is outside the "
                        f"{label} range {lo}-{hi} of {link.name} ({link.driver_name}): not "
                        "applied", current=str(current), flag=ERROR, group=entry.name,
                        detail="out-of-range")
    path = shlex.quote(f"/sys/class/net/{link.name}/{attr.sysfs}")
    s = Setting(knob, link.name, entry.name, str(current), str(value), f"cat {path}",
                f'ip link set dev {shlex.quote(link.name)} {attr.ip} "$1"', group=entry.name)
    return ifaces.disruptive(s, view.net) if entry.disruptive else s
