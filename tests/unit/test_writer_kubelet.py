"""kubelet's protectKernelDefaults writer model, fed with recorded process-config.sh
output, and apply's refusal of a plan with error rows."""

from __future__ import annotations

from netfix import engine, writers
from netfix.facts import Facts, Value
from netfix.inventory import Host
from netfix.knobs import Context, sysctl
from netfix.plan import OTHER_WRITER, Change, Code, HostPlan, Op, Plan
from netfix.status import HostStatus
from netfix.util import sysctl_path
from netfix.writers import kubelet

CONFIG = "/var/lib/kubelet/config.yaml"
KCONF = ("| apiVersion: kubelet.config.k8s.io/v1beta1\n| kind: KubeletConfiguration\n"
         "| protectKernelDefaults: true\n| cgroupDriver: systemd\n")


def output(*args: str, config: str | None = KCONF) -> str:
    lines = ["PID 4242", "ARG /usr/bin/kubelet", *(f"ARG {a}" for a in args)]
    if config is not None:
        lines += [f"ARG --config={CONFIG}", f"CONFIG {CONFIG}", config.rstrip("\n")]
    return "\n".join(lines) + "\n"


def test_the_contract_and_the_table():
    assert kubelet in writers.modules()
    assert kubelet.KERNEL_DEFAULTS["kernel.keys.root_maxbytes"] == str(25 * 1000000)
    assert not kubelet.needs({"sysctl": {"net.core.somaxconn": 1}}).scripts
    assert kubelet.SCRIPT in kubelet.needs({"sysctl": {"vm/overcommit_memory": 2}}).scripts


def test_where_protect_kernel_defaults_is_read():
    assert kubelet.parse("") is None
    k = kubelet.parse(output())
    assert (k.pid, k.protect, k.source) == ("4242", True, f"{CONFIG}: protectKernelDefaults: true")
    # A command-line flag overrides the config file (kubelet-config-file docs).
    k = kubelet.parse(output("--protect-kernel-defaults=false"))
    assert (k.protect, k.source) == (False, "flag --protect-kernel-defaults=false")
    assert kubelet.parse(output("--protect-kernel-defaults", config=None)).protect is True
    assert kubelet.parse(output(config="| protectKernelDefaults: false\n")).protect is False
    assert kubelet.parse(output(config=None)).source.startswith("no --config")
    bad = kubelet.parse(output(config="| a: [1\n| b: 2\n"))
    assert not bad.protect and "line" in bad.problem and CONFIG in bad.problem
    gone = kubelet.parse(output(config="UNREADABLE x\n"))
    assert "unreadable" in gone.problem


def plan_rows(out: str, want: dict) -> dict[str, Change]:
    f = Facts(host="h", scripts={kubelet.SCRIPT: out})
    for key in want:
        f.values[sysctl_path(key)] = Value(True, True, "0")
    changes = sysctl.diff(want, f, Context("t"))
    kubelet.annotate(changes, f)
    return {c.target: c for c in changes}


def test_protected_kubelet_makes_a_different_value_an_error_row():
    rows = plan_rows(output(), {"vm.overcommit_memory": 2, "kernel.panic": 10})
    om, panic = rows["vm.overcommit_memory"], rows["kernel.panic"]
    assert Code.ERROR in om.flags and om.reason(Code.ERROR).detail == "kubelet"
    assert "refuses to start unless vm.overcommit_memory = 1" in om.notes[-1]
    assert Code.ERROR not in panic.flags  # the value kubelet requires
    assert [(w.name, w.when, w.value) for w in panic.writers if w.name == "kubelet"] == [
        ("kubelet", "start", None)]


def test_unprotected_kubelet_writes_its_values_at_start():
    rows = plan_rows(output(config="| kind: KubeletConfiguration\n"), {"vm.panic_on_oom": 1})
    c = rows["vm.panic_on_oom"]
    assert Code.ERROR not in c.flags and OTHER_WRITER in c.flags and c.wins == "kubelet"
    w = [w for w in c.writers if w.name == "kubelet"][0]
    assert (w.value, w.wins) == ("0", True)
    bad = plan_rows(output(config="| a: [1\n"), {"vm.panic_on_oom": 1})["vm.panic_on_oom"]
    assert Code.WARNING in bad.flags and "not YAML" in bad.notes[-2]


def test_apply_refuses_a_host_whose_plan_has_error_rows():
    """Invariant: nothing runs on a host whose pending changes carry `error` (the host is
    refused before any connection: this host's name resolves nowhere)."""
    c = Change("sysctl", "vm.overcommit_memory", "1", "2",
               ops=[Op("value", "/proc/sys/vm/overcommit_memory", "1", "2")])
    c.flag(Code.ERROR, "kubelet", "kubelet refuses to start")
    host = Host("nowhere.invalid", [], {"ssh_host": "nowhere.invalid"})
    [r] = engine.apply([host], Plan([HostPlan(host.name, "p", [c])]))
    assert r.status == HostStatus.REFUSED and not r.ok
    assert "marks as errors; nothing was changed" in r.message
    assert r.details == ["sysctl vm.overcommit_memory: kubelet refuses to start"]
