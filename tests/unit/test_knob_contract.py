"""The knob contract (netfix/knobs/__init__.py) holds for every knob module, and the
per-interface registry (netfix/ifsettings.py) agrees with everything derived from it."""

from __future__ import annotations

import ast
import base64
import inspect
import json
from pathlib import Path

import pytest

from netfix import engine, ethtool, ifaces, knobs
from netfix.facts import Facts
from netfix.ifsettings import REGISTRY
from netfix.knobs import Knob, nicpersist
from netfix.plan import UPDATE
from netfix.profile import Profile

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "netfix" / "schema" / "profile.json").read_text())
DATA = Path(__file__).resolve().parents[1] / "data"


def facts_from(recording: str) -> Facts:
    return Facts(host="n", cpus=2, tools={"ethtool": True},
                 scripts={ifaces.SCRIPT: (DATA / recording).read_text()})


def block(match: dict, **settings) -> dict:
    return {"match": match, **settings}


PARAMS = {"needs": ["section", "ctx"], "diff": ["section", "facts", "ctx"],
          "check_profile": ["data"], "plan_interfaces": ["section", "facts", "view"]}


@pytest.mark.parametrize("mod", knobs.modules(), ids=knobs.name)
def test_every_knob_module_keeps_the_contract(mod):
    assert isinstance(mod, Knob), f"{knobs.name(mod)}: needs SECTION, AFTER, needs(), diff()"
    assert mod.SECTION in SCHEMA["properties"], f"{mod.SECTION} is not a profile section"
    assert isinstance(mod.AFTER, tuple) and all(isinstance(a, str) for a in mod.AFTER)
    names = [knobs.name(m) for m in knobs.modules()]
    assert set(mod.AFTER) <= set(names), f"AFTER names a module that is not a knob: {mod.AFTER}"
    for hook, params in PARAMS.items():
        fn = getattr(mod, hook, None)
        if hook in ("needs", "diff") or fn is not None:
            assert callable(fn) and list(inspect.signature(fn).parameters) == params, \
                f"{knobs.name(mod)}.{hook} must take ({', '.join(params)})"
    public = {n for n, v in vars(mod).items() if inspect.isfunction(v) and
              v.__module__ == mod.__name__ and not n.startswith("_")}
    assert "settings" not in public, "planned interface settings come from plan_interfaces"


def test_declared_order_is_kept():
    names = [knobs.name(m) for m in knobs.modules()]
    for i, mod in enumerate(knobs.modules()):
        for before in mod.AFTER:
            assert names.index(before) < i, f"{names[i]} must come after {before}: {names}"
    # the steps that matter: channels before the queues they add, persistence last
    assert names.index("nic") < names.index("rps") < names.index("nicpersist")
    assert names.index("link") < names.index("mtu")


def test_a_cycle_is_an_error_not_a_silent_order():
    class A:
        AFTER = ("b",)

    class B:
        AFTER = ("a",)

    with pytest.raises(RuntimeError, match="cycle"):
        knobs._order({"a": A, "b": B})  # type: ignore[dict-item]


def test_no_knob_calls_another_knobs_functions():
    """Knobs share the host view (ctx.interfaces), never each other's planners."""
    mods = {knobs.name(m) for m in knobs.modules()}
    for mod in knobs.modules():
        tree = ast.parse(Path(mod.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "netfix.knobs":
                imported = {a.name for a in node.names} & mods
                assert not imported, f"{knobs.name(mod)} imports knob modules {imported}"


def test_registry_drives_selection_schema_and_boot_script():
    block = SCHEMA["$defs"]["nic_block"]["properties"]
    assert set(block) - {"match"} == set(REGISTRY), "nic_block and ifsettings.REGISTRY differ"
    assert ifaces.GROUPS == tuple(REGISTRY)
    assert {n for n, e in REGISTRY.items() if e.planner == "nic"} == set(ethtool.SHOW)
    planners = {knobs.name(m) for m in knobs.modules() if hasattr(m, "plan_interfaces")}
    assert {e.planner for e in REGISTRY.values()} == planners
    for entry in REGISTRY.values():
        assert (entry.link is not None) == (entry.planner == "link"), entry.name
        # "disruptive" in the schema text and in the registry agree
        assert ("Disruptive" in block[entry.name].get("description", "")) == entry.disruptive



def test_every_registry_setting_is_in_the_boot_script():
    """One block with every registry key on a recorded veth node: each settable setting
    is one line of nic.sh, and the one of each group the planner produced is there."""
    f = facts_from("ifaces-veth-node.txt")
    section = {"interfaces": [block({"name": "eth1"}, offloads={"gro": True},
                                    coalesce={"rx-usecs": 10}, mtu=1400, txqueuelen=2000,
                                    rps={"cpus": "all"}, xps={"cpus": "all"})]}
    ctx = knobs.Context("test")
    view = ctx.interfaces(section, f)
    persisted = [s for s in view.settings if s.settable and REGISTRY[s.group].persist]
    assert {s.group for s in persisted} >= {"offloads", "mtu", "txqueuelen", "rps"}
    script = base64.b64decode(next(
        c for c in nicpersist.diff(section, f, ctx) if c.target == nicpersist.SCRIPT
    ).ops[0].new).decode()
    for s in persisted:
        assert f"{s.iface} {s.what}" in script
    assert "ip link set dev eth1 txqueuelen" in script


def test_txqueuelen_is_planned_from_ip_link_and_read_back_from_sysfs():
    f = facts_from("ifaces-veth-node.txt")
    p = Profile("t", [], {"nic": {"interfaces": [block({"name": "eth1"}, txqueuelen=2000)]}}, "")
    hp = engine.diff_facts("h", p, f)
    row = next(c for c in hp.changes if c.target == "eth1 txqueuelen")
    assert row.knob == "txqueuelen" and row.action == UPDATE and row.desired == "2000"
    assert row.current == str(ifaces.node(f).links["eth1"].attrs["txqlen"])
    assert not row.flags, "txqueuelen does not reset the link"
    op = row.ops[0]
    assert op.read == "cat /sys/class/net/eth1/tx_queue_len"
    assert op.set == 'ip link set dev eth1 txqueuelen "$1"'


def test_host_view_is_built_once_per_host_plan(monkeypatch):
    calls = {"select": 0, "parse": 0}
    real_select, real_parse = ifaces.select, ifaces.parse

    def select(*a):
        calls["select"] += 1
        return real_select(*a)

    def parse_(*a):
        calls["parse"] += 1
        return real_parse(*a)

    monkeypatch.setattr(ifaces, "select", select)
    monkeypatch.setattr(ifaces, "parse", parse_)
    f = facts_from("ifaces-veth-node.txt")
    p = Profile("t", [], {"nic": {"interfaces": [block({"name": "eth1"}, offloads={"gro": True},
                                                   mtu=1400, rps={"cpus": "all"})],
                              "overlay": {"devices": []}}}, "")
    engine.diff_facts("h", p, f)
    assert calls == {"select": 1, "parse": 1}
