"""known_hosts files: read without tripping on a bad line, record new host keys safely.

paramiko's own loader raises on a malformed line (one traceback that stopped every host),
and its `save_host_keys` rewrites the whole file from one connection's view: parallel
`accept-new` connections each wrote their own copy, so the last writer won, and a path
that was not a known_hosts file at all was overwritten. Here a new key is appended under
a lock, and only to a file whose every line is a known_hosts entry.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hmac
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from netfix.transport import HostUnreachable

_MARKERS = ("@cert-authority", "@revoked")
# `|1|salt|hmac`, both 20 bytes: paramiko asserts on any other length mid-handshake.
_HASHED = re.compile(r"\|1\|[A-Za-z0-9+/]{27}=\|[A-Za-z0-9+/]{27}=")


class KnownHostsError(HostUnreachable):
    """The known_hosts file cannot be used for this host, so nothing ran there; the file
    was left as it was."""


@dataclass
class Entry:
    names: list[str]
    key_type: str
    blob: bytes
    marker: str | None = None

    def matches(self, name: str) -> bool:
        return any(_name_matches(n, name) for n in self.names)


@dataclass
class KnownHosts:
    path: str
    entries: list[Entry]
    bad: list[str]  # "line N: why", lines that are not known_hosts entries
    text: str = ""
    # (plain name -> positions in entries, positions of entries with a hashed name): built
    # on first use, in one assignment, so threads sharing the parsed file see all or none
    _index: tuple[dict[str, list[int]], list[int]] | None = field(
        default=None, repr=False, compare=False)

    def for_name(self, name: str) -> list[Entry]:
        """The entries that name `name`, in file order: one dict lookup, not a scan per
        connection (O(hosts x lines) for a run over a fleet's file). A hashed name can
        only be tried, never indexed."""
        if self._index is None:
            plain: dict[str, list[int]] = {}
            hashed: list[int] = []
            for i, e in enumerate(self.entries):
                if any(n.startswith("|1|") for n in e.names):
                    hashed.append(i)
                for n in set(e.names):
                    if not n.startswith("|1|"):
                        plain.setdefault(n, []).append(i)
            self._index = (plain, hashed)
        plain, hashed = self._index
        hits = set(plain.get(name, [])) | {i for i in hashed if self.entries[i].matches(name)}
        return [self.entries[i] for i in sorted(hits)]

    def install(self, client: Any, address: str, port: int) -> None:
        """Give a paramiko SSHClient the keys it can check for this host (markers are
        OpenSSH's alone). Only this host's: paramiko's HostKeys.add scans every entry, so
        a whole large file per connection would cost seconds."""
        from paramiko import PKey

        keys = client.get_host_keys()
        name = host_name(address, port)
        for e in self.for_name(name):
            if e.marker:
                continue
            try:
                key = PKey.from_type_string(e.key_type, e.blob)
            except Exception:  # a type paramiko lacks (ssh-dss, sk-*), or a bad key: unusable
                continue
            for name in e.names:
                keys.add(name, e.key_type, key)

    def ignored(self) -> str:
        """For messages about a missing key: the reason may be a line that was skipped."""
        if not self.bad:
            return ""
        more = f" and {len(self.bad) - 1} more" if len(self.bad) > 1 else ""
        return (f"; {self.path} has lines that are not known_hosts entries and were ignored "
                f"({self.bad[0]}{more})")


def host_name(address: str, port: int) -> str:
    """The name OpenSSH (and paramiko) file a host key under."""
    return address if port == 22 else f"[{address}]:{port}"


def parse_line(line: str) -> Entry | None:
    """None for a blank or comment line; ValueError saying why for anything else that is
    not an entry. Checked by structure, not by what paramiko can load, so that a valid
    file with a key type paramiko lacks still counts as a known_hosts file."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = fields.pop(0) if fields[0].startswith("@") else None
    if marker is not None and marker not in _MARKERS:
        raise ValueError(f"unknown marker {marker!r}")
    if len(fields) < 3:
        raise ValueError("expected host names, key type and key")
    names, key_type, data = fields[:3]
    for name in names.split(","):
        if not name or (name.startswith("|") and not _HASHED.fullmatch(name)):
            raise ValueError(f"bad host name {name!r}")
    try:
        blob = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise ValueError("the key is not base64") from None
    # A key blob starts with its own type name: this tells a key from any base64-like word.
    n = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + n or blob[4 : 4 + n] != key_type.encode():
        raise ValueError(f"the key is not a {key_type} key")
    return Entry(names.split(","), key_type, blob, marker)


# path -> (the file's identity when read, what it held): a run's hosts share one file, and
# parsing it once per host cost O(hosts x lines) (60 ms of CPU at 100 hosts).
_parsed: dict[str, tuple[tuple[int, ...], KnownHosts]] = {}
_parsed_lock = threading.Lock()


def read(path: str) -> KnownHosts:
    """The file's entries (a missing file has none). Bad lines are set aside, not raised:
    like ssh, a host whose key is on a good line still connects. Parsed again only when
    the file changed (inode, size or mtime): keys added meanwhile are always seen."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            with _parsed_lock:
                hit = _parsed.get(path)
            if hit and hit[0] == ident:
                return hit[1]
            data = f.read()
    except FileNotFoundError:
        return KnownHosts(path, [], [])
    except OSError as e:
        raise KnownHostsError(f"cannot read known hosts file {path}: {e.strerror or e}") from e
    known = _parse(path, data.decode(errors="replace"))
    if len(data) == ident[2]:  # not a read of a file growing meanwhile
        with _parsed_lock:
            _parsed[path] = (ident, known)
    return known


def _parse(path: str, text: str) -> KnownHosts:
    entries: list[Entry] = []
    bad: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            entry = parse_line(line)
        except ValueError as e:
            bad.append(f"line {lineno}: {e}")
            continue
        if entry is not None:
            entries.append(entry)
    return KnownHosts(path, entries, bad, text)


def add_new(path: str, address: str, port: int, key_type: str, blob: bytes) -> bool:
    """Record the key of a host met for the first time (accept-new); False if the file
    already holds it. KnownHostsError, with the file untouched, if the file is not a
    known_hosts file or meanwhile got another key of this type for the host."""
    if os.path.realpath(path) == os.devnull:
        return False  # `-o UserKnownHostsFile=/dev/null`: nothing is to be kept
    name = host_name(address, port)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # A lock file beside it, not a lock on the file: tools that replace known_hosts by
        # rename (ssh-keygen -R) would leave a lock on the old inode guarding nothing.
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Read again under the lock: other threads and netfix runs add keys too.
            current = read(path)
            if current.bad:
                raise KnownHostsError(
                    f"{path} is not a known_hosts file ({current.bad[0]}); left it untouched, "
                    f"so the host key of {name} was not recorded; fix the file or point "
                    "ssh_known_hosts_file at a known_hosts file")
            for e in current.entries:
                if e.marker is None and e.key_type == key_type and e.matches(name):
                    if e.blob == blob:
                        return False
                    raise KnownHostsError(
                        f"{path} got another {key_type} key for {name} while netfix was "
                        "connecting: possible impersonation; check the key")
            line = f"{name} {key_type} {base64.b64encode(blob).decode()}\n"
            if current.text and not current.text.endswith("\n"):
                line = "\n" + line
            # Append, as ssh does, rather than rewrite and rename: a symlinked or
            # hard-linked known_hosts stays one file with its owner and mode, and one
            # small O_APPEND write cannot interleave with another.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
    except OSError as e:
        raise KnownHostsError(
            f"cannot record the host key of {name} in {path}: {e.strerror or e}") from e


def _name_matches(pattern: str, name: str) -> bool:
    if not pattern.startswith("|1|"):
        return pattern == name
    salt, digest = (base64.b64decode(p) for p in pattern[3:].split("|"))
    return hmac.compare_digest(hmac.new(salt, name.encode(), "sha1").digest(), digest)


class AcceptNew:
    """paramiko missing-host-key policy for accept-new: accept an unknown key for this
    connection only; `record` adds it to the file once the connection is up."""

    def __init__(self) -> None:
        self.key: Any = None  # paramiko.PKey

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        self.key = key

    def record(self, path: str, address: str, port: int) -> bool:
        if self.key is None:  # the key was known (or the policy was not used)
            return False
        return add_new(path, address, port, self.key.get_name(), self.key.asbytes())
