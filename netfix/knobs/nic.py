"""NIC settings through ethtool: channels, rings, coalescing, offloads, per interface block.

Each (interface, group) is one cmd step: one `ethtool -L/-G/-C/-K` call with every key
that differs, because drivers reset the link per call, not per key. Values the node cannot
take are rows, never failures: a group the driver lacks ("rings: not supported by driver
veth"), a key with hardware maximum 0, a value above the maximum (flag `error`), a fixed
offload. Persistence is knobs/nicpersist.py.
"""

from __future__ import annotations

from netfix import ethtool, ifaces
from netfix.facts import Facts, Needs
from netfix.ifaces import ERROR, HostView, Link, Net, Setting, skip
from netfix.knobs import Context
from netfix.plan import Change

SECTION = "nic"
AFTER: tuple[str, ...] = ()
KNOB = "nic"


def needs(section: dict, ctx: Context) -> Needs:
    return ifaces.needs(section)


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    view = ctx.interfaces(section, facts)
    return view.selection.rows + [s.change() for s in view.of(KNOB)]


def plan_interfaces(section: dict, facts: Facts, view: HostView) -> list[Setting]:
    net = view.net
    out: list[Setting] = []
    for name, want in view.selection.wants.items():
        for group in ethtool.SHOW:
            if group in want:
                out += group_settings(group, want[group], net.links[name], net, facts)
    return out


def _onoff(value: object) -> str:
    return "on" if value in (True, "on") else "off"


Resolved = tuple[dict[str, str], dict[str, str], list[Setting]]  # current, desired, rows


def _problem(group: str, out: ethtool.Output | None, link: Link,
             facts: Facts) -> tuple[str, str] | None:
    """Why a whole group cannot be read (and so not set) on this interface, if it cannot:
    (reason detail, message)."""
    if not facts.tools.get("ethtool", True):
        return "no-ethtool", ("ethtool is not installed on this node (Debian/Ubuntu: apt-get "
                              "install ethtool)")
    if out is None:
        return "no-facts", f"{group}: no ethtool facts for {link.name}"
    if out.unsupported:
        return "unsupported", f"{group}: not supported by driver {link.driver_name}"
    if out.error:
        return "ethtool-failed", f"{group}: ethtool -{out.sub} {link.name} failed: {out.error}"
    return None


def group_settings(group: str, asked: dict, link: Link, net: Net, facts: Facts) -> list[Setting]:
    out = link.ethtool.get(ethtool.SHOW[group])
    problem = _problem(group, out, link, facts)
    if problem or out is None:
        shown = ethtool.state({k: _onoff(v) if isinstance(v, bool) else str(v)
                               for k, v in asked.items()})
        detail, why = problem or ("no-facts", "")
        return [skip(KNOB, link.name, group, shown, why, group=group, detail=detail)]
    resolve = {"channels": _limits, "rings": _limits, "coalesce": _coalesce,
               "offloads": _offloads}[group]
    current, desired, rows = resolve(group, asked, out, link, net)
    for row in rows:
        row.group = group
    if desired:
        keys = list(desired)
        s = Setting(KNOB, link.name, group, ethtool.state(current), ethtool.state(desired),
                    ethtool.read_sh(group, link.name, keys), ethtool.set_sh(group, link.name, keys),
                    group=group)
        if group in ("channels", "rings"):
            ifaces.disruptive(s, net)
        rows.insert(0, s)
    return rows


def _limits(group: str, asked: dict, out: ethtool.Output, link: Link, net: Net) -> Resolved:
    keys = ethtool.CHANNEL_KEYS if group == "channels" else ethtool.RING_KEYS
    lim = ethtool.limits(out, keys)
    current, desired, rows = {}, {}, []
    for key, value in asked.items():
        hw, now = lim.maximum.get(key, 0), lim.current.get(key)
        what = f"{group} {key}"
        if not hw:
            rows.append(skip(KNOB, link.name, what, str(value),
                             f"{what}: not supported by driver {link.driver_name} "
                             "(hardware maximum 0)", detail="unsupported"))
            continue
        n = hw if value == "max" else min(len(net.cpus), hw) if value == "auto" else int(value)
        if n > hw:
            rows.append(skip(KNOB, link.name, what, str(n),
                             f"{n} is above the hardware maximum {hw} of {link.name} "
                             f"({link.driver_name}): not applied", current=str(now), flag=ERROR,
                             detail="above-maximum"))
            continue
        current[key], desired[key] = str(now), str(n)
    return current, desired, rows


def _coalesce(group: str, asked: dict, out: ethtool.Output, link: Link, net: Net) -> Resolved:
    found = ethtool.coalesce(out)
    current, desired, rows = {}, {}, []
    for key, value in asked.items():
        want = _onoff(value) if key in ethtool.COALESCE_FLAGS else str(value)
        if found.get(key) is None:
            rows.append(skip(KNOB, link.name, f"coalesce {key}", want, f"coalesce {key}: not "
                             f"supported by driver {link.driver_name}", detail="unsupported"))
            continue
        current[key], desired[key] = str(found[key]), want
    return current, desired, rows


def _offloads(group: str, asked: dict, out: ethtool.Output, link: Link, net: Net) -> Resolved:
    found = ethtool.features(out)
    current, desired, rows = {}, {}, []
    for key, value in asked.items():
        want, name = _onoff(value), ethtool.FEATURE_ALIASES.get(key, key)
        feature = found.get(name)
        if feature is None:
            rows.append(skip(KNOB, link.name, f"offload {key}", want,
                             f"no offload {name} on {link.name} ({link.driver_name})",
                             detail="unsupported"))
            continue
        now = "on" if feature.active else "off"
        if feature.fixed and now != want:
            rows.append(skip(KNOB, link.name, f"offload {key}", want, f"{key} is fixed {now} "
                             f"by driver {link.driver_name}", current=now, detail="fixed"))
            continue
        current[key], desired[key] = now, want
    return current, desired, rows


def planned_queues(link: Link, view: HostView) -> tuple[int, int]:
    """(rx, tx) queue counts once this plan's channel change (if any) is made: RPS/XPS must
    cover the queues that exist then, not only those that exist now."""
    n_rx, n_tx = link.nqueues("rx"), link.nqueues("tx")
    change = view.planned(link.name, "channels")
    if (change is None or not change.settable or "l" not in link.ethtool
            or change.current == change.desired or not change.desired):
        return n_rx, n_tx
    limits = ethtool.limits(link.ethtool["l"], ethtool.CHANNEL_KEYS)
    after = {k: v or 0 for k, v in limits.current.items()}
    after |= {k: int(v) for k, v in (kv.split("=") for kv in change.desired.split())}
    # Queues are combined channels plus dedicated rx (tx) channels; "other" has none.
    return after["combined"] + after["rx"], after["combined"] + after["tx"]
