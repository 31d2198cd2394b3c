"""kube-proxy as a writer of conntrack settings, version by version.

kube-proxy writes conntrack sysctls once, when it starts (setupConntrack / SetSysctls).
What it writes depends on its version and its effective config (flags, or the
KubeProxyConfiguration file given with --config, which wins over flags). The version
table below is read from the Kubernetes source; docs/writers.md ("kube-proxy") lists the
files, pull requests and releases behind every row. netfix flags `other-writer` only
where that version really writes a value other than netfix's over it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from netfix import sh
from netfix.facts import Facts, Needs
from netfix.plan import OTHER_WRITER, Change, When, Writer
from netfix.util import norm

NAME = "kube-proxy"
SCRIPT = sh.load("kube-proxy.sh").rstrip("\n")

_P = "net.netfilter.nf_conntrack_"
MAX = _P + "max"
BUCKETS = _P + "buckets"
HASHSIZE = "/sys/module/nf_conntrack/parameters/hashsize"
EST = _P + "tcp_timeout_established"
CLOSE_WAIT = _P + "tcp_timeout_close_wait"
UDP = _P + "udp_timeout"
UDP_STREAM = _P + "udp_timeout_stream"
BE_LIBERAL = _P + "tcp_be_liberal"
CAP = 1048576  # pkg/proxy/conntrack/sysctls.go since v1.36: `const maxLimit = 1048576`

# KubeProxyConntrackConfiguration fields: flag, default (v1alpha1 defaults), the sysctl
# each writes, and the config to set so kube-proxy leaves the key alone (0 = "leave as is").
FIELDS = {
    "maxPerCore": ("--conntrack-max-per-core", "32768", MAX, "maxPerCore: 0"),
    "min": ("--conntrack-min", "131072", None, ""),
    "tcpEstablishedTimeout": ("--conntrack-tcp-timeout-established", "24h0m0s", EST,
                              "tcpEstablishedTimeout: 0s"),
    "tcpCloseWaitTimeout": ("--conntrack-tcp-timeout-close-wait", "1h0m0s", CLOSE_WAIT,
                            "tcpCloseWaitTimeout: 0s"),
    "tcpBeLiberal": ("--conntrack-tcp-be-liberal", "false", BE_LIBERAL, "tcpBeLiberal: false"),
    "udpTimeout": ("--conntrack-udp-timeout", "0s", UDP, "udpTimeout: 0s"),
    "udpStreamTimeout": ("--conntrack-udp-timeout-stream", "0s", UDP_STREAM,
                         "udpStreamTimeout: 0s"),
}
_NEW_FIELDS = ("tcpBeLiberal", "udpTimeout", "udpStreamTimeout")  # v1.29+ (#120354)
FIX = {key: fix for _, _, key, fix in FIELDS.values() if key}
FIX[BUCKETS] = FIX[HASHSIZE] = FIX[MAX]
TARGETS = (MAX, BUCKETS, HASHSIZE, EST, CLOSE_WAIT, UDP, UDP_STREAM, BE_LIBERAL)


@dataclass(frozen=True)
class Behaviour:
    """How one range of kube-proxy versions writes (docs/writers.md has the sources)."""

    since: tuple[int, int]
    cap: bool  # the computed max is capped at CAP
    max_raise_only: bool  # nf_conntrack_max written only when the current value is lower
    all_raise_only: bool  # every conntrack sysctl written only when the current is lower
    new_fields: bool  # tcpBeLiberal, udpTimeout, udpStreamTimeout exist
    summary: str


VERSIONS = (
    Behaviour((1, 0), False, False, False, False,
              "writes max and timeouts whenever they differ"),
    Behaviour((1, 22), False, True, True, False,
              "writes max and timeouts only when the current value is lower (#103174)"),
    Behaviour((1, 29), False, False, False, True,
              "writes max and timeouts whenever they differ (#103174 reverted by #120448); "
              "UDP timeouts and tcpBeLiberal added (#120354)"),
    Behaviour((1, 36), True, False, False, True,
              "caps max at 1048576 (#137002) and writes it whenever it differs"),
    Behaviour((1, 38), True, True, False, True,
              "caps max at 1048576 and raises it only (#142035); timeouts whenever they differ"),
)
UNKNOWN = VERSIONS[2]  # version not readable: the most common, always-writing behaviour


def behaviour(version: tuple[int, int] | None) -> Behaviour:
    if version is None:
        return UNKNOWN
    return ([b for b in VERSIONS if b.since <= version] or [VERSIONS[0]])[-1]


@dataclass
class KubeProxy:
    """A running kube-proxy as the fact snippet saw it."""

    pid: str
    version: str = ""  # "1.31.2"; "" when neither the binary nor an image tag said
    config: str = ""  # the --config path, if any
    started: float | None = None  # process start, epoch seconds
    settings: dict[str, str] = field(default_factory=dict)  # effective conntrack fields

    @property
    def minor(self) -> tuple[int, int] | None:
        m = re.match(r"(\d+)\.(\d+)", self.version)
        return (int(m.group(1)), int(m.group(2))) if m else None

    @property
    def label(self) -> str:
        return f"kube-proxy {self.version}" if self.version else "kube-proxy"

    @property
    def source(self) -> str:
        return f"pid {self.pid}" + (f", {self.config}" if self.config else "")

    @property
    def behaviour(self) -> Behaviour:
        return behaviour(self.minor)


def duration(text: str) -> int | None:
    """Go durations as kube-proxy takes them (24h0m0s, 86400s, 1h) in whole seconds."""
    text = text.strip().strip("'\"")
    if text.isdigit():
        return int(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    mult = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return int(sum(float(n) * mult[u] for n, u in parts))


def _config_fields(lines: list[str]) -> dict[str, str]:
    """The `conntrack:` block of a KubeProxyConfiguration (top level in v1alpha1, under
    `linux:` in newer files). The config is YAML, but a full parser for a handful of keys
    would pull pyyaml into the fact path; indentation tells where the block ends."""
    out: dict[str, str] = {}
    indent = None
    for body in lines:
        if not body.strip() or body.lstrip().startswith("#"):
            continue
        depth = len(body) - len(body.lstrip())
        if re.match(r"^\s*conntrack:\s*$", body):
            indent = depth
        elif indent is not None and depth <= indent:
            indent = None
        elif indent is not None:
            m = re.match(r"^\s+(\w+):\s*(\S*)", body)
            if m:
                out[m.group(1)] = m.group(2).strip("'\"")
    return out


def parse(output: str) -> KubeProxy | None:
    """The fact snippet's lines (netfix/sh/kube-proxy.sh) -> KubeProxy, or None."""
    if not output.strip():
        return None
    kp = KubeProxy(pid="")
    flags: dict[str, str] = {}
    config: list[str] = []
    image = ""
    clock: dict[str, str] = {}  # START (ticks since boot), BTIME (boot epoch), HZ
    by_flag = {flag: name for name, (flag, *_rest) in FIELDS.items()}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "PID":
            kp.pid = rest.strip()
        elif word == "ARG" and rest.startswith("--"):
            name, eq, value = rest.partition("=")
            if name in by_flag:
                flags.setdefault(by_flag[name], value if eq else "true")
        elif word == "CONFIG":
            kp.config = rest.strip()
        elif word == "|":
            config.append(rest)
        elif word == "VERSION" and (m := re.search(r"v(\d+\.\d+(?:\.\d+)?)", rest)):
            kp.version = m.group(1)
        elif word == "IMAGE" and (m := re.search(r":v(\d+\.\d+(?:\.\d+)?)", rest)):
            image = m.group(1)
        elif word in ("START", "BTIME", "HZ") and rest.strip().isdigit():
            clock[word] = rest.strip()
    kp.version = kp.version or image
    if len(clock) == 3:
        kp.started = int(clock["BTIME"]) + int(clock["START"]) / max(1, int(clock["HZ"]))
    # With --config, kube-proxy takes the file and ignores the conntrack flags.
    given = _config_fields(config) if kp.config else flags
    known = [n for n in FIELDS if kp.behaviour.new_fields or n not in _NEW_FIELDS]
    kp.settings = {n: given.get(n, FIELDS[n][1]) for n in known}
    return kp


def conntrack_max(kp: KubeProxy, cpus: int) -> int:
    """getConntrackMax: max(maxPerCore x CPUs, min); 0 = leave it; capped since 1.36 (the
    cap is checked before the floor, as the source does)."""
    per_core = int(kp.settings.get("maxPerCore", "0") or 0)
    if per_core <= 0:
        return 0
    floor = int(kp.settings.get("min", "0") or 0)
    scaled = per_core * cpus
    if kp.behaviour.cap and scaled > CAP:
        return CAP
    return max(scaled, floor)


@dataclass
class Write:
    value: int  # what kube-proxy wants the target to hold
    writes: bool  # whether, with the node holding `current`, it writes it at start
    why: str


def writes(kp: KubeProxy, cpus: int, state: dict[str, int | None]) -> dict[str, Write]:
    """What kube-proxy does at its next start to each target, given the values the node
    holds then (`state`: netfix's values after apply). Targets it leaves alone are absent."""
    b = kp.behaviour
    out: dict[str, Write] = {}

    def put(key: str, want: int, raise_only: bool) -> None:
        cur = state.get(key)
        if raise_only:
            out[key] = Write(want, cur is None or cur < want, "raises it only when lower")
        else:
            out[key] = Write(want, cur != want, "writes it whenever it differs")

    want = conntrack_max(kp, cpus)
    if want:
        put(MAX, want, b.max_raise_only or b.all_raise_only)
        for key in (BUCKETS, HASHSIZE):  # SetMax: hashsize raised to max/4 when smaller
            put(key, want // 4, True)
    for name, key in (("tcpEstablishedTimeout", EST), ("tcpCloseWaitTimeout", CLOSE_WAIT),
                      ("udpTimeout", UDP), ("udpStreamTimeout", UDP_STREAM)):
        seconds = duration(kp.settings.get(name, "0s") or "0s")
        if seconds:  # 0: kube-proxy leaves the key as it is
            put(key, seconds, b.all_raise_only)
    if kp.settings.get("tcpBeLiberal", "false").lower() == "true":
        put(BE_LIBERAL, 1, False)
    return out


def needs(data: dict) -> Needs:
    """Read kube-proxy only when the profile sets something it writes."""
    sysctls = data.get("sysctl") or {}
    if data.get("conntrack") or any(k.replace("/", ".") in TARGETS for k in sysctls):
        return Needs(scripts={NAME: SCRIPT}, procs={"kube-proxy"})
    return Needs()


def started(facts: Facts) -> float | None:
    """kube-proxy's process start time (drift compares it with netfix's last apply)."""
    kp = parse(facts.scripts.get(NAME, ""))
    return kp.started if kp else None


def _int(value: str | None) -> int | None:
    text = norm(value) or ""
    return int(text) if text.isdigit() else None


def annotate(changes: list[Change], facts: Facts) -> None:
    kp = parse(facts.scripts.get(NAME, ""))
    if not kp:
        return
    mine = [c for c in changes if c.target in TARGETS and c.desired is not None]
    # The node as kube-proxy will find it at its next start: netfix's values applied.
    state = {c.target: _int(c.desired) for c in mine}
    planned = writes(kp, facts.cpus, state)
    where = f"kube-proxy's config {kp.config}" if kp.config else "kube-proxy's flags"
    for c in mine:
        w = planned.get(c.target)
        if w is None:
            continue
        c.writers.append(Writer(NAME, When.START, str(w.value), kp.version or "unknown",
                                kp.source, wins=w.writes))
        # kube-proxy writes at start, after the boot-time appliers: if it writes, it wins;
        # if not, whoever won before (netfix, or a boot writer another model named) stays.
        c.wins = NAME if w.writes else (c.wins or "netfix")
        if w.writes:
            c.flag(OTHER_WRITER, NAME,
                   f"{kp.label} (pid {kp.pid}) writes {w.value} here at its next start and "
                   f"undoes this ({w.why}); set conntrack.{FIX[c.target]} in {where}")
