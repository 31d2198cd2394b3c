"""What a node-side script execs, counted with strace (the process-count tests of the fact
script, the doctor's script and the journal listing): `strace -ff` writes a file per
process, so concurrent execs of a pipeline never split a line."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

EXEC = re.compile(r'execve\("([^"]+)".*= 0$', re.M)


def run_counted(argv: list[str], trace: Path, netns: bool = False, **run) -> tuple[
        subprocess.CompletedProcess, dict[str, int]]:
    """Run argv under strace; the programs it exec'd, by name. `netns`: in a new network
    and mount namespace with its own sysfs, as a lab node has (/sys/class/net lists the
    namespace's interfaces); needs root."""
    if not shutil.which("strace") or (netns and (os.geteuid() != 0 or not shutil.which("unshare"))):
        pytest.skip("needs strace (scripts/setup.sh installs it)"
                    + (", root and unshare" if netns else ""))
    trace.mkdir(exist_ok=True)
    strace = ["strace", "-ff", "-qq", "-e", "trace=execve", "-o", str(trace / "x")]
    if netns:
        argv = ["unshare", "--net", "--mount", "sh", "-c",
                'mount -t sysfs sysfs /sys && exec "$@"', "-", *strace, *argv]
    else:
        argv = [*strace, *argv]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, **run)
    ran = collections.Counter(os.path.basename(m.group(1)) for f in trace.iterdir()
                              for m in EXEC.finditer(f.read_text()))
    return p, dict(ran)
