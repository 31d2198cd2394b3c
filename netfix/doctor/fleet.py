"""fleet: the hosts whose value differs from the majority of their inventory group.

The first advice of every troubleshooting note is "compare the bad node with a healthy
one"; doctor does it for every host of one run at once, over the values the detectors
already read (plus driver versions and offloads of device-backed interfaces, from
fleet.sh): the kernel release, a fixed set of sysctls (SYSCTLS), and per interface its
driver, MTU, ring sizes, driver and firmware version and offloads (gro, lro, tso, gso).

Rules (`outliers_of`, a pure function; the runner calls `outliers` after all hosts are
sampled, so `detect` itself finds nothing on one host):

- a host is compared within each inventory group it is in (`Sample.groups`; `all` only
  for a host in no other group), the most specific group first (the inventory lists
  parents before children); the first group that has a majority for a value decides;
- an interface value is compared only with the hosts that have an interface of that name
  *with the same driver* (the driver itself with every host that has that interface);
- a majority needs at least MIN_GROUP hosts with the value and strictly more than half of
  them agreeing; ties and small groups report nothing;
- a host without the value (file absent, interface absent, host not checked) is not
  counted and is never an outlier for it;
- an outlier is a warning `fleet-outlier`: subject the sysctl key, `kernel`, or
  `IFACE KEY`; evidence value, majority_value, majority_count, group_size (the hosts with
  the value, same driver) and group. The remedy of a sysctl is a profile fragment setting
  the majority value in the section that owns the key (`sysctl:`, or `syn_flood:` /
  `conntrack:` for the keys those sections own, so it merges with the other detectors'
  remedies and passes the profile checks); everything else is an action.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from netfix import ethtool, ifaces
from netfix.doctor import Finding, Remedy, Sample, Severity
from netfix.doctor.parse import files, iface_lines, sections

NAME = "fleet"
CODES = {
    "fleet-outlier": "a value (kernel, sysctl, interface MTU, driver, rings, offloads) "
                     "differs from the majority of the hosts in the same inventory group "
                     "(and driver): compare the odd node with the others first",
}
MIN_GROUP = 3
ALL = "all"

# The sysctls compared (whichever the node has): accept queues, SYN floods, backlog and
# budget, conntrack size and established timeout.
SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.core.netdev_max_backlog",
    "net.core.netdev_budget",
    "net.core.netdev_budget_usecs",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
)
OFFLOADS = {"generic-receive-offload": "gro", "large-receive-offload": "lro",
            "tcp-segmentation-offload": "tso", "generic-segmentation-offload": "gso"}
INFO = {"version": "driver_version", "firmware-version": "firmware"}
KERNEL = "kernel"
DRIVER = "driver"


def detect(sample: Sample) -> list[Finding]:
    """Nothing on one host: outliers need the whole run (see `outliers`)."""
    return []


@dataclass(frozen=True, order=True)
class Key:
    name: str  # a sysctl key, "kernel", or an interface value: "mtu", "gro", "ring_rx"...
    iface: str = ""  # "" for a host-wide value

    @property
    def subject(self) -> str:
        return f"{self.iface} {self.name}" if self.iface else self.name


@dataclass
class HostValues:
    host: str
    groups: list[str] = field(default_factory=list)
    values: dict[Key, str] = field(default_factory=dict)
    drivers: dict[str, str] = field(default_factory=dict)  # iface -> driver ("" unknown)

    def driver(self, key: Key) -> str | None:
        """The driver an interface value is compared under; None: compared with all."""
        if not key.iface or key.name == DRIVER:
            return None
        return self.drivers.get(key.iface, "")


# ------------------------------------------------------------------------- reading


def _norm(value: str) -> str:
    return " ".join(str(value).split())


def host_values(sample: Sample) -> HostValues:
    """The values to compare, from what the detectors' sh read on this host."""
    hv = HostValues(sample.host, list(sample.groups))
    if sample.kernel:
        hv.values[Key(KERNEL)] = sample.kernel
    texts = [*sample.once.values(), *sample.before.values()]
    for text in texts:
        for path, value in files(text).items():
            if path.startswith("/proc/sys/"):
                key = path.removeprefix("/proc/sys/").replace("/", ".")
                if key in SYSCTLS and value.strip():
                    hv.values[Key(key)] = _norm(value)
    net = ifaces.parse(sample.once.get("mtu", ""))
    nic = sections(sample.once.get("nic"))
    hw = iface_lines(nic.get("ifaces"))
    for name, link in net.links.items():
        if name == "lo":
            continue
        driver = hw.get(name, {}).get("driver") or link.kind or ""
        hv.drivers[name] = driver
        if driver:
            hv.values[Key(DRIVER, name)] = driver
        if link.mtu is not None:
            hv.values[Key("mtu", name)] = str(link.mtu)
    for head, text in nic.items():
        kind, _, name = head.partition(" ")
        if kind == "ring" and name:
            lim = ethtool.limits(ethtool.Output("g", "text", 0, text), ("rx", "tx"))
            for k, v in lim.current.items():
                if v is not None:
                    hv.values[Key(f"ring_{k}", name)] = str(v)
    for head, text in sections(sample.once.get(NAME)).items():
        kind, _, name = head.partition(" ")
        if not name:
            continue
        if kind == "offload":
            for feat, f in ethtool.features(ethtool.Output("k", "text", 0, text)).items():
                if feat in OFFLOADS:
                    hv.values[Key(OFFLOADS[feat], name)] = "on" if f.active else "off"
        elif kind == "info":
            for line in text.splitlines():
                k, sep, v = line.partition(":")
                if sep and k.strip() in INFO and v.strip():
                    hv.values[Key(INFO[k.strip()], name)] = _norm(v)
    return hv


# ------------------------------------------------------------------------- comparing


def majority(values: Sequence[str], min_group: int = MIN_GROUP) -> tuple[str, int] | None:
    """The value more than half of `values` agree on, and how many; None below
    `min_group` values or without a strict majority."""
    if len(values) < min_group:
        return None
    top = Counter(values).most_common(2)
    value, count = top[0]
    if count * 2 <= len(values):
        return None
    return value, count


def _groups(h: HostValues) -> list[str]:
    """The groups a host is compared in, the most specific first."""
    own = [g for g in h.groups if g != ALL]
    return list(reversed(own)) or [ALL]


def outliers_of(hosts: Iterable[HostValues],
                min_group: int = MIN_GROUP) -> dict[str, list[Finding]]:
    """host -> its fleet-outlier findings (every host of the run has an entry)."""
    hosts = list(hosts)
    members: dict[str, list[HostValues]] = {ALL: hosts}
    for h in hosts:
        for g in h.groups:
            if g != ALL:
                members.setdefault(g, []).append(h)
    out: dict[str, list[Finding]] = {h.host: [] for h in hosts}
    cache: dict[tuple[str, Key, str | None], tuple[tuple[str, int] | None, int]] = {}
    for h in hosts:
        for key, value in sorted(h.values.items()):
            driver = h.driver(key)
            for group in _groups(h):
                ck = (group, key, driver)
                if ck not in cache:
                    pop = [o.values[key] for o in members.get(group, [])
                           if key in o.values and o.driver(key) == driver]
                    cache[ck] = (majority(pop, min_group), len(pop))
                found, size = cache[ck]
                if found is None:
                    continue  # no majority here: a broader group may have one
                if value != found[0]:
                    out[h.host].append(finding(h.host, key, value, found[0], found[1], size,
                                               group, driver))
                break  # the most specific group with a majority decides
    return out


def outliers(samples: Iterable[Sample], min_group: int = MIN_GROUP) -> dict[str, list[Finding]]:
    return outliers_of((host_values(s) for s in samples), min_group)


# ------------------------------------------------------------------------- findings


def _num(value: str) -> int | str:
    v = value.strip()
    return int(v) if v.lstrip("-").isdigit() else v


def sysctl_remedy(key: str, majority_value: str, note: str) -> Remedy:
    """The majority value as a profile fragment in the section that owns `key`."""
    from netfix.knobs import conntrack, synflood

    value = _num(majority_value)
    for fld, (skey, _why) in synflood.KEYS.items():
        if skey == key:
            return Remedy(profile={"syn_flood": {fld: value}},
                          comments={f"syn_flood.{fld}": note})
    owner = conntrack.field_for_sysctl(key)
    if owner == "conntrack.max" and isinstance(value, int):
        return Remedy(profile={"conntrack": {"max": value, "auto": None}},
                      comments={"conntrack.max": note})
    if owner and owner.startswith("conntrack.timeouts.") and isinstance(value, int):
        fld = owner.rsplit(".", 1)[1]
        return Remedy(profile={"conntrack": {"timeouts": {fld: value}}},
                      comments={owner: note})
    if owner:  # buckets follow conntrack.max at 4:1; an unknown timeout
        return Remedy(action=f"{key} is set through {owner} (buckets follow conntrack.max "
                      f"at 1:4); set the majority's value {majority_value} there, or find why "
                      "this node differs")
    return Remedy(profile={"sysctl": {key: value}}, comments={f"sysctl.{key}": note})


def finding(host: str, key: Key, value: str, majority_value: str, count: int, size: int,
            group: str, driver: str | None) -> Finding:
    on = f" with {key.iface} on {driver or 'an unknown driver'}" if driver is not None else ""
    summary = (f"{host} {key.subject} {value}; {count} of {size} hosts in group {group}"
               f"{on} have {key.name} {majority_value}")
    evidence: dict[str, float | int | str] = {
        "value": _num(value), "majority_value": _num(majority_value),
        "majority_count": count, "group_size": size, "group": group}
    if key.iface:
        evidence["interface"] = key.iface
    if driver is not None:
        evidence["driver"] = driver
    note = (f"{value} on {host}; {count} of {size} hosts in group {group} have "
            f"{majority_value}")
    if key.iface:
        remedy = Remedy(action=_iface_action(key, majority_value, group))
    elif key.name == KERNEL:
        remedy = Remedy(action=f"{host} runs kernel {value}, the rest of group {group} "
                        f"{majority_value}: upgrade or downgrade it (drivers, conntrack and "
                        "TCP behave differently across releases), or drain it until it does")
    else:
        remedy = sysctl_remedy(key.name, majority_value, note)
    return Finding(
        code="fleet-outlier", severity=Severity.WARNING, subject=key.subject,
        summary=summary,
        why="a value only this node has is the first suspect when only this node "
            "misbehaves (large transfers stall, drops, slow connects): the troubleshooting "
            "notes all start by comparing the bad node with a healthy one",
        evidence=evidence, remedy=remedy, now=True)


def _iface_action(key: Key, majority_value: str, group: str) -> str:
    how = {
        "mtu": f"`nic: {{interfaces: [{{match: {{name: {key.iface}}}, mtu: "
               f"{majority_value}}}]}}` in its profile",
        "ring_rx": f"`rings: {{rx: {majority_value}}}` for {key.iface} in its profile",
        "ring_tx": f"`rings: {{tx: {majority_value}}}` for {key.iface} in its profile",
    }
    if key.name in OFFLOADS.values():
        how[key.name] = (f"`offloads: {{{key.name}: {majority_value}}}` for {key.iface} in "
                         "its profile")
    if key.name in how:
        return (f"make {key.iface}'s {key.name} {majority_value} like the rest of group "
                f"{group} ({how[key.name]}), or find out why this node differs (the switch "
                "port, the cloud instance type, a hand-made change)")
    return (f"{key.iface}'s {key.name} differs from the rest of group {group} "
            f"({majority_value}): align the driver, its version or the NIC firmware, or "
            "find out why this node differs")
