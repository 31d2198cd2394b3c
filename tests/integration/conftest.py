"""Lab fixtures: real netns nodes with sshd, started by netfix's own lab code.

Skips only when not root or a tool is missing locally; with CI=true that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NETFIX = str(Path(sys.executable).with_name("netfix"))
TOOLS = ("ip", "sshd", "unshare", "nsenter", "flock", "sysctl")


def missing_tools(tools: tuple[str, ...]) -> list[str]:
    return [t for t in tools if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]


def skip_or_fail(problem: str | None, what: str) -> None:
    """Skip a test that cannot run here, except in CI, where a missing lab is a failure."""
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {what} cannot run: {problem}")
        pytest.skip(problem)


def need_lab() -> None:
    problem = None
    if os.geteuid() != 0:
        problem = "integration tests need root (network namespaces, sshd)"
    elif missing := missing_tools(TOOLS):
        problem = f"missing tools: {', '.join(missing)}"
    skip_or_fail(problem, "the lab")


@pytest.fixture(scope="module")
def lab_lock():
    """Lab names are global on the machine: test runs in parallel take turns."""
    import fcntl

    with open("/run/netfix-lab-tests.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="module")
def lab(lab_lock):
    """Three lab nodes per test module (0.1 s a node); tests in a module must leave them as
    they found them. Per module, so that test_lab.py can own the whole lab for itself."""
    need_lab()
    from netfix_lab import netns as labmod

    lab_dir = Path(f"/run/netfix-lab-pytest-{os.getpid()}")
    inv = labmod.lab_up(3, lab_dir)
    try:
        yield Lab(lab_dir, inv)
    finally:
        labmod.lab_down(lab_dir)


class Lab:
    def __init__(self, lab_dir: Path, inventory: Path):
        from netfix_lab import netns as labmod

        self.dir = lab_dir
        self.inventory = inventory
        self.nodes = {n.name: n for n in labmod.lab_nodes(lab_dir)}
        self._labmod = labmod

    def sh(self, node: str, cmd: str, check: bool = True) -> str:
        return self._labmod.node_exec(self.nodes[node], cmd, check=check).stdout

    def sysctl(self, node: str, key: str) -> str:
        return " ".join(self.sh(node, f"sysctl -n {key}").split())

    def files(self, node: str, dirs=("/etc/sysctl.d", "/etc/modprobe.d",
                                      "/etc/modules-load.d")) -> dict[str, str]:
        """Every file under `dirs` inside the node with its exact bytes (as hex)."""
        out = self.sh(node, "for d in " + " ".join(dirs) + "; do find $d -type f 2>/dev/null;"
                      " done | sort | while read -r f; do printf '%s ' \"$f\"; "
                      "od -An -tx1 -v \"$f\" | tr -d ' \\n'; echo; done")
        return dict(line.split(" ", 1) if " " in line else (line, "")
                    for line in out.splitlines())

    def netfix(self, *args: str, check_rc: int | None = 0, inventory: bool = True,
               env: dict | None = None) -> subprocess.CompletedProcess:
        argv = [NETFIX, *args]
        if inventory and "-i" not in args:
            argv += ["-i", str(self.inventory)]
        p = subprocess.run(argv, capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "200", **(env or {})})
        if check_rc is not None:
            assert p.returncode == check_rc, f"{argv} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def plan_json(self, *args: str) -> dict:
        return json.loads(self.netfix("plan", "--json", *args, check_rc=None).stdout)
