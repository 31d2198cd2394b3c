"""The per-interface setting registry: every key a `nic.interfaces` block can hold, and
what netfix knows about it. Interface selection (which keys a block carries over), the
boot script /etc/netfix/nic.sh (which settings it re-applies) and the `nic_block` schema
fragment (tests/unit/test_knob_contract.py checks they agree) all come from this table.

A setting is planned by one knob module (`planner`): `nic` for the ethtool groups, `rps`
for the queue masks, `link` for plain link attributes. A `link` setting needs nothing but
its entry: it is read from `ip -j -d link` (the fact script reads every link already),
checked against the link's own bounds if it has them, set with `ip link set`, and read
back on the node from sysfs for the journal's stale check. Adding one is one entry here
plus one property in schema/profile.json.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinkAttr:
    """A link attribute `ip link` reads and sets: an integer."""

    json: str  # field of `ip -j -d link show`
    sysfs: str  # /sys/class/net/IF/<sysfs> holds the same value
    ip: str  # `ip link set dev IF <ip> N`
    bounds: tuple[str, str] | None = None  # fields of `ip -j -d link` with the allowed range
    unit: str = ""


@dataclass(frozen=True)
class IfaceSetting:
    name: str  # key in a nic.interfaces block
    planner: str  # knob module that plans it
    reads: str  # how the node's value is read (for people and docs)
    sets: str  # how it is set
    normalise: str  # what makes two values equal
    disruptive: bool  # resets the link on many drivers: apply needs --allow-disruptive
    persist: bool  # re-applied at boot and on hotplug by /etc/netfix/nic.sh
    merge: bool = True  # a dict merged key by key across matching blocks; else the last wins
    label: str = ""  # in messages, when not the name
    link: LinkAttr | None = None  # for planner "link": everything the generic planner needs


REGISTRY: dict[str, IfaceSetting] = {s.name: s for s in (
    IfaceSetting("channels", "nic", "ethtool -l", "ethtool -L", "key=value, keys sorted",
                 disruptive=True, persist=True),
    IfaceSetting("rings", "nic", "ethtool -g", "ethtool -G", "key=value, keys sorted",
                 disruptive=True, persist=True),
    IfaceSetting("coalesce", "nic", "ethtool -c", "ethtool -C", "key=value, on/off flags",
                 disruptive=False, persist=True),
    IfaceSetting("offloads", "nic", "ethtool -k", "ethtool -K", "on/off per feature",
                 disruptive=False, persist=True),
    IfaceSetting("rps", "rps", "queues/rx-N/rps_cpus, rps_flow_cnt", "echo > the queue file",
                 "CPU mask in hex, leading zeros dropped", disruptive=False, persist=True),
    IfaceSetting("xps", "rps", "queues/tx-N/xps_cpus", "echo > the queue file",
                 "CPU mask in hex, leading zeros dropped", disruptive=False, persist=True),
    IfaceSetting("mtu", "link", "ip -j link: mtu", "ip link set dev IF mtu N", "integer",
                 disruptive=True, persist=True, merge=False, label="MTU",
                 link=LinkAttr("mtu", "mtu", "mtu", bounds=("min_mtu", "max_mtu"))),
    IfaceSetting("txqueuelen", "link", "ip -j link: txqlen", "ip link set dev IF txqueuelen N",
                 "integer", disruptive=False, persist=True, merge=False,
                 link=LinkAttr("txqlen", "tx_queue_len", "txqueuelen", unit="packets")),
)}


def planned_by(planner: str) -> list[IfaceSetting]:
    return [s for s in REGISTRY.values() if s.planner == planner]
