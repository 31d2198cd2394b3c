"""NodePort firewall: netfix's own nftables table `inet netfix`, and nothing else.

One base chain on the prerouting hook at priority -150 (mangle), before kube-proxy's DNAT
at -100, drops packets to local NodePorts (and extra ports) on the selected input
interfaces from sources outside the allow-list. A drop in a base chain is final and an
accept is not, so this table can only tighten what kube-proxy and the CNI allow; it never
touches their tables and never flushes the ruleset.

How the state is compared and loaded (the `cmd` step):
- The state is the table as nft prints it (`nft -s list table inet netfix`, whitespace
  normalised, base64), or "absent". `read` prints it; `set` loads a given state with ONE
  `nft -f` of "table inet netfix / delete table inet netfix / <listing>", which is atomic
  and idempotent (the add makes the delete safe when the table is missing). Because the
  journal holds the full listing, a rollback from any controller restores the previous
  table exactly, or deletes it when there was none.
- The desired state must be in nft's own printed form, which depends on the nft version
  on the node (`priority -150` prints as `priority mangle` on some). So the fact script
  loads the generated ruleset into a throwaway network namespace (`unshare -n`) and lists
  it there: the same round trip, the exact form the node will print, and an nft syntax or
  kernel-support error is reported in the plan before anything is changed. The controller
  keeps each node's render (netfix/rendercache.py, ctx.renders) and sends it back with the
  nft version and kernel it was made under; the probe prints it back (RENDER-CACHED)
  instead of rendering again when the node still has those.

Persistence: /etc/netfix/firewall.nft, loaded by a unit of netfix's own
(netfix-firewall.service) that a drop-in makes sysinit.target want. All three are plain
files, so rollback removes exactly them (see the README for why not /etc/nftables.conf).
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

from netfix import rendercache, sh
from netfix.facts import Facts, Needs
from netfix.knobs import Context
from netfix.plan import NOT_SETTABLE, OK, SKIP, UPDATE, Change, Op
from netfix.sysctlfiles import file_change

SECTION = "firewall"
AFTER: tuple[str, ...] = ()
TABLE = "table inet netfix"
STATE_LABEL = "nft:inet/netfix"  # the cmd step's label and its fact script's name
PROBE = "firewall-probe"
ABSENT = "absent"
RULESET = "/etc/netfix/firewall.nft"
UNIT = "/etc/systemd/system/netfix-firewall.service"
WANTS = "/etc/systemd/system/sysinit.target.d/netfix-firewall.conf"
SYSTEMD_DIR = "/etc/systemd/system"

DEFAULT_RANGE = "30000-32767"
DEFAULT_RATE = "5/minute"
DEFAULT_PREFIX = "netfix-drop "
# Traffic arriving on these comes from pods or the node itself: pods reaching a NodePort
# through the node's address must keep working, and they are not the internet. lxc* are
# Cilium's pod veths.
DEFAULT_EXCLUDE = ("cali*", "cilium*", "flannel*", "cni*", "veth*", "vxlan*", "tunl*",
                   "wireguard*", "kube-*", "lxc*")

# The schema's whitelists again: check_profile() runs them so that data that skipped the
# schema (a library caller) still never puts an unchecked string into nft or sh.
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}\*?")
_RATE = re.compile(r"[1-9][0-9]{0,5}/(second|minute|hour|day)")
_PREFIX = re.compile(r"[A-Za-z0-9 _.:=-]{1,60}")
_RANGE = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")
_NFT_PATH = re.compile(r"/[A-Za-z0-9/_.+-]+")

# The cmd step (netfix/sh/firewall-read.sh, firewall-set.sh): the state of the table, and
# how to load one.
READ = sh.load("firewall-read.sh").rstrip("\n")
SET = sh.load("firewall-set.sh").rstrip("\n")


@dataclass
class Config:
    """The firewall section with defaults applied and every value validated."""

    enabled: bool = True
    low: int = 30000
    high: int = 32767
    allow4: list[str] = field(default_factory=list)
    allow6: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    extra: dict[str, list[int]] = field(default_factory=dict)  # proto -> ports
    log: bool = False
    rate: str = DEFAULT_RATE
    prefix: str = DEFAULT_PREFIX


def check_profile(data: dict) -> list[tuple[str, tuple]]:
    """What the schema cannot say: real CIDRs (ipaddress), LOW <= HIGH in 1..65535.
    Called from the profile's semantic checks; returns (message, field path) pairs."""
    nodeports = (data.get(SECTION) or {}).get("nodeports") or {}
    where = (SECTION, "nodeports")
    problems: list[tuple[str, tuple]] = []
    rng = nodeports.get("range", DEFAULT_RANGE)
    m = _RANGE.fullmatch(str(rng))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)) <= 65535:
        problems.append((f"{rng!r} is not a port range LOW-HIGH with 1 <= LOW <= HIGH <= "
                         "65535", where + ("range",)))
    for i, cidr in enumerate(nodeports.get("allow", [])):
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError as e:
            problems.append((f"{cidr!r} is not a valid CIDR: {e}", where + ("allow", i)))
    for kind in ("include", "exclude"):
        for i, name in enumerate((nodeports.get("interfaces") or {}).get(kind, [])):
            if not _IFNAME.fullmatch(str(name)):
                problems.append((f"{name!r} is not an interface name pattern",
                                 where + ("interfaces", kind, i)))
    for i, item in enumerate(nodeports.get("extra_ports", [])):
        port, proto = item.get("port"), item.get("proto", "tcp")
        if type(port) is not int or not 1 <= port <= 65535 or proto not in ("tcp", "udp"):
            problems.append((f"{item!r} is not a port 1-65535 with proto tcp or udp",
                             where + ("extra_ports", i)))
    log = nodeports.get("log") or {}
    if "rate" in log and not _RATE.fullmatch(str(log["rate"])):
        problems.append((f"{log['rate']!r} is not a rate like 5/minute", where + ("log", "rate")))
    if "prefix" in log and not _PREFIX.fullmatch(str(log["prefix"])):
        problems.append((f"{log['prefix']!r} is not a safe log prefix",
                         where + ("log", "prefix")))
    return problems


def config(section: dict) -> Config:
    problems = check_profile({SECTION: section})
    if problems:  # profiles are checked on load; this guards direct library callers
        raise ValueError("; ".join(f"{'.'.join(map(str, p))}: {m}" for m, p in problems))
    np = section.get("nodeports") or {}
    low, high = (int(x) for x in np.get("range", DEFAULT_RANGE).split("-"))
    nets = [ipaddress.ip_network(c, strict=True) for c in np.get("allow", [])]
    # Collapsed: an interval set refuses overlapping elements, and 10.0.0.0/8 plus
    # 10.1.0.0/16 is an easy thing to write.
    v4 = [str(n) for n in ipaddress.collapse_addresses(n for n in nets if n.version == 4)]
    v6 = [str(n) for n in ipaddress.collapse_addresses(n for n in nets if n.version == 6)]
    ifaces = np.get("interfaces") or {}
    extra: dict[str, list[int]] = {}
    for item in np.get("extra_ports", []):
        ports = extra.setdefault(item.get("proto", "tcp"), [])
        if int(item["port"]) not in ports:
            ports.append(int(item["port"]))
    log = np.get("log")
    return Config(
        enabled=section.get("enabled", True), low=low, high=high, allow4=v4, allow6=v6,
        include=list(ifaces.get("include", [])),
        exclude=list(ifaces.get("exclude", DEFAULT_EXCLUDE)),
        extra={p: sorted(v) for p, v in sorted(extra.items())},
        log=log is not None and log.get("enabled", True),
        rate=(log or {}).get("rate", DEFAULT_RATE),
        prefix=(log or {}).get("prefix", DEFAULT_PREFIX),
    )


def _elements(items: list[str]) -> str:
    return f" elements = {{ {', '.join(items)} }};" if items else ""


def ruleset(s: Config) -> str:
    """The table definition (nft syntax), deterministic for the same config."""
    excludes = ["lo", *[x for x in s.exclude if x != "lo"]]
    lines = [
        "table inet netfix {",
        f"\tset allow4 {{ type ipv4_addr; flags interval;{_elements(s.allow4)} }}",
        f"\tset allow6 {{ type ipv6_addr; flags interval;{_elements(s.allow6)} }}",
        "",
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority -150; policy accept;",
    ]
    # One rule per pattern: wildcards inside anonymous sets need a recent nft and kernel.
    lines += [f'\t\tiifname "{name}" return' for name in excludes]
    if s.include:
        lines += [f'\t\tiifname "{name}" goto guard' for name in s.include]
    else:
        lines.append("\t\tgoto guard")
    lines += [
        "\t}",
        "",
        "\tchain guard {",
        # Replies to connections the node or its (masqueraded) pods opened may land on a
        # port in the NodePort range when ip_local_port_range overlaps it.
        "\t\tct direction reply return",
        "\t\tfib daddr type != local return",
        f"\t\ttcp dport {s.low}-{s.high} jump deny",
        f"\t\tudp dport {s.low}-{s.high} jump deny",
    ]
    for proto, ports in s.extra.items():
        lines.append(f"\t\t{proto} dport {{ {', '.join(map(str, ports))} }} jump deny")
    lines += [
        "\t}",
        "",
        "\tchain deny {",
        "\t\tip saddr @allow4 return",
        "\t\tip6 saddr @allow6 return",
    ]
    if s.log:
        lines.append(f'\t\tlimit rate {s.rate} log prefix "{s.prefix}"')
    lines += ["\t\tdrop", "\t}", "}"]
    return "\n".join(lines) + "\n"


def ruleset_file(s: Config, ctx: Context) -> bytes:
    """What the boot unit loads: the same add/delete/define idiom as the live load."""
    return (
        "#!/usr/sbin/nft -f\n" + ctx.header
        + "# Loaded at boot by netfix-firewall.service. Only table inet netfix: kube-proxy's\n"
        "# and the CNI's tables are never touched (no flush ruleset).\n"
        + f"{TABLE}\ndelete {TABLE}\n" + ruleset(s)
    ).encode()


def unit_file(nft: str, ctx: Context) -> bytes:
    return (
        ctx.header
        + "[Unit]\n"
        "Description=netfix NodePort firewall (nftables table inet netfix)\n"
        "DefaultDependencies=no\n"
        "Wants=network-pre.target\n"
        "Before=network-pre.target shutdown.target\n"
        "# Debian's /etc/nftables.conf starts with `flush ruleset`: load after it, or the\n"
        "# table would be flushed away at boot.\n"
        "After=nftables.service\n"
        "Conflicts=shutdown.target\n"
        "\n[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={nft} -f {RULESET}\n"
    ).encode()


def wants_file(ctx: Context) -> bytes:
    # A drop-in instead of `systemctl enable`: a plain file that rollback deletes exactly,
    # where enable would create a symlink netfix's file steps cannot restore.
    return (ctx.header + "[Unit]\nWants=netfix-firewall.service\n").encode()


def probe(desired: str | None, cached: rendercache.Render | None = None) -> str:
    """Fact snippet: is nft usable, where is it, is there systemd, and the desired table
    as this node's nft prints it (loaded in a throwaway network namespace), or `cached`
    printed back when the node's nft version and kernel are the ones it was made under."""
    src = "" if desired is None else base64.b64encode(desired.encode()).decode()
    c = cached if desired is not None and cached is not None else rendercache.Render("", "", "")
    return sh.render("firewall-probe.sh", NF_RULESET=src, NF_CACHE_NFT=c.nft,
                     NF_CACHE_KERNEL=c.kernel, NF_CACHE_RENDER=c.listing).rstrip("\n")


def needs(section: dict, ctx: Context) -> Needs:
    s = config(section)
    desired = ruleset(s) if s.enabled else None
    cached = ctx.renders.get(desired) if ctx.renders and desired else None
    return Needs(files={RULESET, UNIT, WANTS},
                 scripts={STATE_LABEL: READ, PROBE: probe(desired, cached)})


@dataclass
class Probe:
    nft: str = "none"  # none, ok, broken
    nft_path: str = ""
    nft_detail: str = ""
    systemd: bool = False
    rendered: str | None = None  # desired state (base64 listing)
    render_error: str = ""
    cached: bool = False  # `rendered` is the controller's cached render, printed back


def parse_probe(output: str) -> Probe:
    p = Probe()
    for line in output.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "NFT":
            p.nft, _, detail = rest.partition(" ")
            if p.nft in ("ok", "broken"):
                p.nft_path, _, p.nft_detail = detail.partition(" ")
        elif tag == "SYSTEMD":
            p.systemd = rest.strip() == "yes"
        elif tag in ("RENDER", "RENDER-CACHED"):
            p.rendered, p.cached = rest.strip(), tag == "RENDER-CACHED"
        elif tag == "RENDER-ERROR":
            p.render_error = base64.b64decode(rest.strip() or b"").decode(errors="replace")
    return p


def listing(state: str | None) -> list[str]:
    """The table's lines from a state string ([] for absent or unreadable)."""
    if not state or state in (ABSENT, "nft-unavailable"):
        return []
    try:
        return base64.b64decode(state, validate=True).decode(errors="replace").splitlines()
    except ValueError:
        return []


def describe_state(state: str | None) -> str:
    if state is None or state == ABSENT:
        return ABSENT
    if state == "nft-unavailable":
        return "unreadable (nft list failed)"
    lines = listing(state)
    chains = rules = 0
    in_chain = False
    for line in lines:  # normalised: one statement per line, no indentation
        if line.startswith("chain "):
            chains, in_chain = chains + 1, True
        elif line == "}":
            in_chain = False
        elif in_chain and not line.startswith("type "):
            rules += 1
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
    return f"{chains} chains, {rules} rules, sha256:{digest}"


def diff_lines(current: str | None, desired: str | None) -> list[str]:
    """Unified diff (no context) of the normalised tables: '-' now, '+' after apply."""
    return [line for line in difflib.unified_diff(listing(current), listing(desired),
                                                  lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def _skip(target: str, current: str | None, why: str, detail: str) -> Change:
    change = Change(SECTION, target, current, None, action=SKIP)
    change.flag(NOT_SETTABLE, detail, why)
    return change


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    s = config(section)
    pr = parse_probe(facts.scripts.get(PROBE, ""))
    current = (facts.scripts.get(STATE_LABEL) or "").strip() or None
    if pr.nft == "none":
        return [_skip(TABLE, None, "nft not installed on this node (Debian package nftables): "
                      "the firewall section is not applied here", "no-nft")]
    if pr.nft == "broken" or current == "nft-unavailable":
        return [_skip(TABLE, None, f"nft not usable on this node ({pr.nft_path} --version "
                      f"failed: {pr.nft_detail.strip() or 'no output'}): the firewall section "
                      "is not applied here", "nft-broken")]
    if s.enabled and pr.rendered is None:
        return [_skip(TABLE, describe_state(current), "the node's nft refused the ruleset, "
                      f"nothing is applied: {pr.render_error.strip() or 'no error text'}",
                      "nft-refused")]
    if s.enabled and not rendercache.valid_listing(pr.rendered or ""):
        # What comes back becomes the table `nft -f` loads: only netfix's own table.
        return [_skip(TABLE, describe_state(current), "the node's render of the ruleset is "
                      f"not a listing of {TABLE} alone, nothing is applied", "nft-refused")]
    if s.enabled and ctx.renders and not pr.cached and pr.rendered:
        ctx.renders.put(ruleset(s), rendercache.Render(pr.nft_detail, facts.kernel, pr.rendered))
    desired = pr.rendered if s.enabled else ABSENT
    table = Change(SECTION, TABLE, describe_state(current), describe_state(desired), action=OK)
    if current != desired:
        table.action = UPDATE
        table.ops.append(Op("cmd", STATE_LABEL, current, desired, READ, SET))
        changed = diff_lines(current, desired)
        table.notes.append("ruleset diff (- now, + after apply): " + " | ".join(changed))
    if s.enabled:
        table.notes.insert(0, _summary(s))
    changes = [table]

    persist = s.enabled and _NFT_PATH.fullmatch(pr.nft_path) is not None
    changes.append(file_change(SECTION, RULESET, facts.files.get(RULESET),
                               ruleset_file(s, ctx) if s.enabled else None))
    if pr.systemd or facts.files.get(UNIT) is not None:
        changes.append(file_change(SECTION, UNIT, facts.files.get(UNIT),
                                   unit_file(pr.nft_path, ctx) if persist else None))
        changes.append(file_change(SECTION, WANTS, facts.files.get(WANTS),
                                   wants_file(ctx) if persist else None))
    elif s.enabled:
        changes.append(_skip(UNIT, ABSENT, f"no {SYSTEMD_DIR} on this node: the table is live "
                             f"but not loaded at boot; load {RULESET} from the init system",
                             "no-systemd"))
    return changes


def _summary(s: Config) -> str:
    ports = f"tcp/udp {s.low}-{s.high}" + "".join(
        f", {proto} {','.join(map(str, ports))}" for proto, ports in s.extra.items())
    allow = ", ".join(s.allow4 + s.allow6) or "nobody"
    ifaces = ("on " + ", ".join(s.include)) if s.include else "on all interfaces"
    skipped = ", ".join(["lo", *[x for x in s.exclude if x != "lo"]])
    return (f"drops {ports} to local addresses {ifaces} except {skipped}; allowed from: "
            f"{allow}" + (f"; logs drops ({s.rate})" if s.log else ""))
