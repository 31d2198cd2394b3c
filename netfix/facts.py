"""The fact script: everything the knobs need, read in ONE remote command per host.

Knobs declare what they need (`Needs`); `build_script` turns the union into one POSIX sh
script; `parse` turns its output into `Facts`. Every record is one line:
`@@NF<TAB>kind<TAB>name<TAB>state<TAB>payload`, payload base64 where it can hold anything.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass, field

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

# Builtins only where it matters: on a lab machine 20 nodes run this at once on 2 cores,
# so each fork counts. Values use `read`; all files go through one stat and one base64.
_PRELUDE = r"""export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
set -f
NL='
'
F=""
V=""
v() { if [ -e "$1" ]; then
  if [ -w "$1" ]; then s=rw; else s=ro; fi
  printf '@@NF\tv\t%s\t%s\t\n' "$1" "$s"; V="$V$1$NL"
else printf '@@NF\tv\t%s\tabsent\t\n' "$1"; fi; }
f() { if [ -L "$1" ] && [ "$(readlink "$1")" = /dev/null ]; then
  printf '@@NF\tf\t%s\tmasked\t\n' "$1"
elif [ -f "$1" ] && [ -r "$1" ]; then F="$F$1$NL"
else printf '@@NF\tf\t%s\tabsent\t\n' "$1"; fi; }
d() { set +f; for x in "$1"/*.conf; do { [ -e "$x" ] || [ -L "$x" ]; } && f "$x"; done; set -f
  printf '@@NF\td\t%s\tlisted\t\n' "$1"; }
read -r x < /proc/sys/kernel/hostname; printf '@@NF\thost\thostname\t\t%s\n' "$x"
read -r x < /proc/sys/kernel/osrelease; printf '@@NF\thost\tkernel\t\t%s\n' "$x"
read -r x < /sys/devices/system/cpu/online; printf '@@NF\thost\tcpus\t\t%s\n' "$x"
while read -r k x u; do [ "$k" = MemTotal: ] && break; done < /proc/meminfo
printf '@@NF\thost\tmem_kb\t\t%s\n' "$x"
while read -r k x u; do [ "$k" = Uid: ] && break; done < /proc/self/status
printf '@@NF\thost\tuid\t\t%s\n' "$x"
x=""; read -r x < /etc/machine-id 2>/dev/null; printf '@@NF\thost\tmachine_id\t\t%s\n' "$x"
set +f  # transactions left "applying": the engine recovers them (builtins unless one is)
for x in /var/lib/netfix/tx/*.status; do [ -f "$x" ] || continue; read -r s u < "$x"
  [ "$s" = applying ] || continue; x=${x%.status}; printf '@@NF\tpending\t%s\t\t' "${x##*/}"
  base64 -w0 < "$x.json" 2>/dev/null; echo; done; set -f
"""

# All values from one grep (dash's `read` reads byte by byte, and procfs sysctls return
# EOF at offset 1). All files at once: sizes from one stat, one cat|base64, split by size.
_FILES = r"""if [ -n "$V" ]; then IFS="$NL"; echo '@@NF	vals	begin	 	'
  grep -H '' -- $V 2>/dev/null; echo '@@NF	vals	end	 	'; unset IFS; fi
if [ -n "$F" ]; then IFS="$NL"
  stat -L --printf '@@NF\tsize\t%n\t%s\t\n' -- $F
  printf '@@NF\tblob\t\t\t'; cat -- $F | base64 -w0; echo; unset IFS; fi
"""


def build_script(needs: Needs) -> str:
    q = shlex.quote
    lines = [_PRELUDE]
    for tool in TOOLS:
        lines.append(
            f"command -v {tool} >/dev/null 2>&1 && t=yes || t=no; "
            f"printf '@@NF\\ttool\\t{tool}\\t%s\\t\\n' $t"
        )
    for path in sorted({sysctl_path(k) for k in needs.sysctls} | needs.paths):
        lines.append(f"v {q(path)}")
    for path in sorted(needs.files):
        lines.append(f"f {q(path)}")
    for path in sorted(needs.dirs):
        lines.append(f"d {q(path)}")
    lines.append(_FILES)
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
