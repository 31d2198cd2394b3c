"""irqbalance: service enabled/running, and the CPUs it must leave alone
(IRQBALANCE_BANNED_CPULIST in /etc/default/irqbalance on Debian, /etc/sysconfig/irqbalance
on RHEL).

The defaults file belongs to the distro, so netfix changes one line and keeps the rest.
The change is one cmd step that carries both contents: it writes the file and restarts a
running irqbalance in the same step, so an apply restarts it after the new file is in
place and a rollback after the old one is back - a file step plus a separate restart step
would, undone in reverse order, restart before the old file returns. No config change, no
restart. Service state needs systemd as PID 1; elsewhere (containers, lab nodes) it is a
"not settable" row, and systemctl is never called: it would reach the host's systemd.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex

from netfix import sh
from netfix.facts import Facts, Needs
from netfix.ifaces import ERROR, Setting, cpulist, skip
from netfix.knobs import Context
from netfix.plan import Change

SECTION = "irqbalance"
AFTER: tuple[str, ...] = ()
KNOB = "irqbalance"
SERVICE = "irqbalance.service"
DEBIAN, RHEL = "/etc/default/irqbalance", "/etc/sysconfig/irqbalance"
VAR = "IRQBALANCE_BANNED_CPULIST"
# Facts.cpus is only a count; the online list can have holes ("0-3,6").
ONLINE = "/sys/devices/system/cpu/online"

_STATE = sh.render("irqbalance-state.sh", NF_SERVICE=SERVICE).rstrip("\n")


def needs(section: dict, ctx: Context) -> Needs:
    return Needs(paths={ONLINE}, files={DEBIAN, RHEL}, scripts={KNOB: _STATE})


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    state = dict(line.split(" ", 1) for line in facts.scripts.get(KNOB, "").splitlines()
                 if " " in line)
    changes = []
    if "banned_cpus" in section:
        changes.append(_config(str(section["banned_cpus"]), facts, state, ctx))
    for what in ("enabled", "running"):
        if what in section:
            changes.append(_service(what, bool(section[what]), state).change())
    return changes


def _service(what: str, want: bool, state: dict[str, str]) -> Setting:
    desired = ("enabled" if want else "disabled") if what == "enabled" else \
        ("running" if want else "stopped")
    pid1 = state.get("pid1", "unknown")
    if pid1 != "systemd":
        return skip(KNOB, SERVICE, what, desired, f"service state not manageable here: PID 1 is "
                    f"{pid1}, not systemd (a container or lab node)")
    if what == "enabled":
        current = state.get("enabled", "").strip()
        if current not in ("enabled", "disabled"):
            why = "irqbalance is not installed" if current in ("", "not-found") else \
                f"{SERVICE} is {current}"
            return skip(KNOB, SERVICE, what, desired, why + "; not changed", current=current)
        read = f"systemctl is-enabled {SERVICE} 2>/dev/null | head -n1"
        set_ = (f'if [ "$1" = enabled ]; then systemctl enable --quiet {SERVICE}; '
                f"else systemctl disable --quiet {SERVICE}; fi")
        return Setting(KNOB, SERVICE, what, current, desired, read, set_)
    current = "running" if state.get("active", "").strip() == "active" else "stopped"
    read = f"systemctl is-active --quiet {SERVICE} && echo running || echo stopped"
    set_ = (f'if [ "$1" = running ]; then systemctl start {SERVICE}; '
            f"else systemctl stop {SERVICE}; fi")
    return Setting(KNOB, SERVICE, what, current, desired, read, set_)


def config_path(facts: Facts, state: dict[str, str]) -> str:
    if facts.files.get(RHEL) is not None:
        return RHEL
    if facts.files.get(DEBIAN) is not None:
        return DEBIAN
    return RHEL if state.get("sysconfig") == "yes" else DEBIAN


def banned(content: bytes | None) -> str | None:
    """The active IRQBALANCE_BANNED_CPULIST value of a defaults file, unquoted."""
    for line in (content or b"").decode(errors="replace").splitlines():
        m = re.match(rf"^\s*(?:export\s+)?{VAR}=(.*)$", line)
        if m:
            return m.group(1).strip().strip("\"'")
    return None


def edit(content: bytes | None, cpus: str, ctx: Context) -> bytes:
    """`content` with the banned-CPU line set: the active line replaced, else added after
    its commented template line, else appended. Every other byte stays."""
    line = f"{VAR}={cpus}\n"
    if content is None:
        return (ctx.header + line).encode()
    lines = content.decode(errors="surrogateescape").splitlines(keepends=True)
    active = [i for i, x in enumerate(lines) if re.match(rf"^\s*(?:export\s+)?{VAR}=", x)]
    template = [i for i, x in enumerate(lines) if re.match(rf"^\s*#\s*{VAR}=", x)]
    if active:
        lines[active[0]] = line
    else:
        at = template[0] + 1 if template else len(lines)
        if at and not lines[at - 1].endswith("\n"):
            lines[at - 1] += "\n"
        lines.insert(at, f"# set by netfix (profile {ctx.profile})\n" + line)
    return "".join(lines).encode(errors="surrogateescape")


def _content_id(content: bytes | None) -> str:
    """What the read command prints for a file: its full sha256, or "absent"."""
    return "absent" if content is None else hashlib.sha256(content).hexdigest()


def _config(cpus: str, facts: Facts, state: dict[str, str], ctx: Context) -> Change:
    path = config_path(facts, state)
    old = facts.files.get(path)
    now = banned(old)
    shown_now, shown_want = f"{VAR}={now if now is not None else '(unset)'}", f"{VAR}={cpus}"
    online = facts.value(ONLINE).value
    missing = sorted(set(cpulist(cpus)) - set(cpulist(online) if online else range(facts.cpus)))
    if missing:
        where = f"online CPUs {online}" if online else f"{facts.cpus} CPUs"
        return skip(KNOB, path, "banned CPUs", shown_want, f"CPU {','.join(map(str, missing))} "
                    f"is not online on this node ({where}): not applied",
                    current=shown_now, flag=ERROR).change()
    new = old if now == cpus else edit(old, cpus, ctx)
    q = shlex.quote(path)
    change = Setting(KNOB, path, "banned CPUs", _content_id(old), _content_id(new),
                     read=f"if [ -f {q} ]; then sha256sum < {q} | cut -c1-64; else echo absent; fi",
                     set=_write_sh(path, {_content_id(old): old, _content_id(new): new})).change()
    # The step compares content hashes; the row shows the line that changes.
    change.current, change.desired, change.boot = shown_now, shown_want, shown_want
    if change.ops:
        change.notes.append("only this line changes; a running irqbalance is restarted")
    return change


def _write_sh(path: str, contents: dict[str, bytes | None]) -> str:
    """sh writing the content whose hash is "$1" (atomically, fsync'd: the prelude's
    nf_write), then restarting a running irqbalance where systemd is PID 1
    (netfix/sh/irqbalance-set.sh)."""
    words = [f"{sha}:" + ("" if content is None else base64.b64encode(content).decode())
             for sha, content in contents.items()]
    return (sh.assign(NF_PATH=path, NF_SERVICE=SERVICE, NF_CONTENTS=words)
            # The step carries the prelude's writer: a cmd step's set runs on its own too.
            + sh.prelude_functions(sh.load("irqbalance-set.sh")) + sh.load("irqbalance-set.sh")
            + 'nf_irqbalance_set "$1"')
