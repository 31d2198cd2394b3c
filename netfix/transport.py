"""Run one sh script on a host, through the host's transport.

netfix batches all its remote work into one script per round trip, so a transport is one
method: run argv with these stdin bytes, return exit code and output. One class per
transport, chosen per host by its `transport` var (ssh | local | pyinfra):
- ssh: netfix's own paramiko path, one SSH exec per round trip (the default, the fast one);
- local: a subprocess on this machine;
- pyinfra: any pyinfra connector (`@local`, `@docker/NAME`, `@chroot/PATH`, ssh), via
  netfix/pyinfra.py, imported only for those hosts.
Each transport also says what the safety checks can rely on (see Transport). paramiko and
pyinfra are imported only when a host needs them: paramiko costs about 0.2 s of start-up,
pyinfra about as much again, and `@local` or ssh runs should not pay for the others.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Protocol

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
    via = transport_for(host)
    if via.name == "pyinfra" and not script.endswith("\n"):
        script += "\n"  # pyinfra ends stdin with a newline: the staged length must count it
    argv, data = _argv(host, script, staged, state_dir)
    return via.run(host, argv, data, timeout)


class Transport(Protocol):
    """How netfix's one command per round trip reaches a host.

    `sees_ssh_session`: the node-side script can tell which interface carries the
    connection (sshd's SSH_CONNECTION), or there is no network connection to cut; if
    False, the SSH-interface guard cannot protect it, so plan says so and apply refuses
    disruptive changes without --allow-disruptive. `proves_reachability`: a round trip
    made after a change proves the controller still reaches the node the way the change
    could have cut; --confirm relies on it and is refused where it is False. `main_thread`:
    its round trips must run on the main thread (engine.parallel keeps them there)."""

    name: str
    sees_ssh_session: bool
    proves_reachability: bool
    main_thread: bool

    def run(self, host: Host, argv: list[str], data: bytes, timeout: float) -> Result: ...

    def reconnect(self, host: Host) -> None:
        """Make the next round trip to `host` use a new connection (the --confirm probe)."""


class SshTransport:
    """netfix's own SSH path: paramiko, one exec per round trip, its own host key checks."""

    name: ClassVar[str] = "ssh"
    sees_ssh_session: ClassVar[bool] = True
    proves_reachability: ClassVar[bool] = True  # each probe outside a session: a new connection
    main_thread: ClassVar[bool] = False

    def run(self, host: Host, argv: list[str], data: bytes, timeout: float) -> Result:
        return _run_ssh(host, shlex.join(argv), data, timeout)

    def reconnect(self, host: Host) -> None:
        forget(host)


class LocalTransport:
    """This machine, as a subprocess: no network between netfix and the node to cut."""

    name: ClassVar[str] = "local"
    sees_ssh_session: ClassVar[bool] = True  # finds an SSH session netfix runs inside, if any
    proves_reachability: ClassVar[bool] = True
    main_thread: ClassVar[bool] = False

    def run(self, host: Host, argv: list[str], data: bytes, timeout: float) -> Result:
        p = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
        return Result(p.returncode, p.stdout.decode(errors="replace"),
                      p.stderr.decode(errors="replace"))

    def reconnect(self, host: Host) -> None:
        pass


class PyinfraTransport:
    """Any pyinfra connector, named like a pyinfra inventory host (`pyinfra_host` var, else
    the host's name): `@local`, `@docker/NAME`, `@chroot/PATH`, or a host name for its ssh
    connector. netfix only knows how ssh and @local carry commands: through any other
    connector it cannot tell the management interface nor prove reachability."""

    name: ClassVar[str] = "pyinfra"

    def __init__(self, connector: str):
        # Imported here, not in run(): gevent takes the thread that imports it for the main
        # one (gevent/hub.py MAIN_THREAD_IDENT), and engine.parallel builds transports on
        # the real main thread before any worker starts.
        from netfix import pyinfra  # noqa: F401

        self.connector = connector
        kind = connector.split("/", 1)[0] if connector.startswith("@") else "@ssh"
        self.sees_ssh_session = self.proves_reachability = kind in ("@ssh", "@local")
        # Connectors that start local processes (@local, @docker, @chroot...) use gevent's
        # subprocess, which reaps children only on the main thread's loop ("child watchers
        # are only available on the default loop" in a worker thread).
        self.main_thread = kind != "@ssh"

    def run(self, host: Host, argv: list[str], data: bytes, timeout: float) -> Result:
        from netfix import pyinfra

        return pyinfra.run_connector(host, self.connector, shlex.join(argv), data, timeout)

    def reconnect(self, host: Host) -> None:
        pass  # every round trip connects anew


SSH, LOCAL = SshTransport(), LocalTransport()


def transport_for(host: Host) -> Transport:
    if host.via is not None:
        return host.via
    if host.transport == "pyinfra":
        return PyinfraTransport(str(host.vars.get("pyinfra_host") or host.name))
    return LOCAL if host.transport == "local" else SSH


def limitations(host: Host) -> list[str]:
    """What the host's transport cannot vouch for, as the plan and apply say it."""
    t = transport_for(host)
    out = []
    if not t.sees_ssh_session:
        out.append(f"transport {describe(host)} cannot tell which interface carries the "
                   "connection: disruptive changes are not checked against it, and apply "
                   "refuses them without --allow-disruptive")
    if not t.proves_reachability:
        out.append(f"transport {describe(host)} cannot prove the node is still reachable "
                   "after a change: --confirm is refused for this host")
    return out


def describe(host: Host) -> str:
    t = transport_for(host)
    connector = getattr(t, "connector", None)
    return f"{t.name} ({connector})" if connector else t.name


_import_lock = threading.Lock()


def _paramiko():  # -> the paramiko module
    """paramiko, imported without invoke when this process has not loaded invoke yet.
    paramiko.config imports invoke only to run ssh_config `Match exec` (and says an
    ImportError there is fine until such a line is read); netfix never has paramiko read
    an ssh_config. invoke drags in asyncio and unittest.mock: 45 ms of every run's start,
    before its first connection."""
    with _import_lock:
        if "paramiko" not in sys.modules and "invoke" not in sys.modules:
            sys.modules["invoke"] = None  # type: ignore[assignment]  # import -> ImportError
            try:
                import paramiko  # noqa: F401
            finally:
                del sys.modules["invoke"]
    import paramiko

    return paramiko


def _client(host: Host):  # -> paramiko.SSHClient
    paramiko = _paramiko()

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


# Kept connections. Round trips made inside `session(host)` by one thread, or by any thread
# inside `keep()`, reuse an open SSH connection to the node instead of a new handshake
# (most of a round trip's cost: at 100 nodes, a handshake is ~20 ms of this machine's CPU).
_sessions = threading.local()  # this thread's session(): key -> idle client, or None
_pool: dict[tuple[str, int, str], list] | None = None  # keep(): key -> idle clients
_pool_lock = threading.Lock()


def _key(host: Host) -> tuple[str, int, str]:
    return host.address, host.port, host.user


@contextmanager
def session(host: Host) -> Iterator[None]:
    """Round trips to `host` made by this thread inside the block share one SSH connection
    (one handshake instead of one per round trip); it is closed when the block ends. Each
    round trip is still its own command with its own checks. A connection that breaks is
    dropped, so the next round trip connects anew, as it does outside a session. Only for
    round trips that do not need a new connection as proof of reachability (confirmed
    apply's probe calls forget() first)."""
    slots = _sessions.__dict__.setdefault("slots", {})
    key = _key(host)
    # Only netfix's ssh keeps connections; nested: the outer block owns the connection.
    if transport_for(host) is not SSH or key in slots:
        yield
        return
    slots[key] = None
    try:
        yield
    finally:
        client = slots.pop(key, None)
        if client is not None:
            client.close()


@contextmanager
def keep() -> Iterator[None]:
    """Inside the block, a connection any thread made stays open for the next round trip
    to the same node, by whichever thread makes it, until the block ends: apply's
    transaction goes over the connection its plan came over (one handshake per node, not
    two), also while the operator reads the plan. A connection carries one round trip at a
    time; a round trip that finds none idle connects anew, and one that finds it gone
    stale before its command started connects anew too (nothing ran). Nested: the outer
    block owns the connections."""
    global _pool
    with _pool_lock:
        outer = _pool is not None
        if not outer:
            _pool = {}
    if outer:
        yield
        return
    try:
        yield
    finally:
        with _pool_lock:
            pool, _pool = _pool or {}, None
        for clients in pool.values():
            for client in clients:
                client.close()


def forget(host: Host) -> None:
    """Close this thread's and the pool's kept connections to `host`: its next round trip
    makes a new connection (the proof --confirm needs that the change cut nothing off)."""
    key = _key(host)
    slots = getattr(_sessions, "slots", {})
    if slots.get(key) is not None:
        slots[key].close()
        slots[key] = None
    with _pool_lock:
        clients = _pool.pop(key, []) if _pool is not None else []
    for client in clients:
        client.close()


def _take(key: tuple[str, int, str]) -> tuple[object | None, bool]:
    """An idle kept connection to `key` (or None), and whether a new one is to be kept."""
    slots = getattr(_sessions, "slots", {})
    if key in slots:
        client, slots[key] = slots[key], None
        return client, True
    with _pool_lock:
        if _pool is None:
            return None, False
        idle = _pool.get(key)
        return (idle.pop() if idle else None), True


def _give(key: tuple[str, int, str], client) -> None:
    """Back to where it is kept; closed if its block ended meanwhile."""
    slots = getattr(_sessions, "slots", {})
    if key in slots and slots[key] is None:
        slots[key] = client
        return
    with _pool_lock:
        if _pool is not None:
            _pool.setdefault(key, []).append(client)
            return
    client.close()


def _run_ssh(host: Host, command: str, data: bytes, timeout: float) -> Result:
    key = _key(host)
    client, kept = _take(key)
    if client is not None:
        try:
            res = _exec(host, client, command, data, timeout)
        except ConnectionLost:
            client.close()  # the next round trip connects anew, as without a kept one
            raise
        except HostUnreachable:  # no command was started: the kept connection went stale
            client.close()
        else:
            _give(key, client)
            return res
    client = _client(host)
    try:
        res = _exec(host, client, command, data, timeout)
    except BaseException:
        client.close()
        raise
    if kept:
        _give(key, client)
    else:
        client.close()
    return res


def _exec(host: Host, client, command: str, data: bytes, timeout: float) -> Result:
    paramiko = _paramiko()

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
