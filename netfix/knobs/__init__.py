"""Knob families. Each module is one family with the same small interface:

    SECTION: str                                   # its profile section
    needs(section, ctx) -> facts.Needs             # what the fact script must read
    diff(section, facts, ctx) -> list[plan.Change] # desired vs facts, with ops to apply

Adding a knob is one new module here plus one property in schema/profile.json.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType


@dataclass
class Context:
    profile: str
    header: str = ""

    def __post_init__(self) -> None:
        if not self.header:
            self.header = (
                f"# Managed by netfix (profile {self.profile}). Do not edit by hand:\n"
                "# netfix reports edits as drift and its rollback restores what was here.\n"
            )


@functools.cache  # the package's files do not change during a run; hosts ask per plan
def modules() -> tuple[ModuleType, ...]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "SECTION"):
            found.append(mod)
    return tuple(found)
