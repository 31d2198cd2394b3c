"""Interfaces for the NIC knobs (nic, rps, mtu): the fact snippet, its parser, interface
selection by profile blocks, CPU masks, and `Setting`, the read/set/desired triple that
becomes a journal cmd step and a line of /etc/netfix/nic.sh.

The fact snippet runs before the controller knows which interfaces exist, so it reads all
links with one `ip -j -d addr` and runs ethtool only for interfaces some block may match
(its name globs, drivers or the default route; excludes are left to the controller).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from dataclasses import dataclass, field

from netfix import ethtool, sh
from netfix.errors import NetfixError
from netfix.facts import Facts, Needs
from netfix.ifsettings import REGISTRY
from netfix.plan import DISRUPTIVE, NOT_SETTABLE, OK, SKIP, UPDATE, Change, Code, Op, Reason

SCRIPT = "ifaces"
MANAGEMENT = Code.MANAGEMENT  # the change is on the interface carrying netfix's SSH session
WARNING = Code.WARNING
ERROR = Code.ERROR  # a profile value this node cannot take (above the hardware maximum, ...)
INFO = Code.INFO
GROUPS = tuple(REGISTRY)  # the keys a nic.interfaces block can set


# --------------------------------------------------------------------------- facts


def _as_list(value: object) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def needs(section: dict) -> Needs:
    """The same snippet for every NIC knob (the dict key dedups it): it depends only on
    the whole `nic` section."""
    blocks = section.get("interfaces", [])
    matches = [b.get("match", {}) for b in blocks]
    globs = sorted({g for m in matches for g in _as_list(m.get("name"))})
    drivers = sorted({d for m in matches for d in _as_list(m.get("driver"))})
    subs = sorted({ethtool.SHOW[g] for b in blocks for g in ethtool.SHOW if g in b})
    snippet = sh.render("ifaces.sh", NF_GLOBS=globs, NF_DRIVERS=drivers, NF_SUBS=subs,
                        NF_BYROUTE=any(m.get("default_route") for m in matches),
                        NF_BYDRIVER=bool(drivers),
                        NF_QUEUES=any("rps" in b or "xps" in b for b in blocks))
    return Needs(scripts={SCRIPT: snippet})


@dataclass
class Link:
    name: str
    mtu: int | None = None
    min_mtu: int | None = None
    max_mtu: int | None = None
    kind: str | None = None  # linkinfo.info_kind: veth, vxlan, ipip, wireguard, ...
    attrs: dict[str, int] = field(default_factory=dict)  # integer fields of `ip -j -d link`
    info: dict = field(default_factory=dict)  # linkinfo.info_data
    addrs: list[tuple[str, str]] = field(default_factory=list)  # (inet|inet6, address)
    candidate: bool = False  # the fact script looked at it closely (ethtool, queues)
    driver: str | None = None
    ethtool: dict[str, ethtool.Output] = field(default_factory=dict)
    queues: list[str] = field(default_factory=list)  # rx-0, tx-0, ...
    qvalues: dict[str, str] = field(default_factory=dict)  # "rx-0/rps_cpus" -> raw

    def nqueues(self, kind: str) -> int:
        return sum(q.startswith(kind + "-") for q in self.queues)

    @property
    def driver_name(self) -> str:
        return self.driver or self.kind or "unknown"


@dataclass
class Net:
    links: dict[str, Link] = field(default_factory=dict)
    cpus: list[int] = field(default_factory=lambda: [0])
    default_devs: list[str] = field(default_factory=list)
    mgmt: set[str] = field(default_factory=set)  # interfaces carrying our SSH session
    ssh: str = ""

    @property
    def candidates(self) -> list[Link]:
        return [link for name, link in sorted(self.links.items()) if link.candidate]


def cpulist(text: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6]"""
    out: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out += range(int(lo), int(hi) + 1) if hi.isdigit() else [int(lo)]
    return sorted(set(out))


def node(facts: Facts) -> Net:
    return parse(facts.scripts.get(SCRIPT, ""))


def parse(output: str) -> Net:
    """The snippet's records (`== kind args` then payload lines) -> Net. Parsed once per
    host plan: knobs.Context.interfaces builds the host view every NIC knob reads."""
    net = Net()
    records: list[tuple[list[str], list[str]]] = []
    for line in output.splitlines():
        if line.startswith("== "):
            records.append((line[3:].split(), []))
        elif records:
            records[-1][1].append(line)
    mgmt_route = ""
    for head, body in records:
        text = "\n".join(body).strip()
        kind, args = head[0], head[1:]
        if kind == "cpus":
            net.cpus = cpulist(text) or [0]
        elif kind == "ssh":
            net.ssh = text
        elif kind == "mgmt":
            mgmt_route = text
        elif kind == "link" and text:
            for item in _json(text, "ip -j -d link"):
                info = item.get("linkinfo") or {}
                net.links[item["ifname"]] = Link(
                    item["ifname"], item.get("mtu"), item.get("min_mtu"), item.get("max_mtu"),
                    info.get("info_kind"),
                    {k: v for k, v in item.items() if type(v) is int},
                    info.get("info_data") or {}, _addrs(item))
        elif kind == "addr" and text:  # older scripts: `ip -j addr` on its own
            for item in _json(text, "ip -j addr"):
                link = net.links.get(item["ifname"])
                if link:
                    link.addrs = _addrs(item)
        elif kind == "route":
            net.default_devs = _devs(text)
        elif kind == "driver" and args:
            link = net.links.setdefault(args[0], Link(args[0]))
            link.candidate, link.driver = True, text or None
        elif kind == "ethtool" and len(args) == 4:
            link = net.links.setdefault(args[0], Link(args[0]))
            rc = int(args[3]) if args[3].lstrip("-").isdigit() else 1
            link.ethtool[args[1]] = ethtool.Output(args[1], args[2], rc, "\n".join(body))
        elif kind == "queues" and args:
            net.links.setdefault(args[0], Link(args[0])).queues = sorted(
                (q for q in body if q.startswith(("rx-", "tx-"))), key=_queue_order)
        elif kind == "qvalues":
            for line in body:
                path, _, value = line.partition(":")
                parts = path.split("/")  # /sys/class/net/IF/queues/rx-0/rps_cpus
                if len(parts) == 8 and parts[4] in net.links:
                    net.links[parts[4]].qvalues[f"{parts[6]}/{parts[7]}"] = value.strip()
    net.mgmt = _mgmt(net, mgmt_route)
    return net


def _json(text: str, what: str) -> list[dict]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise NetfixError(f"cannot parse `{what}` output from the node ({e}); an iproute2 "
                          "without JSON output (-j) is too old for the NIC knobs") from None
    return data if isinstance(data, list) else []


def _addrs(item: dict) -> list[tuple[str, str]]:
    return [(a.get("family", ""), a.get("local", "")) for a in item.get("addr_info", [])]


def _queue_order(q: str) -> tuple[str, int]:
    kind, _, n = q.partition("-")
    return kind, int(n) if n.isdigit() else 0


def _devs(route_text: str) -> list[str]:
    """Every `dev X` of `ip -o route` lines (multipath routes name several), in order."""
    words = route_text.split()
    found = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "dev"]
    return list(dict.fromkeys(found))


def _mgmt(net: Net, route_get: str) -> set[str]:
    """The interface the SSH session's packets leave by, and the one holding its address."""
    found = set(_devs(route_get))
    parts = net.ssh.split()
    if len(parts) == 4:
        server = parts[2].split("%")[0]
        found |= {link.name for link in net.links.values()
                  if any(addr == server for _, addr in link.addrs)}
    return found


# --------------------------------------------------------------------------- selection


@dataclass
class Selection:
    wants: dict[str, dict]  # interface -> merged settings of every block that matched it
    rows: list[Change]  # one per block: what it matched, or a warning that it matched nothing


def describe_match(match: dict) -> str:
    parts = []
    if match.get("name") is not None:
        parts.append("name " + ",".join(_as_list(match["name"])))
    if match.get("driver") is not None:
        parts.append("driver " + ",".join(_as_list(match["driver"])))
    if match.get("default_route"):
        parts.append("default route")
    if match.get("exclude"):
        parts.append("not " + ",".join(match["exclude"]))
    return "; ".join(parts)


def matches(match: dict, link: Link, net: Net) -> bool:
    names, drivers = _as_list(match.get("name")), _as_list(match.get("driver"))
    if names and not any(fnmatch.fnmatchcase(link.name, g) for g in names):
        return False
    if drivers and link.driver_name not in drivers:
        return False
    if match.get("default_route") and link.name not in net.default_devs:
        return False
    return not any(fnmatch.fnmatchcase(link.name, g) for g in match.get("exclude", []))


def select(section: dict, net: Net) -> Selection:
    """Blocks in order; a later block's settings win over an earlier one's, key by key."""
    wants: dict[str, dict] = {}
    rows = []
    for i, block in enumerate(section.get("interfaces", [])):
        found = [link.name for link in net.candidates if matches(block["match"], link, net)]
        target = f"nic.interfaces[{i}]"
        if not found:
            rows.append(Change("nic", target, None, describe_match(block["match"]), action=SKIP,
                               reasons=[Reason(WARNING, "no-match")],
                               notes=["matched no interface on this host"]))
            continue
        rows.append(Change("nic", target, ", ".join(found), describe_match(block["match"]),
                           action=OK, flags=[INFO], notes=[f"matched {', '.join(found)}"]))
        for name in found:
            want = wants.setdefault(name, {})
            for group, entry in REGISTRY.items():
                if group not in block:
                    continue
                if entry.merge:
                    want[group] = {**want.get(group, {}), **block[group]}
                else:
                    want[group] = block[group]
    return Selection(dict(sorted(wants.items())), rows)


# --------------------------------------------------------------------------- CPU masks


def mask(cpus: list[int] | set[int]) -> str:
    """CPU set -> the normalised form of a kernel CPU mask: hex in comma-separated 32-bit
    groups (what rps_cpus prints and accepts), leading zero groups and digits dropped."""
    value = sum(1 << c for c in set(cpus))
    groups = []
    while True:
        groups.append(value & 0xFFFFFFFF)
        value >>= 32
        if not value:
            break
    text = ",".join(f"{g:08x}" for g in reversed(groups))
    return norm_mask(text)


def norm_mask(raw: str | None) -> str:
    """'00000000,00000003' -> '3'; absent or empty -> '0' (no CPUs: the feature is off)."""
    text = (raw or "").strip().lower().lstrip("0,")
    return text or "0"


def spread(queue: int, nqueues: int, cpus: list[int]) -> list[int]:
    """CPUs for queue `queue` of `nqueues` when spreading: disjoint stripes while there are
    more CPUs than queues, one CPU per queue (round robin) otherwise."""
    if nqueues <= len(cpus):
        return [c for j, c in enumerate(cpus) if j % nqueues == queue % nqueues]
    return [cpus[queue % len(cpus)]]


# --------------------------------------------------------------------------- settings


@dataclass
class Setting:
    """A state behind a command on one interface: how to read and set it, and the value
    wanted. It becomes a plan row (and a journal cmd step when it differs) and, when the
    node can take it, a line of the boot script."""

    knob: str
    iface: str
    what: str  # "channels", "mtu", "rx-0 rps_cpus", ...
    current: str | None
    desired: str | None
    read: str = ""
    set: str = ""
    action: str = ""  # computed from current/desired unless given (SKIP)
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    group: str = ""  # its ifsettings.REGISTRY entry ("channels", "rps", "mtu", ...)
    reasons: list[Reason] = field(default_factory=list)  # details of `flags`

    def flag(self, code: str, detail: str = "", message: str = "") -> None:
        self.reasons.append(Reason(code, detail, message))
        self.flags.append(code)
        if message:
            self.notes.append(message)

    @property
    def label(self) -> str:
        return f"{self.knob}:{self.iface}:{self.what.replace(' ', ':')}"

    @property
    def settable(self) -> bool:
        return self.action != SKIP and bool(self.set)

    def change(self) -> Change:
        action = self.action or (OK if self.current == self.desired else UPDATE)
        c = Change(self.knob, f"{self.iface} {self.what}", self.current, self.desired,
                   action=action, flags=list(self.flags), notes=list(self.notes),
                   reasons=list(self.reasons))
        if action == UPDATE:
            c.ops.append(Op("cmd", self.label, self.current, self.desired, self.read, self.set))
        if action != SKIP:
            c.boot = self.desired
        if action != UPDATE:  # disruptive only matters for what will run
            c.unflag(DISRUPTIVE, MANAGEMENT)
        return c


def skip(knob: str, iface: str, what: str, desired: str | None, note: str,
         current: str | None = None, flag: str = NOT_SETTABLE, group: str = "",
         detail: str = "") -> Setting:
    """A setting this node cannot take: `flag` is its reason code, `detail` what exactly
    (for not-settable: unsupported, no-ethtool, ...)."""
    s = Setting(knob, iface, what, current, desired, action=SKIP, group=group)
    s.flag(flag, detail, note)
    return s


@dataclass
class HostView:
    """One host's interfaces as every NIC knob sees them, built once per host plan: the
    parsed facts, the profile blocks' selection, and the per-interface settings planned so
    far (knobs add theirs in their declared order, so rps sees nic's channel change)."""

    net: Net
    selection: Selection
    settings: list[Setting] = field(default_factory=list)

    def of(self, knob: str) -> list[Setting]:
        return [s for s in self.settings if s.knob == knob]

    def planned(self, iface: str, what: str) -> Setting | None:
        return next((s for s in self.settings if s.iface == iface and s.what == what), None)


def disruptive(s: Setting, net: Net) -> Setting:
    """Ring, channel and MTU changes reset the link on many drivers."""
    s.flag(DISRUPTIVE, s.group)
    if s.iface in net.mgmt:
        where = net.ssh.split()[2] if len(net.ssh.split()) == 4 else "?"
        s.flag(MANAGEMENT, s.iface, f"{s.iface} carries this SSH session (to {where}): apply "
               "refuses this unless --allow-disruptive")
    return s


def is_v6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).version == 6
    except ValueError:
        return False
