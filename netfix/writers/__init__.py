"""Other writers of a node's network settings: one module per writer or family (kube-proxy,
the boot-time sysctl applier, TuneD, udev .link files, NetworkManager, kubelet, CNI agents),
one contract, run after every knob's diff in the same round trip.

A module is a writer model when it has `NAME`. It provides:

    NAME: str                                     # the model's name: the writer's own
                                                  # (kube-proxy, tuned) or the family's, for
                                                  # a module modelling several (cni: cilium,
                                                  # calico; linkfiles: udevd, networkd, NM)
    needs(data) -> facts.Needs                    # what the fact script must read, given the
                                                  # merged profile data (read nothing when the
                                                  # profile touches nothing this writer writes)
    annotate(changes, facts) -> None              # add plan.Writer entries to the changes it
                                                  # writes, set Change.wins, and flag
                                                  # other-writer (or error) only where the
                                                  # writer really undoes netfix's value

A writer model never adds ops: it only says who else writes a target, when, and who wins.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from netfix.util import plugin_modules

if TYPE_CHECKING:
    from netfix.facts import Facts, Needs
    from netfix.plan import Change


@runtime_checkable
class WriterModel(Protocol):
    NAME: str

    def needs(self, data: dict) -> Needs: ...

    def annotate(self, changes: list[Change], facts: Facts) -> None: ...


@functools.cache  # the package's files do not change during a run
def modules() -> tuple[ModuleType, ...]:
    return plugin_modules(__name__, __path__, "NAME")
