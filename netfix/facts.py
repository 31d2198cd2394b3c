"""The fact script: everything the knobs need, read in ONE remote command per host.

Knobs declare what they need (`Needs`); `build_script` turns the union into one POSIX sh
script; `parse` turns its output into `Facts`. Every record is one line:
`@@NF<TAB>kind<TAB>name<TAB>state<TAB>payload`, payload base64 where it can hold anything.
"""

from __future__ import annotations

import base64
import re
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
    # process names (as in /proc/PID/comm) the snippets look for with nf_pids (facts.sh):
    # one scan of /proc for all of them
    procs: set[str] = field(default_factory=set)
    # netfix's journal dirs (<state>/tx): each transaction's status line and record, the
    # records read with the files (no stat, cat and base64 of their own)
    journals: set[str] = field(default_factory=set)
    # the same for drift (facts.sh J): the records of transactions that may still be in
    # force only; those undone, and the rollbacks that undid them, by status alone
    journals_in_force: set[str] = field(default_factory=set)

    def update(self, other: Needs) -> None:
        self.sysctls |= other.sysctls
        self.paths |= other.paths
        self.files |= other.files
        self.dirs |= other.dirs
        self.scripts.update(other.scripts)
        self.procs |= other.procs
        self.journals |= other.journals
        self.journals_in_force |= other.journals_in_force


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
    # Needs.journals: record path -> its status line, in the order of the dir's glob (the
    # records' bytes are in `files`)
    journal: dict[str, str] = field(default_factory=dict)
    # Needs.journals_in_force: record path -> status line of the transactions listed
    # without their record (undone, or the rollback that undid one)
    journal_undone: dict[str, str] = field(default_factory=dict)

    def sysctl(self, key: str) -> Value:
        return self.values.get(sysctl_path(key), Value(False, False, None))

    def value(self, path: str) -> Value:
        return self.values.get(path, Value(False, False, None))

    def summary(self) -> dict[str, object]:
        return {"hostname": self.hostname, "kernel": self.kernel, "cpus": self.cpus,
                "mem_bytes": self.mem_bytes}


TOOLS = ("sysctl", "ethtool", "nft", "flock", "systemctl", "base64", "sha256sum")


COMM = re.compile(r"[A-Za-z0-9._-]{1,15}")  # a process name nf_pids can look for


def build_script(needs: Needs) -> str:
    """One script (netfix/sh/facts.sh, facts-values.sh after the generated `v` lines,
    then the `f`, `d` and `j` lines, the /proc scan, the snippets and facts-files.sh):
    one round trip per host.

    Each snippet runs in a command substitution (a fork, no exec: its `set +f` and
    variables stay its own); its byte count is an `ssize` record and its output goes into
    the one base64 blob after the files' bytes (a base64 per snippet cost an exec each)."""
    q = shlex.quote
    lines = [sh.script("facts.sh", NF_TOOLS=TOOLS).rstrip("\n")]
    for path in sorted({sysctl_path(k) for k in needs.sysctls} | needs.paths):
        lines.append(f"v {q(path)}")
    lines.append(sh.load("facts-values.sh"))
    for path in sorted(needs.files):
        lines.append(f"f {q(path)}")
    for path in sorted(needs.dirs):
        lines.append(f"d {q(path)}")
    for path in sorted(needs.journals):
        lines.append(f"j {q(path)}")
    for path in sorted(needs.journals_in_force - needs.journals):
        lines.append(f"J {q(path)}")
    if needs.procs:
        if bad := sorted(n for n in needs.procs if not COMM.fullmatch(n)):
            raise ValueError(f"not a process name nf_pids can look for: {bad!r}")
        names = " ".join(f"-e {n}" for n in sorted(needs.procs))
        lines.append(f"set +f; NF_PROCS=$(grep -sHxF {names} -- /proc/[0-9]*/comm); set -f")
    for name, snippet in sorted(needs.scripts.items()):
        lines.append(f"S=$({{ set +f; {snippet}\n}} 2>/dev/null)")
        lines.append(f"printf '@@NF\\tssize\\t%s\\t%s\\t\\n' {q(name)} \"${{#S}}\"; "
                     'NF_SOUT="$NF_SOUT$S"')
    lines.append(sh.load("facts-files.sh"))
    # The records leave in one write at the end instead of one per printf: sshd sent each
    # as its own SSH packet, and at 100 hosts the controller's CPU went on decrypting them.
    body = "\n".join(lines)
    return ("# shellcheck disable=SC2317 # v, f and d: called only for what the knobs need\n"
            f"NF_OUT=$(\n{body}\n)\nprintf '%s\\n' \"$NF_OUT\"\n")


def parse(host: str, output: str) -> Facts:
    facts = Facts(host=host)
    sizes: list[tuple[str, str, int]] = []  # the blob's parts in order: (kind, name, bytes)
    blob: bytes | None = None
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
        elif kind in ("size", "ssize"):
            sizes.append((kind, name, int(state)))
        elif kind == "blob":
            blob = base64.b64decode(payload)
        elif kind == "d":
            facts.dirs.setdefault(name, {})
        elif kind == "tx":
            facts.journal[name] = payload
        elif kind == "tx-undone":
            facts.journal_undone[name] = payload
        elif kind == "pending":
            facts.interrupted[name] = base64.b64decode(payload)
    if sizes or blob:
        _split_blob(facts, sizes, blob or b"")
    return facts


def _split_blob(facts: Facts, sizes: list[tuple[str, str, int]], blob: bytes) -> None:
    if len(blob) != sum(n for _, _, n in sizes):
        raise ValueError("files changed while they were read; run again")
    pos = 0
    # the files' bytes come first in the blob (cat), then the snippets' (NF_SOUT)
    for kind, name, n in sorted(sizes, key=lambda part: part[0] != "size"):
        part = blob[pos:pos + n]
        pos += n
        if kind == "size":
            _add_file(facts, name, part)
        else:
            facts.scripts[name] = part.decode(errors="replace")


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
