"""Typed outcomes: enums for actions, op kinds and statuses, reason codes on changes, and
the code that decides on them (drift, rollback) reading codes, never note text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netfix import drift, engine, journal, transport
from netfix.journal import Tx
from netfix.plan import (
    PLAN_VERSION,
    Action,
    Change,
    Code,
    HostPlan,
    Op,
    OpKind,
    Plan,
    Reason,
    load_plan,
)
from netfix.status import HostStatus, TxStatus

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "plan.md").read_text()
SCHEMA = json.loads((ROOT / "netfix" / "schema" / "plan.json").read_text())


def test_flags_are_the_codes_of_the_reasons():
    c = Change("sysctl", "k", "1", "2", flags=[Code.DISRUPTIVE])
    c.flag(Code.SHADOWED, "/etc/sysctl.d/99-x.conf", "shadowed at boot by ...")
    c.flag(Code.SHADOWED, "/etc/sysctl.conf")
    assert c.flags == ["disruptive", "shadowed"]
    assert [str(r) for r in c.reasons] == ["disruptive", "shadowed//etc/sysctl.d/99-x.conf",
                                           "shadowed//etc/sysctl.conf"]
    assert c.notes == ["shadowed at boot by ..."]
    c.unflag(Code.SHADOWED)
    assert c.flags == ["disruptive"] and [r.code for r in c.reasons] == ["disruptive"]


def test_enums_are_enforced_where_data_comes_in():
    with pytest.raises(ValueError):
        Op("script", "x", None, "rm -rf /")
    with pytest.raises(ValueError):
        Change("k", "t", None, None, action="run")
    assert Op("cmd", "x", None, None).kind is OpKind.CMD
    assert json.dumps(Change("k", "t", "1", "2").action) == '"update"'  # prints as the word


def test_a_saved_plan_round_trips_its_reasons(tmp_path):
    c = Change("conntrack", "net.netfilter.nf_conntrack_max", "1", "2",
               ops=[Op("value", "/proc/sys/net/netfilter/nf_conntrack_max", "1", "2")])
    c.flag(Code.OTHER_WRITER, "kube-proxy", "kube-proxy (pid 7) writes 131072 here")
    path = tmp_path / "plan.json"
    Plan([HostPlan("n1", "p", [c], "f")]).save(path)
    back = load_plan(path).hosts[0].changes[0]
    assert back.reasons == [Reason("other-writer", "kube-proxy",
                                   "kube-proxy (pid 7) writes 131072 here")]
    assert back.action is Action.UPDATE and back.ops[0].kind is OpKind.VALUE
    assert json.loads(path.read_text())["version"] == PLAN_VERSION == SCHEMA["properties"][
        "version"]["const"]


def test_plan_doc_and_schema_name_every_code_and_value():
    assert set(SCHEMA["$defs"]["code"]["enum"]) == {c.value for c in Code}
    assert set(SCHEMA["$defs"]["change"]["properties"]["action"]["enum"]) == \
        {a.value for a in Action}
    assert set(SCHEMA["$defs"]["op"]["properties"]["kind"]["enum"]) == {k.value for k in OpKind}
    for word in [*Code, *Action, *OpKind]:
        assert f"`{word}`" in DOC, f"docs/plan.md does not explain `{word}`"
    assert f"version {PLAN_VERSION}" in DOC


def test_drift_decides_on_codes_not_on_note_text():
    hp = HostPlan("n1", "p", [
        # prose that names kube-proxy but no other-writer reason: not other-writer drift
        Change("sysctl", "a", "1", "1", action="ok",
               notes=["kube-proxy writes this; shadowed by nobody"]),
        # a reason whose message has none of the words drift once grepped for
        Change("sysctl", "b", "1", "1", action="ok",
               reasons=[Reason(Code.OTHER_WRITER, "kube-proxy", "set back at its start")]),
        Change("sysctl", "c", "1", "1", action="ok",
               reasons=[Reason(Code.SHADOWED, "/etc/sysctl.d/99-z.conf", "later at boot")]),
    ])
    hd = drift.classify(hp, journal.Journal([]))
    got = {(i.target, i.kind): i.detail for i in hd.items}
    assert got == {("b", "other-writer"): "set back at its start",
                   ("c", "shadowed"): "later at boot"}


def test_tx_status_is_read_from_the_first_word():
    assert TxStatus.of("applied confirmed 2026-12-01T10:00:00Z") is TxStatus.APPLIED
    assert TxStatus.of("rolled-back 20261201T1-aaaaaa 2026-12-01T10:00:00Z") is \
        TxStatus.ROLLED_BACK
    assert TxStatus.of("") is None and TxStatus.of("garbage") is None
    t = Tx("x", "apply", "h", "p", [], status="applied-unconfirmed 2026-12-01T10:00:00Z")
    assert t.state is TxStatus.UNCONFIRMED
    assert HostStatus.of_tx(TxStatus.FAILED_RESTORED) is HostStatus.FAILED_RESTORED
    assert HostStatus.of_tx(None) is HostStatus.UNKNOWN


def test_rollback_meeting_a_running_revert_has_its_own_exit_code_branch():
    tx = Tx("r1", "rollback", "h", "p", [], rolls_back="a1")
    res = transport.Result(journal.REVERTING, "REVERTING a1\n", "")
    out = engine._result("h", tx, res, HostStatus.ROLLED_BACK)
    assert out.status is HostStatus.REVERTING and not out.ok
    assert "reverting transaction a1 by itself" in out.message
