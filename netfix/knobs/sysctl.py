"""Any sysctl key: live value, persistence in /etc/sysctl.d, effective value at boot.

The knob of the `sysctl:` section only; the sysctl/file library it shares with the other
knobs is netfix.sysctlfiles, the boot-time model of sysctl.d is netfix.sysctld.
"""

from __future__ import annotations

from netfix.facts import Facts, Needs
from netfix.knobs import Context
from netfix.plan import Change
from netfix.sysctlfiles import persist_needs, sysctl_changes

SECTION = "sysctl"
AFTER: tuple[str, ...] = ()
PERSIST = "/etc/sysctl.d/90-netfix.conf"


def needs(section: dict, ctx: Context) -> Needs:
    return persist_needs(set(section), PERSIST)


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    return sysctl_changes(SECTION, {k: str(v) for k, v in section.items()}, facts, PERSIST, ctx)
