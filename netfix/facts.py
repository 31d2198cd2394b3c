"""The fact script: everything the knobs need, read in ONE remote command per host.

Knobs declare what they need (`Needs`); `build_script` turns the union into one POSIX sh
script; `parse` turns its output into `Facts`. Every record is one line:
`@@NF<TAB>kind<TAB>name<TAB>state<TAB>payload`, payload base64 where it can hold anything.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass, field

from netfix import sh
from netfix.util import norm, sysctl_path

MARK = "@@NF"


@dataclass
class Needs:
    sysctls: set[str] = field(default_factory=set)  # dotted keys
    paths: set[str] = field(default_factory=set)  # single-value files under /sys or /proc
    files: set[str] = field(default_factory=set)  # whole files, content wanted
    dirs: set[str] = field(default_factory=set)  # every *.conf in these dirs, with content
    scripts: dict[str, str] = field(default_factory=dict)  # name -> sh snippet, stdout kept

    def update(self, other: Needs) -> None:
        self.sysctls |= other.sysctls
        self.paths |= other.paths
        self.files |= other.files
        self.dirs |= other.dirs
        self.scripts.update(other.scripts)


@dataclass
class Value:
    """A /proc/sys or /sys value: absent, read-only here, or writable."""

    exists: bool
    writable: bool
    value: str | None


@dataclass
class DirEntry:
    content: bytes | None  # None when masked (symlink to /dev/null) or unreadable
    masked: bool = False


@dataclass
class Facts:
    host: str
    hostname: str = ""
    kernel: str = ""
    cpus: int = 1
    mem_bytes: int = 0
    uid: int = -1
    tools: dict[str, bool] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)  # by path
    files: dict[str, bytes | None] = field(default_factory=dict)
    dirs: dict[str, dict[str, DirEntry]] = field(default_factory=dict)
    scripts: dict[str, str] = field(default_factory=dict)
    machine_id: str = ""
    host_key: str | None = None  # SHA256 fingerprint of the node's SSH host key
    # Transactions found "applying" (id -> journal record): a run was cut off, or one is
    # running right now; the engine finishes them under the node lock.
    interrupted: dict[str, bytes] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)  # what the engine did about them

    def sysctl(self, key: str) -> Value:
        return self.values.get(sysctl_path(key), Value(False, False, None))

    def value(self, path: str) -> Value:
        return self.values.get(path, Value(False, False, None))

    def summary(self) -> dict[str, object]:
        return {"hostname": self.hostname, "kernel": self.kernel, "cpus": self.cpus,
                "mem_bytes": self.mem_bytes}


TOOLS = ("sysctl", "ethtool", "nft", "flock", "systemctl", "base64", "sha256sum")


def build_script(needs: Needs) -> str:
    """One script (netfix/sh/facts.sh and facts-files.sh around the generated `v`, `f`
    and `d` lines), every knob's snippet in it: one round trip per host."""
    q = shlex.quote
    lines = [sh.script("facts.sh", NF_TOOLS=TOOLS).rstrip("\n")]
    for path in sorted({sysctl_path(k) for k in needs.sysctls} | needs.paths):
        lines.append(f"v {q(path)}")
    for path in sorted(needs.files):
        lines.append(f"f {q(path)}")
    for path in sorted(needs.dirs):
        lines.append(f"d {q(path)}")
    lines.append(sh.load("facts-files.sh"))
    for name, snippet in sorted(needs.scripts.items()):
        lines.append(f"printf '@@NF\\ts\\t%s\\tout\\t' {q(name)}")
        lines.append(f"( set +f; {snippet}\n) 2>/dev/null | base64 -w0; echo")
    return "\n".join(lines) + "\n"


def parse(host: str, output: str) -> Facts:
    facts = Facts(host=host)
    sizes: list[tuple[str, int]] = []
    in_values = False
    for line in output.splitlines():
        if in_values and not line.startswith(MARK + "\t"):
            _add_value_line(facts, line)
            continue
        if not line.startswith(MARK + "\t"):
            continue
        # Pad: some runners (pyinfra) strip trailing whitespace, i.e. empty last fields.
        _, kind, name, state, payload = (line.split("\t", 4) + ["", "", "", ""])[:5]
        if kind == "host":
            _set_host(facts, name, payload.strip())
        elif kind == "tool":
            facts.tools[name] = state == "yes"
        elif kind == "v":
            facts.values[name] = Value(state in ("rw", "ro"), state == "rw", None)
        elif kind == "vals":
            in_values = name == "begin"
        elif kind == "f":
            _add_file(facts, name, None, masked=state == "masked")
        elif kind == "size":
            sizes.append((name, int(state)))
        elif kind == "blob":
            blob = base64.b64decode(payload)
            if len(blob) != sum(n for _, n in sizes):
                raise ValueError("files changed while they were read; run again")
            pos = 0
            for name_, n in sizes:
                _add_file(facts, name_, blob[pos:pos + n])
                pos += n
        elif kind == "d":
            facts.dirs.setdefault(name, {})
        elif kind == "s":
            facts.scripts[name] = base64.b64decode(payload).decode(errors="replace")
        elif kind == "pending":
            facts.interrupted[name] = base64.b64decode(payload)
    return facts


def _add_value_line(facts: Facts, line: str) -> None:
    """grep -H output `path:value`; a multi-line value arrives as several lines."""
    path, sep, value = line.partition(":")
    val = facts.values.get(path)
    if not sep or val is None:
        return
    val.value = norm(value if val.value is None else f"{val.value} {value}")


def _add_file(facts: Facts, path: str, content: bytes | None, masked: bool = False) -> None:
    facts.files[path] = content
    parent, _, base = path.rpartition("/")
    if base.endswith(".conf") and (content is not None or masked):
        facts.dirs.setdefault(parent, {})[base] = DirEntry(content, masked)


def _cpus(online: str) -> int:
    """/sys/devices/system/cpu/online: '0-3,6' -> 5."""
    n = 0
    for part in online.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            n += int(hi) - int(lo) + 1 if hi.isdigit() else 1
    return max(n, 1)


def _set_host(facts: Facts, name: str, value: str) -> None:
    if name == "hostname":
        facts.hostname = value
    elif name == "kernel":
        facts.kernel = value
    elif name == "cpus":
        facts.cpus = _cpus(value)
    elif name == "mem_kb" and value.isdigit():
        facts.mem_bytes = int(value) * 1024
    elif name == "uid" and value.lstrip("-").isdigit():
        facts.uid = int(value)
    elif name == "machine_id":
        facts.machine_id = value
