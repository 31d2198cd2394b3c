"""ethtool: parsers for `-k`/`-l`/`-g`/`-c` output (`--json` and text), and the sh that
reads and sets the same state on a node (journal cmd steps and /etc/netfix/nic.sh).

`--json` came to ethtool one sub-command at a time (6.1 has it for -k only), so the fact
script tries it once per sub-command and falls back to text; both forms parse into the
same records here. The on-node readers always use text: every ethtool release prints it,
and a reader must print exactly what the plan computed from the facts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from netfix import sh
from netfix.errors import NetfixError

# profile group -> (show flag, set flag)
SHOW = {"channels": "l", "rings": "g", "coalesce": "c", "offloads": "k"}
SET = {"channels": "-L", "rings": "-G", "coalesce": "-C", "offloads": "-K"}
RING_KEYS = ("rx", "rx-mini", "rx-jumbo", "tx")
CHANNEL_KEYS = ("rx", "tx", "other", "combined")
COALESCE_FLAGS = ("adaptive-rx", "adaptive-tx")
COALESCE_NUMBERS = ("rx-usecs", "rx-frames", "rx-usecs-irq", "rx-frames-irq",
                    "tx-usecs", "tx-frames", "tx-usecs-irq", "tx-frames-irq")
# `ethtool -K` takes these short names; `-k` prints the long ones.
FEATURE_ALIASES = {
    "rx": "rx-checksumming", "tx": "tx-checksumming", "sg": "scatter-gather",
    "tso": "tcp-segmentation-offload", "ufo": "udp-fragmentation-offload",
    "gso": "generic-segmentation-offload", "gro": "generic-receive-offload",
    "lro": "large-receive-offload", "rxvlan": "rx-vlan-offload", "txvlan": "tx-vlan-offload",
    "ntuple": "ntuple-filters", "rxhash": "receive-hashing",
}


@dataclass
class Output:
    """One `ethtool [--json] -X IF` run as the fact script recorded it."""

    sub: str  # k, l, g or c
    mode: str  # json or text
    rc: int
    text: str

    @property
    def unsupported(self) -> bool:
        return self.rc != 0 and "not supported" in self.text.lower()

    @property
    def error(self) -> str | None:
        if self.rc == 0:
            return None
        lines = [line for line in self.text.splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"ethtool exit {self.rc}"


@dataclass
class Feature:
    active: bool
    fixed: bool


@dataclass
class Limits:
    """Rings or channels: hardware maximum (0 = not supported) and current value per key."""

    maximum: dict[str, int] = field(default_factory=dict)
    current: dict[str, int | None] = field(default_factory=dict)


def _json(text: str) -> dict:
    # Before ethtool 6.3, `--json -c` printed the adaptive and the CQE-mode pairs both as
    # "rx"/"tx"; keep the first pair as adaptive-rx/-tx instead of letting the last win.
    def pairs(items: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for key, value in items:
            if key in ("rx", "tx") and isinstance(value, bool):
                key = f"adaptive-{key}" if f"adaptive-{key}" not in out else f"cqe-mode-{key}"
            out.setdefault(key, value)
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except ValueError as e:
        # Seen: ethtool prints an interface name with quotes unescaped in its JSON.
        raise NetfixError(f"cannot parse `ethtool --json` output from the node ({e}); "
                          "an interface name with quotes or backslashes breaks it") from None
    return data[0] if isinstance(data, list) and data else {}


def features(out: Output) -> dict[str, Feature]:
    if out.mode == "json":
        return {k: Feature(bool(v.get("active")), bool(v.get("fixed")))
                for k, v in _json(out.text).items() if isinstance(v, dict)}
    found = {}
    for line in out.text.splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_-]+): (on|off)(?: \[(.*)\])?\s*$", line)
        if m:
            found[m.group(1)] = Feature(m.group(2) == "on", m.group(3) == "fixed")
    return found


def limits(out: Output, keys: tuple[str, ...]) -> Limits:
    lim = Limits()
    if out.mode == "json":
        data = _json(out.text)
        for k in keys:
            lim.maximum[k] = int(data.get(f"{k}-max") or 0)
            lim.current[k] = data.get(k)
        return lim
    section = None
    for line in out.text.splitlines():
        if line.startswith("Pre-set maximums"):
            section = lim.maximum
        elif line.startswith("Current hardware settings"):
            section = lim.current
        elif section is not None and ":" in line:
            label, _, value = line.partition(":")
            key, value = label.strip().lower().replace(" ", "-"), value.strip()
            if key in keys:
                section[key] = int(value) if value.isdigit() else None
    lim.maximum = {k: lim.maximum.get(k) or 0 for k in keys}
    lim.current = {k: lim.current.get(k) for k in keys}
    return lim


def coalesce(out: Output) -> dict[str, str | None]:
    """Coalescing parameters as the strings the profile uses: on/off, numbers; None = n/a."""
    if out.mode == "json":
        data = _json(out.text)
        found = {k: ("on" if data[k] else "off") for k in COALESCE_FLAGS if k in data}
        found |= {k: str(data[k]) for k in COALESCE_NUMBERS if k in data}
    else:
        found = {}
        for line in out.text.splitlines():
            m = re.match(r"^Adaptive RX: (\S+)\s+TX: (\S+)", line)
            if m:
                found["adaptive-rx"], found["adaptive-tx"] = m.group(1), m.group(2)
                continue
            m = re.match(r"^([a-z-]+):\s+(\S+)\s*$", line)
            if m:
                found[m.group(1)] = m.group(2)
    return {k: (v if v not in ("n/a", "") else None) for k, v in found.items()
            if k in COALESCE_FLAGS + COALESCE_NUMBERS}


def state(values: dict[str, str]) -> str:
    """The one-line form a plan shows and a reader prints: 'rx=2 tx=2'."""
    return " ".join(f"{k}={v}" for k, v in values.items())


# --------------------------------------------------------------------------- on-node sh

# netfix/sh/ethtool-read.sh and ethtool-set.sh: each snippet is self-contained (its
# parameters first), as a journal cmd step and a function of nic.sh are.


def _params(group: str, iface: str, keys: list[str]) -> dict[str, object]:
    names = [FEATURE_ALIASES.get(k, k) if group == "offloads" else k for k in keys]
    return {"NF_GROUP": group, "NF_SHOW": SHOW[group], "NF_IF": iface, "NF_KEYS": keys,
            "NF_NAMES": names}


def read_sh(group: str, iface: str, keys: list[str]) -> str:
    """sh printing the current `state()` of `keys` (validated names) on `iface`."""
    return sh.render("ethtool-read.sh", **_params(group, iface, keys))


def set_sh(group: str, iface: str, keys: list[str]) -> str:
    """sh setting the state given in "$1"; only keys that differ are passed, because some
    drivers reset the link on every -G/-L and ethtool refuses a no-op ring change."""
    return (sh.assign(**_params(group, iface, keys), NF_SET=SET[group])
            + "nf_et_read() {\n" + sh.load("ethtool-read.sh") + "}\n"
            + sh.load("ethtool-set.sh"))
