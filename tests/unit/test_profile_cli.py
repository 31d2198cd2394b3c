"""The CLI on files that are not profiles: `profiles validate` and `plan --profile` name the
file and say why, exit 1, and never print what the file contains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NETFIX = str(Path(sys.executable).with_name("netfix"))
SECRET = "hunter2-s3cr3t"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NETFIX_INVENTORY"}
    return subprocess.run([NETFIX, *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.parametrize(
    ("name", "text", "why"),
    [
        ("passwd", f"root:x:0:0:root:/root:/bin/bash\nsvc:{SECRET}:1:1::/:/bin/sh\n",
         "not a profile: its YAML is a string"),
        ("docker-compose.yml", f"services:\n  web:\n    image: {SECRET}\nvolumes:\n",
         "not a profile: none of its top-level keys ('services', 'volumes') is a profile key"),
    ],
)
@pytest.mark.parametrize("command", [["profiles", "validate"], ["plan", "--profile"]])
def test_validate_and_plan_refuse_a_non_profile_without_echoing_it(
    tmp_path: Path, command: list[str], name: str, text: str, why: str
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / name).write_text(text)
    (tmp_path / "work").mkdir()
    rel = f"../etc/{name}"
    r = run(*command, rel, cwd=tmp_path / "work")
    assert r.returncode == 1, r
    assert r.stderr.startswith(f"netfix: error: {rel}:1: {why}"), r.stderr
    assert SECRET not in r.stderr + r.stdout and "Traceback" not in r.stderr
