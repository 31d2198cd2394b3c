"""The writer-model contract (netfix/writers/__init__.py) holds for every writer module:
NAME unique, needs(data) and annotate(changes, facts) with those signatures, and annotate
only says who else writes a target: it adds no ops and changes no values."""

from __future__ import annotations

import copy
import inspect

import pytest

from netfix import writers
from netfix.facts import Facts, Needs, Value
from netfix.knobs import Context, conntrack
from netfix.util import sysctl_path
from netfix.writers import WriterModel

PARAMS = {"needs": ["data"], "annotate": ["changes", "facts"]}
SAMPLES = {"kube-proxy": "PID 7\nARG /usr/local/bin/kube-proxy\nVERSION Kubernetes v1.31.2\n"}
PROFILE = {"conntrack": {"max": 262144, "timeouts": {"tcp_established": 3600, "udp": 20}},
           "sysctl": {"net.core.somaxconn": "4096"}}


def name(mod) -> str:
    return mod.__name__.rsplit(".", 1)[-1]


def test_there_are_writer_modules_and_names_are_unique():
    names = [m.NAME for m in writers.modules()]
    assert names and len(names) == len(set(names)), names


@pytest.mark.parametrize("mod", writers.modules(), ids=name)
def test_every_writer_module_keeps_the_contract(mod):
    assert isinstance(mod, WriterModel), f"{name(mod)}: needs NAME, needs(), annotate()"
    assert isinstance(mod.NAME, str) and mod.NAME
    for hook, params in PARAMS.items():
        fn = getattr(mod, hook)
        assert list(inspect.signature(fn).parameters) == params, \
            f"{name(mod)}.{hook} must take ({', '.join(params)})"
    assert isinstance(mod.needs(PROFILE), Needs) and isinstance(mod.needs({}), Needs)


@pytest.mark.parametrize("mod", writers.modules(), ids=name)
def test_annotate_adds_no_ops_and_keeps_values(mod):
    f = Facts(host="n", cpus=4, mem_bytes=8 * 2**30)
    for key, value in ((conntrack.MAX, "65536"), (conntrack.BUCKETS, "65536"),
                       (conntrack.COUNT, "10"), (conntrack.TIMEOUTS["tcp_established"], "432000"),
                       (conntrack.TIMEOUTS["udp"], "30")):
        f.values[sysctl_path(key)] = Value(True, True, value)
    # What the writer's scripts print: a recorded sample where this file has one (the
    # writer is present and annotates), else nothing (the writer is not on the node).
    for script in mod.needs(PROFILE).scripts:
        f.scripts[script] = SAMPLES.get(mod.NAME, "")
    changes = conntrack.diff(PROFILE["conntrack"], f, Context("t"))
    before = copy.deepcopy(changes)
    mod.annotate(changes, f)
    assert len(changes) == len(before)
    if SAMPLES.get(mod.NAME):  # not vacuous: with its sample the writer does annotate
        assert any(c.writers for c in changes), mod.NAME
    for old, new in zip(before, changes, strict=True):
        assert (new.knob, new.target, new.current, new.desired, new.action, new.ops) == \
            (old.knob, old.target, old.current, old.desired, old.action, old.ops)


# Profiles that make every writer model read the node (each model reads only for what its
# writer touches): a sysctl kubelet checks, conntrack, and a NIC block.
EVERYTHING = {**PROFILE, "sysctl": {"net.core.somaxconn": "4096", "vm.overcommit_memory": 1},
              "nic": {"interfaces": [{"match": "eth*", "mtu": 1500}]}}


@pytest.mark.parametrize("mod", writers.modules(), ids=name)
def test_processes_a_snippet_looks_for_are_in_its_needs(mod):
    """The fact script scans /proc once, for the names in Needs.procs (facts.sh nf_pids):
    a snippet looking for a process its needs do not name would never find it."""
    import re

    needs = mod.needs(EVERYTHING)
    assert needs.scripts, f"{name(mod)}: reads nothing even for {EVERYTHING}"
    for snippet in needs.scripts.values():
        wanted: set[str] = set()
        for m in re.finditer(r"\b(?:w_procs|nf_pids) ([^)\n]+)", snippet, re.M):
            words = m.group(1).split()
            if words == ['"$NF_COMM"']:
                words = re.findall(r"^NF_COMM='?([^'\n]+)'?$", snippet, re.M)
            wanted |= set(words)
        assert wanted, f"{name(mod)}: its snippet looks for no process"
        assert wanted <= needs.procs, (name(mod), wanted - needs.procs)
