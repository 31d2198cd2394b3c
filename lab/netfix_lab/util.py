"""Helpers shared by the netns lab (netfix_lab.netns) and the VM lab node (netfix_lab.vm)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# root's PATH may come from a tool manager and miss the sbin dirs where sshd and ip live.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def host_path() -> str:
    """The caller's PATH with the system dirs after it (for the lab's own commands)."""
    return os.environ.get("PATH", "") + ":" + SYSTEM_PATH


def which(tool: str) -> str | None:
    return shutil.which(tool, path=host_path())


def proc_state(stat_path: str) -> str | None:
    """The state letter of a /proc stat file; None if it is gone."""
    try:
        stat = Path(stat_path).read_text()
    except OSError:
        return None
    # The state follows the parenthesised comm, which may itself contain ")" and spaces.
    return stat.rsplit(")", 1)[1].split()[0]


def pid_alive(pid: int) -> bool:
    """True while any thread of the process lives (zombies count as dead: their
    namespaces are gone). The leader's own state is not enough: when QEMU's main thread
    has exited, /proc/PID/stat says Z while the vCPU threads still run and still hold the
    disk images' locks."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    except OSError:
        tasks = []
    if not tasks:  # no task dir to read: fall back to the leader's state
        return proc_state(f"/proc/{pid}/stat") not in (None, "Z", "X")
    return any(
        proc_state(f"/proc/{pid}/task/{tid}/stat") not in (None, "Z", "X") for tid in tasks
    )


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def remove_entries(lab_dir: Path, entries: tuple[str, ...], what: str) -> list[str]:
    """Remove only the files and dirs the lab wrote (`entries` and their `.tmp`), so that a
    mistyped lab dir cannot wipe a real one; then the dir itself if that left it empty."""
    names = [*entries, *(e + ".tmp" for e in entries)]
    ours = [lab_dir / n for n in names if os.path.lexists(lab_dir / n)]
    for path in ours:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if not ours:
        return []
    try:
        lab_dir.rmdir()
        return [f"dir {lab_dir}"]
    except OSError:
        return [f"{what} files in {lab_dir} (dir kept: it holds other files)"]
