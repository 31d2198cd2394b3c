"""The wheel carries every package of netfix: pyproject.toml lists them one by one (the lab
stays out), so a new subpackage missing from the list would install a netfix that fails
at import (tests/integration/test_wheel.py shows it on a node; this says which)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_netfix_package_is_in_the_wheel_list():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "netfix").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
