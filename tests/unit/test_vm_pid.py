"""netfix_lab.util.pid_alive and vm._kill_wait against a real process whose thread-group leader is a
zombie while another thread still runs and holds a file lock: the state of a QEMU whose
main thread has exited while its vCPU threads still hold the overlay's "write" lock."""

from __future__ import annotations

import fcntl
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from netfix.errors import NetfixError
from netfix_lab import vm
from netfix_lab.util import pid_alive, proc_state

# SYS_exit ends only the calling thread (exit_group would end them all).
SYS_EXIT = {"x86_64": 60, "aarch64": 93}.get(platform.machine())

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or SYS_EXIT is None,
    reason="needs Linux /proc and a known SYS_exit number",
)

CHILD = """\
import ctypes, fcntl, os, signal, sys, threading
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
lock = open(sys.argv[1], "w")
fcntl.flock(lock, fcntl.LOCK_EX)

def worker():
    sys.stdin.buffer.read()  # lives until the test closes our stdin
    os._exit(0)

threading.Thread(target=worker).start()
ctypes.CDLL(None, use_errno=True).syscall(int(sys.argv[2]), 0)  # the main thread ends
"""
# Starts CHILD and exits at once, so that CHILD is not the test's child.
LAUNCHER = "import subprocess, sys; print(subprocess.Popen(sys.argv[1:]).pid, flush=True)"


@dataclass
class LeaderZombie:
    pid: int
    lock: Path
    stdin: IO  # our end of the worker thread's stdin; closing it ends the process


def leader_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def old_pid_alive(pid: int) -> bool:
    """vm._pid_alive (now util.pid_alive) before the fix: the leader's state only."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def lock_held(path: Path) -> bool:
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {cond}"
        time.sleep(0.01)


def _start(tmp_path: Path, ours: bool) -> tuple[LeaderZombie, subprocess.Popen]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    lock = tmp_path / "image.lock"
    argv = [sys.executable, str(script), str(lock), str(SYS_EXIT)]
    if ours:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
        pid = proc.pid
    else:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *argv],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        proc.wait(timeout=10)  # the launcher is gone: pid is now somebody else's child
    assert proc.stdin is not None
    z = LeaderZombie(pid, lock, proc.stdin)
    # The main thread takes the lock before it exits, so a Z leader means a held lock.
    wait_for(lambda: leader_state(pid) == "Z")
    return z, proc


@pytest.fixture(params=[True, False], ids=["our-child", "not-our-child"])
def zombie_leader(request, tmp_path: Path) -> Iterator[LeaderZombie]:
    z, proc = _start(tmp_path, ours=request.param)
    try:
        yield z
    finally:
        z.stdin.close()
        if pid_alive(z.pid):
            os.kill(z.pid, signal.SIGKILL)
        if request.param:
            proc.wait(timeout=10)


def test_leader_zombie_with_live_thread_is_alive_then_dead(zombie_leader: LeaderZombie):
    pid = zombie_leader.pid
    # What the old check saw: the leader is a zombie, so "dead"...
    assert leader_state(pid) == "Z"
    assert old_pid_alive(pid) is False
    # ...while a thread still runs and the process still holds its files.
    states = {t: proc_state(f"/proc/{pid}/task/{t}/stat")
              for t in os.listdir(f"/proc/{pid}/task")}
    assert any(s not in ("Z", "X") for s in states.values()), states
    assert lock_held(zombie_leader.lock)
    assert pid_alive(pid) is True
    assert vm._wait_gone(pid, timeout=0.3) is False
    # A zombie leader's own cmdline is empty; _our_qemus still needs the argv.
    assert Path(f"/proc/{pid}/cmdline").read_text() == ""
    assert str(zombie_leader.lock) in vm._cmdline(pid)

    zombie_leader.stdin.close()  # the last thread exits
    wait_for(lambda: not pid_alive(pid))
    assert not lock_held(zombie_leader.lock)
    assert vm._wait_gone(pid, timeout=5.0) is True


def test_kill_wait_returns_only_when_gone(zombie_leader: LeaderZombie):
    pid = zombie_leader.pid
    assert lock_held(zombie_leader.lock)
    vm._kill_wait(pid, timeout=10.0)
    assert not pid_alive(pid)
    # The lock is free the moment _kill_wait returns: the next QEMU can open the image.
    assert not lock_held(zombie_leader.lock)


def test_kill_wait_reaps_our_child(tmp_path: Path):
    z, proc = _start(tmp_path, ours=True)
    try:
        vm._kill_wait(z.pid, timeout=10.0)
        assert not Path(f"/proc/{z.pid}").exists()  # reaped by waitpid, not left a zombie
    finally:
        z.stdin.close()
        proc.wait(timeout=10)


def test_kill_wait_times_out_with_a_clear_error(zombie_leader: LeaderZombie):
    pid = zombie_leader.pid
    t0 = time.monotonic()
    with pytest.raises(NetfixError) as err:
        vm._kill_wait(pid, signal.SIGTERM, timeout=0.5)  # the child ignores SIGTERM
    assert 0.5 <= time.monotonic() - t0 < 5
    msg = str(err.value)
    assert f"pid {pid}" in msg and "SIGTERM" in msg and "locked" in msg, msg
    assert pid_alive(pid) and lock_held(zombie_leader.lock)
    vm._kill_wait(pid, timeout=10.0)
    assert not lock_held(zombie_leader.lock)


def test_pid_alive_for_missing_and_running_processes():
    assert pid_alive(os.getpid())
    with subprocess.Popen([sys.executable, "-c", "pass"]) as p:
        p.wait()
    assert not pid_alive(p.pid)


def test_a_boot_that_prints_nothing_for_a_while_is_reported_stalled(tmp_path, monkeypatch):
    """The console log stops growing and SSH never answers: BootStalled names the last
    line (vm_up / vm_reboot then power-cycle QEMU), instead of waiting out the timeout."""
    import socket

    (tmp_path / "serial.log").write_text("[    0.81] NET: Registered PF_INET\n"
                                         "[    0.82] IP idents hash table entries: 16384\n")
    with socket.socket() as s:  # a port nobody listens on: SSH never answers
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(vm, "STALL_SECONDS", 1.5)
    with pytest.raises(vm.BootStalled, match="IP idents hash table entries"):
        vm._poll_ssh(tmp_path, port, os.getpid(), 60.0, lambda _m: None, None)
