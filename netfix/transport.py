"""Run one sh script on a host: one SSH exec per call (paramiko), or a local subprocess.

netfix batches all its remote work into one script per round trip, so this is all the
execution layer it needs. paramiko is imported only when a host is remote: it costs
about 0.2 s of start-up, and `@local` runs should not pay it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from netfix import sh
from netfix.errors import NetfixError
from netfix.inventory import Host


class HostUnreachable(NetfixError):
    pass


class ConnectionLost(HostUnreachable):
    """The command had started when the connection broke: its outcome is unknown here."""


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    host_key: str | None = None  # SHA256 fingerprint of the SSH host key; None for local


def _sudo(host: Host) -> list[str]:
    return ["sudo", "-n"] if host.sudo and not (host.is_local and os.geteuid() == 0) else []


# A write script (apply, rollback, confirm) must never run in part: netfix/sh/stage.sh
# stores it whole on the node, checks its length and sha256, and runs it detached.
STAGE = sh.load("stage.sh")
INCOMPLETE = 16  # exit code of STAGE: the script did not arrive whole, nothing ran
VANISHED = 17  # exit code of STAGE: the detached run ended without an exit code (killed)


def _argv(host: Host, script: str, staged: bool, state_dir: str) -> tuple[list[str], bytes]:
    # Plain sh, never the login shell: root's bash rc files cost ~0.1 s per command.
    data = script.encode()
    if not staged:
        return [*_sudo(host), "sh", "-s"], data
    return ([*_sudo(host), "sh", "-c", STAGE, "netfix-stage", str(len(data)),
             hashlib.sha256(data).hexdigest(), state_dir], data)


def run(host: Host, script: str, timeout: float = 120.0, staged: bool = False,
        state_dir: str = "/var/lib/netfix") -> Result:
    """Run `script` on `host`. `staged`: the node runs it only once it holds all of it
    (see STAGE); a connection lost after that raises ConnectionLost, the node carries on."""
    argv, data = _argv(host, script, staged, state_dir)
    if host.is_local:
        p = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
        return Result(p.returncode, p.stdout.decode(errors="replace"),
                      p.stderr.decode(errors="replace"))
    return _run_ssh(host, shlex.join(argv), data, timeout)


def _client(host: Host):  # -> paramiko.SSHClient
    import paramiko

    from netfix import knownhosts

    client = paramiko.SSHClient()
    known = host.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
    # Not client.load_host_keys: it raises on a malformed line, and save_host_keys rewrites
    # the whole file from this one client's view (parallel hosts lost each other's keys).
    known_hosts = knownhosts.read(known)
    known_hosts.install(client, host.address, host.port)
    policy = host.strict_host_key_checking
    accept = knownhosts.AcceptNew()
    if policy == "yes":
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    elif policy == "accept-new":
        client.set_missing_host_key_policy(accept)
    else:
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        sock = socket.create_connection((host.address, host.port), timeout=host.connect_timeout)
        # Without it each SSH round trip waits on delayed ACKs: 45 ms per command vs 6 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect(
            host.address, port=host.port, username=host.user, key_filename=host.key, sock=sock,
            timeout=host.connect_timeout, banner_timeout=host.connect_timeout,
            auth_timeout=host.connect_timeout, allow_agent=host.key is None,
            look_for_keys=host.key is None,
        )
    except paramiko.BadHostKeyException as e:
        raise HostUnreachable(
            f"host key of {host.address} does not match {known}: possible impersonation; "
            "check the key and update known_hosts") from e
    except paramiko.SSHException as e:
        msg = str(e)
        if "not found in known_hosts" in msg:
            msg = (f"host key of {host.address} is not in {known} and host key checking is "
                   "on; add it (ssh-keyscan) or set ssh_strict_host_key_checking: accept-new"
                   + known_hosts.ignored())
        raise HostUnreachable(f"ssh to {host.user}@{host.address}:{host.port}: {msg}") from e
    except (TimeoutError, OSError) as e:
        raise HostUnreachable(
            f"cannot reach {host.address}:{host.port}: {e.strerror or e}") from e
    try:
        accept.record(known, host.address, host.port)
    except knownhosts.KnownHostsError:
        client.close()
        raise
    return client


def host_key_fingerprint(client) -> str:  # client: paramiko.SSHClient
    """SHA256:... as `ssh-keygen -lf` prints it: the identity a saved plan records."""
    key = client.get_transport().get_remote_server_key()
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


# Round trips made inside `session(host)` by the same thread share one SSH connection.
_sessions = threading.local()


def _key(host: Host) -> tuple[str, int, str]:
    return host.address, host.port, host.user


@contextmanager
def session(host: Host) -> Iterator[None]:
    """Round trips to `host` made by this thread inside the block share one SSH connection
    (one handshake instead of one per round trip); it is closed when the block ends. Each
    round trip is still its own command with its own checks. A connection that breaks is
    dropped, so the next round trip connects anew, as it does outside a session. Only for
    round trips that do not need a new connection as proof of reachability (confirmed
    apply's probe does)."""
    slots = _sessions.__dict__.setdefault("slots", {})
    key = _key(host)
    if host.is_local or key in slots:  # nested: the outer block owns the connection
        yield
        return
    slots[key] = None
    try:
        yield
    finally:
        client = slots.pop(key, None)
        if client is not None:
            client.close()


def _run_ssh(host: Host, command: str, data: bytes, timeout: float) -> Result:
    slots = getattr(_sessions, "slots", {})
    key = _key(host)
    if key not in slots:  # no session: a connection of its own, as always
        client = _client(host)
        try:
            return _exec(host, client, command, data, timeout)
        finally:
            client.close()
    client = slots[key]
    if client is not None:
        try:
            return _exec(host, client, command, data, timeout)
        except ConnectionLost:
            client.close()  # the next round trip connects anew, as without a session
            slots[key] = None
            raise
        except HostUnreachable:  # no command was started: the kept connection went stale
            client.close()
            slots[key] = None
    client = slots[key] = _client(host)
    try:
        return _exec(host, client, command, data, timeout)
    except HostUnreachable:
        client.close()
        slots[key] = None
        raise


def _exec(host: Host, client, command: str, data: bytes, timeout: float) -> Result:
    import paramiko

    started = False
    try:
        fp = host_key_fingerprint(client)
        stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        started = True
        stdin.write(data)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        rc = stdout.channel.recv_exit_status()
        if rc == -1:  # the channel closed without an exit status: the session was cut
            raise ConnectionLost(f"connection to {host.address} lost before the command "
                                 "finished (no exit status)")
        return Result(rc, out, err, fp)
    except (TimeoutError, OSError, EOFError, paramiko.SSHException) as e:
        cls = ConnectionLost if started else HostUnreachable
        raise cls(f"connection to {host.address} lost: {e or type(e).__name__}") from e
