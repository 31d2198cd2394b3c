"""Knob families: one module per family, one contract (`Knob`), checked for every module
by tests/unit/test_knob_contract.py.

A module is a knob when it has `SECTION`. It then provides:

    SECTION: str                                   # its profile section (a schema property)
    AFTER: tuple[str, ...]                         # knob modules whose steps must run first
    needs(section, ctx) -> facts.Needs             # what the fact script must read
    diff(section, facts, ctx) -> list[plan.Change] # desired vs facts, with ops to apply

and optionally:

    check_profile(data) -> [(message, field path)] # checks JSON Schema cannot express
    plan_interfaces(section, facts, view) -> [ifaces.Setting]
        # per-interface settings of ifsettings.REGISTRY entries it plans; called once per
        # host, in knob order, to build the host view (ctx.interfaces) all NIC knobs read

Adding a knob is one new module here plus one property in schema/profile.json; adding a
per-interface setting is one ifsettings.REGISTRY entry plus one nic_block property.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from netfix.facts import Facts, Needs
    from netfix.ifaces import HostView
    from netfix.plan import Change
    from netfix.rendercache import NodeRenders


@runtime_checkable
class Knob(Protocol):
    SECTION: str
    AFTER: tuple[str, ...]

    def needs(self, section: dict, ctx: Context) -> Needs: ...

    def diff(self, section: dict, facts: Facts, ctx: Context) -> list[Change]: ...


OPTIONAL = ("check_profile", "plan_interfaces")


@dataclass
class Context:
    profile: str
    header: str = ""
    # The firewall's cache of this node's renders (netfix/rendercache.py); None: no cache
    # (a library caller, the pyinfra fact).
    renders: NodeRenders | None = None
    # The host view, built on first use for the (section, facts) it was asked for.
    view: HostView | None = field(default=None, repr=False)
    _view_of: tuple = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.header:
            self.header = (
                f"# Managed by netfix (profile {self.profile}). Do not edit by hand:\n"
                "# netfix reports edits as drift and its rollback restores what was here.\n"
            )

    def interfaces(self, section: dict, facts: Facts) -> HostView:
        """The host view for this `nic` section and these facts, computed once: parsed
        links, block selection, and every knob's planned per-interface settings."""
        # Identity, not equality: the view belongs to these very objects (held here, so
        # their ids cannot be reused while it is).
        if self.view is None or self._view_of[0] is not section or self._view_of[1] is not facts:
            from netfix import ifaces

            net = ifaces.node(facts)
            view = ifaces.HostView(net, ifaces.select(section, net))
            for mod in modules():
                plan = getattr(mod, "plan_interfaces", None)
                if plan is not None:
                    view.settings += plan(section, facts, view)
            self.view, self._view_of = view, (section, facts)
        return self.view


def _order(mods: dict[str, ModuleType]) -> list[ModuleType]:
    """Every module after the ones its AFTER names; among those free to go, by name, so
    the order is stable and independent of anything but the declarations."""
    done: list[str] = []
    left = dict(sorted(mods.items()))
    while left:
        ready = [n for n, m in left.items() if all(a in done for a in getattr(m, "AFTER", ()))]
        if not ready:
            raise RuntimeError(f"knob order has a cycle or a missing module: {sorted(left)}")
        done.append(ready[0])
        del left[ready[0]]
    return [mods[n] for n in done]


@functools.cache  # the package's files do not change during a run; hosts ask per plan
def modules() -> tuple[ModuleType, ...]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "SECTION"):
            found[info.name] = mod
    return tuple(_order(found))


def name(mod: ModuleType) -> str:
    return mod.__name__.rsplit(".", 1)[-1]
