"""The sysctl and owned-file library the knobs share (not a knob itself: it has no SECTION).

Live sysctl keys plus the one /etc/sysctl.d file that persists them (`sysctl_changes`,
with tuned-style `>=N`/`<=N` targets and boot-time shadowing from `netfix.sysctld`), and
whole files netfix owns (`file_change`: rewritten when their content differs, deleted
when empty), used by the sysctl, conntrack, synflood, rps, nicpersist and firewall knobs.
"""

from __future__ import annotations

import base64
import hashlib

from netfix import sh
from netfix.facts import Facts, Needs
from netfix.knobs import Context
from netfix.plan import NOT_SETTABLE, OK, SHADOWED, SKIP, UPDATE, Change, Op, When, Writer
from netfix.sysctld import (
    SYSCTL_CONF,
    SYSCTL_DIRS,
    Applier,
    BootApplier,
    BootValue,
    boot_values,
    detect,
)
from netfix.util import norm, sysctl_path

# The note on a key the node does not have (a knob that knows why says more).
ABSENT_NOTE = ("not settable here: key absent on this node (module not loaded, or not in "
               "this network namespace)")


# The fact snippet that tells which applier the node boots with (netfix.sysctld.detect).
BOOT_SCRIPT = "sysctl-boot"


def persist_needs(keys: set[str], persist_path: str) -> Needs:
    return Needs(sysctls=set(keys), files={persist_path, SYSCTL_CONF}, dirs=set(SYSCTL_DIRS),
                 scripts={BOOT_SCRIPT: sh.render("sysctl-boot.sh", NF_DIRS=SYSCTL_DIRS)})


def resolve(want: str, current: str | None) -> tuple[str | None, str | None]:
    """Tuned-style '>=N'/'<=N' only raise/lower: returns (target, problem)."""
    want = want.strip()
    if want[:2] not in (">=", "<="):
        return norm(want), None
    bound = int(want[2:].strip())
    if current is None:
        return str(bound), None
    if not current.lstrip("-").isdigit():
        return None, f"current value {current!r} is not a number; cannot apply {want!r}"
    cur = int(current)
    return str(max(cur, bound) if want.startswith(">=") else min(cur, bound)), None


def sysctl_changes(
    knob: str, desired: dict[str, str], facts: Facts, persist_path: str, ctx: Context,
    comments: dict[str, str] | None = None, absent_note: str = ABSENT_NOTE,
) -> list[Change]:
    """Changes for live keys plus the one persistence file that holds the settable ones.
    `absent_note`: what a key missing on the node means, where the knob knows better."""
    changes: list[Change] = []
    persist: dict[str, str] = {}
    for key in sorted(desired):
        val = facts.sysctl(key)
        target, problem = resolve(desired[key], val.value)
        change = Change(knob, key, val.value, target)
        if not val.exists:
            change.action = SKIP
            change.flag(NOT_SETTABLE, "absent", absent_note)
        elif not val.writable and norm(val.value) == target:
            change.action = OK  # nothing to do, whoever owns it
            change.notes.append("read-only here, already as desired")
        elif not val.writable:
            change.action = SKIP
            change.flag(NOT_SETTABLE, "read-only", "not settable here: read-only (host-global, "
                        "seen from a network namespace or container)")
        elif problem or target is None:
            change.action = SKIP
            change.notes.append(problem or "no target value")
        else:
            persist[key] = target
            if norm(val.value) == target:
                change.action = OK
            else:
                change.ops.append(Op("value", sysctl_path(key), val.value, target))
        changes.append(change)

    content = render_conf(persist, ctx, comments) if persist else None
    changes.append(file_change(knob, persist_path, facts.files.get(persist_path), content))

    boot = detect(facts.scripts.get(BOOT_SCRIPT, ""))
    if content is not None:
        changes[-1].notes.append(f"applied at boot by {boot.applier}: {boot.why}")
    values = boot_values(boot.applier, facts.dirs, facts.files.get(SYSCTL_CONF),
                         {persist_path: content}, set(persist))
    for change in changes:
        if change.target in persist:
            _boot(change, values[change.target], boot, persist_path)
    return changes


def _boot(change: Change, found: BootValue, boot: BootApplier, persist_path: str) -> None:
    """The applier's value at boot, as a Writer, and `shadowed` where it is not netfix's."""
    change.boot = found.value
    ours = found.value == change.desired
    change.writers.append(Writer(str(boot.applier), When.BOOT, found.value, boot.version,
                                 found.source or persist_path, wins=not ours))
    change.wins = "netfix" if ours else str(boot.applier)
    if ours:
        return
    src = found.source
    link = boot.link(src)
    via = f" (a symlink to {link})" if link else ""
    if found.value is None:
        change.flag(SHADOWED, src, f"not set at boot: {src}{via} has `-{change.target}` "
                    f"after {persist_path}, which drops netfix's line ({boot.applier}); "
                    "remove it there")
    elif src == SYSCTL_CONF and boot.applier is Applier.PROCPS:
        change.flag(SHADOWED, src, f"shadowed at boot by {src} (sets {found.value}): procps "
                    f"`sysctl --system` applies {SYSCTL_CONF} after every sysctl.d file; "
                    "remove the key there")
    else:
        change.flag(SHADOWED, src, f"shadowed at boot by {src} (sets {found.value}){via}: "
                    f"{boot.applier} reads it after {persist_path}; remove the key there "
                    "or rename")


def render_conf(values: dict[str, str], ctx: Context, comments: dict[str, str] | None) -> bytes:
    lines = [ctx.header]
    for key in sorted(values):
        if comments and key in comments:
            lines.append(f"# {comments[key]}\n")
        lines.append(f"{key} = {values[key]}\n")
    return "".join(lines).encode()


def describe_content(content: bytes | None) -> str:
    """A file's content in a plan row: absent, or its line count and short sha256."""
    if content is None:
        return "absent"
    n = content.count(b"\n")
    return f"{n} lines, sha256:{hashlib.sha256(content).hexdigest()[:12]}"


def file_change(knob: str, path: str, old: bytes | None, new: bytes | None) -> Change:
    """A whole file netfix owns: rewritten when its content differs, deleted when empty."""
    change = Change(knob, path, describe_content(old), describe_content(new), action=OK)
    if old != new:
        change.action = UPDATE
        change.ops.append(Op("file", path, _b64encode(old), _b64encode(new)))
    return change


def _b64encode(content: bytes | None) -> str | None:
    """A file op's old/new field: base64 text, None for an absent file."""
    return None if content is None else base64.b64encode(content).decode()
