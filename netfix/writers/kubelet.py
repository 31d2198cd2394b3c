"""kubelet: the kernel tunables it checks (or sets) at every start.

Read from kubernetes pkg/kubelet/cm/container_manager_linux.go (setupNode and
setupKernelTunables(logger, option), the current contextual-logging version; older
releases checked only the first four keys) and the values from
staging/src/k8s.io/component-helpers/node/util/sysctl/sysctl.go. At start kubelet reads
each key of KERNEL_DEFAULTS: with protectKernelDefaults (flag
--protect-kernel-defaults or `protectKernelDefaults: true` in its --config file; a
command-line flag overrides the file) any other value is an error and kubelet refuses
to start ("invalid kernel flag"); without it, kubelet writes the value itself
(KernelTunableModify). See docs/writers.md, section "kubelet".
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from netfix import sh
from netfix.facts import Facts, Needs
from netfix.plan import OTHER_WRITER, Change, Code, When, Writer
from netfix.util import normalize_key

NAME = "kubelet"
SCRIPT = "kubelet"
KERNEL_DEFAULTS = {
    "vm.overcommit_memory": "1",  # VMOvercommitMemoryAlways
    "vm.panic_on_oom": "0",  # VMPanicOnOOMInvokeOOMKiller
    "kernel.panic": "10",  # KernelPanicRebootTimeout
    "kernel.panic_on_oops": "1",  # KernelPanicOnOopsAlways
    "kernel.keys.root_maxkeys": "1000000",  # RootMaxKeysSetting
    "kernel.keys.root_maxbytes": "25000000",  # RootMaxBytesSetting = 25 x RootMaxKeysSetting
}
FLAG = "--protect-kernel-defaults"
FIELD = "protectKernelDefaults"


@dataclass(frozen=True)
class Kubelet:
    pid: str
    protect: bool
    source: str  # where `protect` was read: the flag, the config file, or kubelet's default
    problem: str = ""  # the config file could not be read: `protect` is a guess


def needs(data: dict) -> Needs:
    """The process scan only when the profile sets a key kubelet checks."""
    keys = {normalize_key(str(k)) for k in (data.get("sysctl") or {})}
    if not keys & KERNEL_DEFAULTS.keys():
        return Needs()
    return Needs(scripts={SCRIPT: sh.render("process-config.sh", NF_COMM="kubelet")},
                 procs={"kubelet"})


def parse(output: str) -> Kubelet | None:
    """netfix/sh/process-config.sh's output for the kubelet process; None: not running."""
    pid, flag, config, body, problem = "", None, "", [], ""
    for line in output.splitlines():
        if line.startswith("PID "):
            pid = line[4:].strip()
        elif line.startswith("ARG "):
            arg = line[4:]
            if arg == FLAG:
                flag = True
            elif arg.startswith(FLAG + "="):
                flag = arg.partition("=")[2].strip().lower() in ("true", "1", "t")
        elif line.startswith("CONFIG "):
            config = line[7:]
        elif line.startswith("| "):
            body.append(line[2:])
        elif line.startswith("UNREADABLE "):
            problem = f"its config file {config} is unreadable"
    if not pid:
        return None
    if flag is not None:
        return Kubelet(pid, flag, f"flag {FLAG}" + ("" if flag else "=false"))
    if not config:
        return Kubelet(pid, False, "no --config and no flag: kubelet's default (false)")
    if problem:
        return Kubelet(pid, False, config, problem)
    try:
        doc = yaml.safe_load("\n".join(body))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        return Kubelet(pid, False, config, f"its config file {config}{where} is not YAML")
    value = doc.get(FIELD) if isinstance(doc, dict) else None
    return Kubelet(pid, value is True, f"{config}: {FIELD}: {str(value is True).lower()}")


def annotate(changes: list[Change], facts: Facts) -> None:
    kubelet = parse(facts.scripts.get(SCRIPT, ""))
    if kubelet is None:
        return
    who = f"kubelet (pid {kubelet.pid})"
    for c in changes:
        want = KERNEL_DEFAULTS.get(c.target)
        if want is None or c.desired is None:
            continue
        differs = c.desired != want
        if kubelet.problem and differs:
            c.flag(Code.WARNING, NAME, f"{who} checks {c.target} = {want} at start, but "
                   f"{kubelet.problem}: whether it refuses other values is unknown")
        if kubelet.protect:
            c.writers.append(Writer(NAME, When.START, None, source=kubelet.source))
            if differs:
                c.flag(Code.ERROR, NAME, f"{who} runs with protectKernelDefaults "
                       f"({kubelet.source}) and refuses to start unless {c.target} = {want}: "
                       f"applying {c.desired} would stop kubelet at its next restart; keep "
                       f"{want} or turn protectKernelDefaults off")
            continue
        c.writers.append(Writer(NAME, When.START, want, source=kubelet.source, wins=differs))
        if differs:
            c.wins = NAME
            c.flag(OTHER_WRITER, NAME, f"{who} writes {c.target} = {want} at its next start "
                   f"(protectKernelDefaults is off: {kubelet.source}) and undoes {c.desired}")
