"""Run one sh script on a host: one SSH exec per call (paramiko), or a local subprocess.

netfix batches all its remote work into one script per round trip, so this is all the
execution layer it needs. paramiko is imported only when a host is remote: it costs
about 0.2 s of start-up, and `@local` runs should not pay it.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass

from netfix.errors import NetfixError
from netfix.inventory import Host


class HostUnreachable(NetfixError):
    pass


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def _shell(host: Host) -> list[str]:
    # Plain sh, never the login shell: root's bash rc files cost ~0.1 s per command.
    if host.sudo and not (host.is_local and os.geteuid() == 0):
        return ["sudo", "-n", "sh", "-s"]
    return ["sh", "-s"]


def run(host: Host, script: str, timeout: float = 120.0) -> Result:
    if host.is_local:
        p = subprocess.run(
            _shell(host), input=script.encode(), capture_output=True, timeout=timeout
        )
        return Result(p.returncode, p.stdout.decode(errors="replace"),
                      p.stderr.decode(errors="replace"))
    return _run_ssh(host, script, timeout)


def _client(host: Host):  # -> paramiko.SSHClient
    import paramiko

    client = paramiko.SSHClient()
    known = host.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
    if os.path.exists(known):
        client.load_host_keys(known)
    policy = host.strict_host_key_checking
    if policy == "yes":
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
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
                   "on; add it (ssh-keyscan) or set ssh_strict_host_key_checking: accept-new")
        raise HostUnreachable(f"ssh to {host.user}@{host.address}:{host.port}: {msg}") from e
    except (TimeoutError, OSError) as e:
        raise HostUnreachable(
            f"cannot reach {host.address}:{host.port}: {e.strerror or e}") from e
    if policy == "accept-new" and os.path.dirname(known):
        os.makedirs(os.path.dirname(known), exist_ok=True)
        client.save_host_keys(known)
    return client


def _run_ssh(host: Host, script: str, timeout: float) -> Result:
    client = _client(host)
    try:
        stdin, stdout, stderr = client.exec_command(" ".join(_shell(host)), timeout=timeout)
        stdin.write(script)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        rc = stdout.channel.recv_exit_status()
        return Result(rc, out, err)
    except (TimeoutError, OSError) as e:
        raise HostUnreachable(f"connection to {host.address} lost: {e}") from e
    finally:
        client.close()
