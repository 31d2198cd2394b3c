"""Persistence of the NIC knobs (nic, mtu, rps): ethtool, MTU and RPS/XPS settings are
lost at reboot and when a driver re-registers its interface. One mechanism brings them
back (README, "NIC, RPS and MTU knobs", says why this one):

- /etc/netfix/nic.sh re-applies every setting by interface name, with the same set
  snippets the journal runs, so boot and apply cannot disagree;
- netfix-nic.service runs it once before network-pre.target, pulled in by a
  sysinit.target drop-in rather than `systemctl enable` (as the firewall's unit is): a
  plain file, so no systemctl call that in a container would reach the host's systemd;
- 90-netfix-nic.rules runs it for one interface when that interface appears later.

All four are whole files netfix owns: rollback deletes exactly what apply added.
"""

from __future__ import annotations

import shlex

from netfix import ifaces, sh
from netfix.facts import Facts, Needs
from netfix.ifaces import Setting
from netfix.ifsettings import REGISTRY
from netfix.knobs import Context
from netfix.plan import Change
from netfix.sysctlfiles import file_change

SECTION = "nic"
AFTER = ("link", "rps")  # its boot script holds every per-interface setting planned
KNOB = "nic"
SCRIPT = "/etc/netfix/nic.sh"
UNIT = "/etc/systemd/system/netfix-nic.service"
DROPIN = "/etc/systemd/system/sysinit.target.d/netfix-nic.conf"
UDEV = "/etc/udev/rules.d/90-netfix-nic.rules"

_UNIT = f"""[Unit]
Description=netfix: re-apply NIC settings (ethtool, MTU, RPS/XPS)
# Early, like other pre-network setup: networkd/NetworkManager configure links after it.
DefaultDependencies=no
After=local-fs.target systemd-modules-load.service
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh {SCRIPT}
"""
_DROPIN = "[Unit]\nWants=netfix-nic.service\n"

# Interfaces that appear after boot (driver reload, hotplug): nic.sh does only that one and
# exits at once for interfaces it does not manage. Not filtered by KERNEL== here, because
# that is the name before udev renames the interface.
_UDEV = f'ACTION=="add", SUBSYSTEM=="net", RUN+="/bin/sh {SCRIPT} $name"\n'


def needs(section: dict, ctx: Context) -> Needs:
    n = ifaces.needs(section)
    n.files |= {SCRIPT, UNIT, DROPIN, UDEV}
    return n


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    keep = [s for s in ctx.interfaces(section, facts).settings
            if s.settable and REGISTRY[s.group].persist]
    content = {SCRIPT: render(keep, ctx) if keep else None}
    for path, text in ((UNIT, _UNIT), (DROPIN, _DROPIN), (UDEV, _UDEV)):
        content[path] = (ctx.header + text).encode() if keep else None
    return [file_change(KNOB, path, facts.files.get(path), new) for path, new in content.items()]


def render(settings: list[Setting], ctx: Context) -> bytes:
    """The boot script: one function per setting (its journal set snippet), called with the
    desired value, grouped per interface in apply order (channels before RPS queues)."""
    q = shlex.quote
    out = ["#!/bin/sh\n", ctx.header,
           "# Re-applies netfix's NIC settings by interface name. Run by netfix-nic.service at\n"
           "# boot and by 90-netfix-nic.rules when an interface appears; `nic.sh IFACE` does\n"
           "# one interface. Settings already in place are left alone (no link reset).\n",
           sh.load("nic-boot.sh")]
    for i, s in enumerate(settings, 1):
        out.append(f"s{i}() {{\n{s.set}\n}}\n")
    order = list(dict.fromkeys(s.iface for s in settings))
    for iface in sorted(order):
        out.append(f"if want {q(iface)}; then\n")
        for i, s in enumerate(settings, 1):
            if s.iface == iface:
                out.append(f"  s{i} {q(s.desired or '')} || fail {q(f'{iface} {s.what}')}\n")
        out.append("fi\n")
    out.append('exit "$rc"\n')
    # The prelude (PATH, and the functions the settings use) right after the comments.
    out.insert(3, sh.prelude("".join(out[3:])))
    return "".join(out).encode()
