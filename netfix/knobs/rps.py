"""RPS / XPS / RFS: per-queue rps_cpus, rps_flow_cnt and xps_cpus, and the global
net.core.rps_sock_flow_entries (a sysctl, persisted in sysctl.d like any other).

Queue files are cmd steps rather than value steps: a read prints the mask normalised
("00000000,00000003" -> "3") and a queue that does not exist yet reads as "0", so a
channel change earlier in the same transaction can add queues that get their masks too,
and a rollback that takes them away again still verifies.
"""

from __future__ import annotations

import shlex

from netfix import ifaces
from netfix.facts import Facts, Needs
from netfix.ifaces import ERROR, HostView, Link, Net, Setting, skip
from netfix.knobs import Context
from netfix.knobs.nic import planned_queues
from netfix.plan import Change
from netfix.sysctlfiles import persist_needs, sysctl_changes

SECTION = "nic"
AFTER = ("nic",)  # masks for the queues that nic's channel change adds
KNOB = "rps"
SOCK = "net.core.rps_sock_flow_entries"
PERSIST = "/etc/sysctl.d/90-netfix-rps.conf"
DEFAULT_SOCK_ENTRIES = 32768


def needs(section: dict, ctx: Context) -> Needs:
    n = ifaces.needs(section)
    if "rps_sock_flow_entries" in section:
        n.update(persist_needs({SOCK}, PERSIST))
    return n


def pow2(n: int) -> int:
    """The kernel rounds rps_flow_cnt and rps_sock_flow_entries up to a power of two."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def diff(section: dict, facts: Facts, ctx: Context) -> list[Change]:
    changes = [s.change() for s in ctx.interfaces(section, facts).of(KNOB)]
    if "rps_sock_flow_entries" in section:
        entries = pow2(section["rps_sock_flow_entries"])
        rows = sysctl_changes(KNOB, {SOCK: str(entries)}, facts, PERSIST, ctx)
        if entries != section["rps_sock_flow_entries"]:
            rows[0].notes.append(f"rounded up to a power of two ({entries}), as the kernel does")
        changes += rows
    return changes


def plan_interfaces(section: dict, facts: Facts, view: HostView) -> list[Setting]:
    net = view.net
    out: list[Setting] = []
    for name, want in view.selection.wants.items():
        if "rps" not in want and "xps" not in want:
            continue
        link = net.links[name]
        n_rx, n_tx = planned_queues(link, view)
        rps, xps = want.get("rps", {}), want.get("xps", {})
        entries = section.get("rps_sock_flow_entries", DEFAULT_SOCK_ENTRIES)
        for i in range(n_rx):
            if "cpus" in rps:
                out.append(_queue(link, f"rx-{i}", "rps_cpus",
                                  _cpus(rps["cpus"], i, n_rx, net, "rps")))
            if "flow_cnt" in rps:
                cnt = rps["flow_cnt"]
                cnt = pow2(entries // max(n_rx, 1)) if cnt == "auto" else pow2(int(cnt))
                out.append(_queue(link, f"rx-{i}", "rps_flow_cnt", (str(cnt), None)))
        for i in range(n_tx):
            if "cpus" in xps:
                out.append(_queue(link, f"tx-{i}", "xps_cpus",
                                  _cpus(xps["cpus"], i, n_tx, net, "xps")))
    return out


def _cpus(spec: object, queue: int, nqueues: int, net: Net, kind: str) -> tuple[str, str | None]:
    """(normalised mask, problem) for one queue. `auto`: RPS spreads only while there are
    fewer queues than CPUs (with a queue per CPU the hardware already spreads, and RPS
    just adds an IPI); XPS spreads CPUs over the queues whenever there are several."""
    cpus = net.cpus
    if spec == "all":
        return ifaces.mask(cpus), None
    if spec == "auto":
        if (kind == "rps" and nqueues >= len(cpus)) or (kind == "xps" and nqueues < 2):
            return "0", None
        return ifaces.mask(ifaces.spread(queue, nqueues, cpus)), None
    wanted = ifaces.cpulist(str(spec))
    missing = sorted(set(wanted) - set(cpus))
    if missing:
        return ifaces.mask(wanted), (f"CPU {','.join(map(str, missing))} is not online on this "
                                     f"node (online: {','.join(map(str, cpus))}): not applied")
    return ifaces.mask(wanted), None


def _queue(link: Link, queue: str, file: str, want: tuple[str, str | None]) -> Setting:
    s = _queue_setting(link, queue, file, want)
    s.group = "xps" if file == "xps_cpus" else "rps"
    return s


def _queue_setting(link: Link, queue: str, file: str, want: tuple[str, str | None]) -> Setting:
    desired, problem = want
    what = f"{queue} {file}"
    raw = link.qvalues.get(f"{queue}/{file}")
    exists = queue in link.queues
    if problem:
        return skip(KNOB, link.name, what, desired, problem, flag=ERROR, detail="cpu-offline")
    if exists and raw is None:
        why = ("the kernel offers XPS on multi-queue devices only" if file == "xps_cpus"
               else "a kernel without CONFIG_RPS?")
        return skip(KNOB, link.name, what, desired, f"{file} cannot be read on {link.name} "
                    f"({link.driver_name}): {why}", detail="unsupported")
    path = shlex.quote(f"/sys/class/net/{link.name}/queues/{queue}/{file}")
    if file == "rps_flow_cnt":
        current, read = (raw or "0").strip(), f"cat {path} 2>/dev/null || echo 0"
    else:
        current = ifaces.norm_mask(raw)
        read = f"{{ cat {path} 2>/dev/null || echo 0; }} | sed 's/^[0,]*//; s/^$/0/'"
    s = Setting(KNOB, link.name, what, current, desired, read, f'echo "$1" > {path}')
    if not exists:
        s.notes.append(f"{queue} appears with this plan's channel change")
    return s
