"""systemd .link and .network files and NetworkManager connections: who else sets an
interface's rings, channels, coalescing, offloads, MTU or queue length, when, and which
value the interface ends with at boot and when it is re-added.

Read from systemd's and NetworkManager's sources and manuals (docs/writers.md, "link
files and NetworkManager", cites them):
- .link files (systemd.link(5); src/udev/net/link-config.c, link-config-gperf.gperf):
  from /etc, /run, /usr/local/lib and /usr/lib (/lib) .../systemd/network, a name in an
  earlier dir hiding the same name later (a symlink to /dev/null masks it); only the
  FIRST file in lexical order whose [Match] matches applies, so a file sorting before
  99-default.link replaces its naming policy too. udevd applies it (the net_setup_link
  builtin of 80-net-setup-link.rules) when the interface is added: at boot (coldplug is
  an "add" too) and at every re-add.
- netfix's 90-netfix-nic.rules runs nic.sh with RUN+=, which udev runs after all rules
  of the event (udev(7)), so after the .link values: netfix wins over a .link file on
  boot and re-add while its rule is installed; without it, the .link value stays.
- systemd-networkd (.network [Link] MTUBytes=) and NetworkManager (keyfile [ethernet]
  mtu, [ethtool] ring-*, coalesce-*, feature-*, channels-*) configure a device only once
  udev has finished with it, so after netfix's rule: their value is the one the
  interface ends with, at boot and on re-add, while they run or are enabled.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from netfix.facts import Facts, Needs
from netfix.knobs.nicpersist import UDEV
from netfix.plan import Change, Code, When, Writer
from netfix.writers import _common as common

NAME = "linkfiles"
SCRIPT = "linkfiles"
NETWORK_DIRS = ("/etc/systemd/network", "/run/systemd/network",
                "/usr/local/lib/systemd/network", "/usr/lib/systemd/network",
                "/lib/systemd/network")
UDEVD, NETWORKD, NM = "systemd-udevd", "systemd-networkd", "NetworkManager"
# their process names (/proc/PID/comm is 15 characters at most)
MANAGERS = (UDEVD, NETWORKD[:15], NM)
NETFIX_RULE = "netfix-nic"  # Writer.name of netfix's own udev rule / boot unit

# [Link] key of a .link file -> (netfix's group, key in that group; "" for one value)
LINK_KEYS: dict[str, tuple[str, str]] = {
    **{k: ("rings", v) for k, v in (("RxBufferSize", "rx"), ("RxMiniBufferSize", "rx-mini"),
                                    ("RxJumboBufferSize", "rx-jumbo"), ("TxBufferSize", "tx"))},
    **{k: ("channels", v) for k, v in (("RxChannels", "rx"), ("TxChannels", "tx"),
                                       ("OtherChannels", "other"),
                                       ("CombinedChannels", "combined"))},
    **{k: ("coalesce", v) for k, v in (
        ("RxCoalesceSec", "rx-usecs"), ("RxCoalesceIrqSec", "rx-usecs-irq"),
        ("TxCoalesceSec", "tx-usecs"), ("TxCoalesceIrqSec", "tx-usecs-irq"),
        ("RxMaxCoalescedFrames", "rx-frames"), ("RxMaxCoalescedIrqFrames", "rx-frames-irq"),
        ("TxMaxCoalescedFrames", "tx-frames"), ("TxMaxCoalescedIrqFrames", "tx-frames-irq"),
        ("UseAdaptiveRxCoalesce", "adaptive-rx"), ("UseAdaptiveTxCoalesce", "adaptive-tx"))},
    **{k: ("offloads", v) for k, v in (
        ("ReceiveChecksumOffload", "rx"), ("TransmitChecksumOffload", "tx"),
        ("GenericSegmentationOffload", "gso"), ("TCPSegmentationOffload", "tso"),
        ("TCP6SegmentationOffload", "tx-tcp6-segmentation"),
        ("GenericReceiveOffload", "gro"), ("LargeReceiveOffload", "lro"))},
    "MTUBytes": ("mtu", ""),
    "TransmitQueueLength": ("txqueuelen", ""),
}
# NetworkManager keyfile (section, key prefix) -> netfix's group
NM_PREFIXES = (("ethtool", "ring-", "rings"), ("ethtool", "channels-", "channels"),
               ("ethtool", "coalesce-", "coalesce"), ("ethtool", "feature-", "offloads"))
ARPHRD = {"1": "ether", "772": "loopback", "768": "tunnel", "769": "tunnel6", "776": "sit",
          "778": "gre", "823": "ip6gre", "65534": "none", "801": "wlan", "32": "infiniband"}
MATCH_KEYS = {"MACAddress", "PermanentMACAddress", "OriginalName", "Name", "Path", "Driver",
              "Type"}
_TIME = {"us": 1, "usec": 1, "ms": 1000, "msec": 1000, "s": 10**6, "sec": 10**6, "": 10**6,
         "m": 60 * 10**6, "min": 60 * 10**6}
_SIZE = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


@dataclass
class Iface:
    name: str
    mac: str
    driver: str
    type: str
    path: str


@dataclass
class Source:
    """One file's values for one interface, and whether it runs after netfix's rule."""

    writer: str
    file: str
    values: dict[str, dict[str, str]]  # group -> key -> value
    after_netfix: bool  # it sets its value after netfix's udev rule (so it wins)
    active: bool = True  # its daemon runs or is enabled
    notes: list[str] = field(default_factory=list)


def needs(data: dict) -> Needs:
    if not (data.get("nic") or {}).get("interfaces"):
        return Needs()
    return common.needs(SCRIPT, "linkfiles.sh", procs=set(MANAGERS))


# --------------------------------------------------------------------------- parsing


def ifaces(rec: common.Records) -> dict[str, Iface]:
    out = {}
    for words in rec.other:
        if words[0] == "IF" and len(words) == 7:
            name, mac, drv, arphrd, devtype, path = (("" if w == "-" else w) for w in words[1:])
            out[name] = Iface(name, mac.lower(), drv, devtype or ARPHRD.get(arphrd, arphrd), path)
    return out


def effective_files(files: dict[str, str | None], ext: str) -> list[tuple[str, str]]:
    """(path, text) of the files systemd reads, in the order it tries them."""
    chosen: dict[str, str] = {}
    for d in NETWORK_DIRS:
        for path in sorted(files):
            parent, _, base = path.rpartition("/")
            if parent == d and base.endswith(ext):
                chosen.setdefault(base, path)
    return [(chosen[b], files[chosen[b]] or "") for b in sorted(chosen)
            if files[chosen[b]] is not None]


def _globs(value: str) -> tuple[bool, list[str]]:
    """A match list: its words, and whether a leading `!` inverts it."""
    invert = value.startswith("!")
    return invert, value.lstrip("!").split()


def matches(match: list[tuple[str, str]], iface: Iface) -> bool:
    """systemd's net_match_config for the keys netfix models: every key given must match
    (a file with only keys netfix cannot evaluate, Host= and the like, does not match)."""
    have = {"MACAddress": iface.mac, "PermanentMACAddress": iface.mac, "OriginalName":
            iface.name, "Name": iface.name, "Path": iface.path, "Driver": iface.driver,
            "Type": iface.type}
    for key, value in match:
        if key not in MATCH_KEYS:
            return False
        invert, pats = _globs(value)
        if not pats:
            continue
        subject = have[key]
        if key.endswith("MACAddress"):
            hit = subject in {p.lower() for p in pats}
        else:
            hit = any(fnmatch.fnmatchcase(subject, p) for p in pats)
        if hit == invert:
            return False
    return True


def _bool(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("1", "yes", "true", "on"):
        return "on"
    if v in ("0", "no", "false", "off"):
        return "off"
    return None


def _usecs(value: str) -> str | None:
    m = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", value)
    if not m or m.group(2) not in _TIME:
        return None
    return str(int(m.group(1)) * _TIME[m.group(2)])


def _bytes(value: str) -> str | None:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", value)
    return str(int(m.group(1)) * _SIZE[m.group(2)]) if m else None


def _parse(group: str, name: str, value: str, span: bool = False) -> str | None:
    """One value in netfix's form: on/off for offloads and adaptive coalescing, µs for a
    time span, bytes for an MTU, else a count (or "max", for rings and channels)."""
    if group == "offloads" or name.startswith("adaptive"):
        return _bool(value)
    if span:
        return _usecs(value)
    if group == "mtu":
        return _bytes(value)
    v = value.strip()
    return v if v.isdigit() or (v == "max" and group in ("rings", "channels")) else None


def link_values(entries: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for section, key, value in entries:
        if section == "Link" and key in LINK_KEYS:
            group, name = LINK_KEYS[key]
            parsed = _parse(group, name, value, span=key.endswith("Sec"))
            if parsed is not None:
                out.setdefault(group, {})[name] = parsed
    return out


def nm_values(conf: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    mtu = conf.get("ethernet", {}).get("mtu", "").strip()
    if mtu.isdigit() and mtu != "0":  # 0: NetworkManager leaves the MTU alone
        out["mtu"] = {"": mtu}
    for section, prefix, group in NM_PREFIXES:
        for key, value in conf.get(section, {}).items():
            if key.startswith(prefix):
                name = key[len(prefix):]
                parsed = _parse(group, name, value)
                if parsed is not None:
                    out.setdefault(group, {})[name] = parsed
    return out


def first_match(rec: common.Records, ext: str,
                iface: Iface) -> tuple[str, list[tuple[str, str, str]]] | None:
    """The one .link (.network) file that applies to `iface`: the first that matches."""
    for path, text in effective_files(rec.files, ext):
        entries = common.ini(text)
        if matches([(k, v) for s, k, v in entries if s == "Match"], iface):
            return path, entries
    return None


# --------------------------------------------------------------------------- model


def sources(rec: common.Records, iface: Iface, netfix_rule: bool) -> list[Source]:
    """Every other writer of `iface`'s link settings, in the order they run."""
    running = {p.comm for p in rec.procs}
    enabled = {w[1] for w in rec.other if w[0] == "ENABLED" and len(w) > 1}
    out: list[Source] = []
    link = first_match(rec, ".link", iface)
    if link:
        path, entries = link
        src = Source(UDEVD, path, link_values(entries), after_netfix=not netfix_rule)
        keys = {k for s, k, _ in entries if s == "Link"}
        if not path.endswith("/99-default.link") and not keys & {"Name", "NamePolicy"}:
            src.notes.append(f"{path} is the first .link file matching {iface.name} and sets "
                             "no NamePolicy= or Name=: 99-default.link's naming policy no "
                             f"longer applies, so {iface.name} keeps its kernel name at the "
                             "next boot")
        out.append(src)
    network = first_match(rec, ".network", iface)
    if network:
        path, entries = network
        mtu = next((_bytes(v) for s, k, v in entries if s == "Link" and k == "MTUBytes"), None)
        if mtu:
            out.append(Source(NETWORKD, path, {"mtu": {"": mtu}}, after_netfix=True,
                              active="systemd-network" in running or NETWORKD in enabled))
    for path, text in sorted(rec.files.items()):
        if not path.endswith(".nmconnection") or text is None:
            continue
        conf = common.sections(text)
        name = conf.get("connection", {}).get("interface-name", "")
        mac = conf.get("ethernet", {}).get("mac-address", "").lower()
        if (name and name == iface.name) or (not name and mac and mac == iface.mac):
            out.append(Source(NM, path, nm_values(conf), after_netfix=True,
                              active=NM in running or NM in enabled))
    return out


def annotate(changes: list[Change], facts: Facts) -> None:
    text = facts.scripts.get(SCRIPT)
    if not text:
        return
    rec = common.records(text)
    links = ifaces(rec)
    rule = next((c for c in changes if c.target == UDEV), None)
    netfix_rule = rule is not None and rule.desired != "absent"
    rows = common.iface_changes(changes)
    warned: set[str] = set()
    for name in sorted({i for i, _ in rows}):
        if name not in links:
            continue
        for src in sources(rec, links[name], netfix_rule):
            for group, theirs in src.values.items():
                c = rows.get((name, group))
                if c is not None:
                    _row(c, src, theirs, netfix_rule)
                    if src.notes and name not in warned:
                        warned.add(name)
                        for note in src.notes:
                            c.flag(Code.WARNING, src.file, note)


def _row(c: Change, src: Source, theirs: dict[str, str], netfix_rule: bool) -> None:
    iface = c.target.partition(" ")[0]
    o = common.overlap(c, theirs)
    if not o.shared:
        return
    shown, differ = o.shown, o.differ
    wins = src.active and src.after_netfix and differ
    w = Writer(src.writer, When.LINK_ADD, shown, source=src.file, wins=wins)
    if not src.active:
        common.add(c, w, "netfix", f"{src.file} sets {shown} but {src.writer} neither runs "
                   "nor is enabled")
    elif not differ:
        common.add(c, w, "netfix", f"{src.file} sets the same {c.target}")
    elif wins:
        c.boot = o.after  # the value at boot: netfix's, the other writer's keys over it
        fix = ("let netfix persist it (its udev rule runs after every .link file)"
               if src.writer == UDEVD else "set netfix's value there, or remove it there")
        common.add(c, w, src.writer, conflict=(
            f"{src.writer} sets {shown} from {src.file} when {iface} appears (at boot and "
            "on re-add), after netfix's boot unit and udev rule: the interface ends with "
            f"that value; {fix}"))
    else:
        common.add(c, w, "netfix", (
            f"{src.file} sets {shown} when {iface} appears (at boot and on re-add); "
            f"netfix's {UDEV} runs after every rule of that event (udev RUN), so netfix's "
            f"{c.desired} is the value it ends with"))
    if src.writer == UDEVD:  # netfix's own re-apply, for the order to be read in the row
        c.writers.append(Writer(NETFIX_RULE, When.LINK_ADD, c.desired, source=UDEV,
                                wins=c.wins == "netfix"))
