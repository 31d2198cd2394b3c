"""conntrack buckets: exact 4:1 (the default) says when it shrinks the hash table, and
`conntrack.buckets: raise-only` (kube-proxy's rule, max(current, max/4)) never does."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netfix.errors import InputError
from netfix.facts import Facts, Value
from netfix.knobs import Context, conntrack
from netfix.plan import OK, UPDATE
from netfix.profile import load_profile
from netfix.util import sysctl_path

CTX = Context("test")


def node(max_: str, buckets: str, kernel: str = "6.18.0") -> Facts:
    f = Facts(host="n", cpus=2, mem_bytes=4 * 2**30, kernel=kernel)
    for key, value in ((conntrack.MAX, max_), (conntrack.BUCKETS, buckets),
                       (conntrack.COUNT, "5")):
        f.values[sysctl_path(key)] = Value(True, True, value)
    return f


def rows(section: dict, f: Facts):
    return {c.target: c for c in conntrack.diff(section, f, CTX)}


def test_exact_4_to_1_says_it_shrinks_the_table_and_what_that_costs():
    # This machine's host namespace: kernel default buckets = max = 262144.
    b = rows({"max": 262144}, node("262144", "262144"))[conntrack.BUCKETS]
    assert (b.current, b.desired, b.action) == ("262144", "65536", UPDATE)
    note = next(n for n in b.notes if n.startswith("lowers buckets"))
    assert "from 262144 to 65536 (since kernel 5.15 the default is buckets = max)" in note
    assert "4 entries per chain instead of 1" in note and "save 1.5 MiB" in note
    assert "conntrack.buckets: raise-only keeps 262144" in note


def test_no_shrink_note_when_4_to_1_grows_the_table_or_on_old_kernels():
    b = rows({"max": 1048576}, node("262144", "65536"))[conntrack.BUCKETS]
    assert b.desired == "262144" and not any(n.startswith("lowers") for n in b.notes)
    old = rows({"max": 262144}, node("262144", "262144", kernel="5.4.0"))[conntrack.BUCKETS]
    note = next(n for n in old.notes if n.startswith("lowers buckets"))
    assert "since kernel 5.15" not in note


def test_raise_only_keeps_a_larger_table_and_raises_a_smaller_one():
    keep = rows({"max": 262144, "buckets": "raise-only"}, node("262144", "262144"))
    assert keep[conntrack.BUCKETS].action == OK and keep[conntrack.BUCKETS].desired == "262144"
    grow = rows({"max": 2097152, "buckets": "raise-only"}, node("262144", "262144"))
    assert grow[conntrack.BUCKETS].desired == "524288"  # max/4 is larger: 4:1
    mod = next(c for c in grow.values() if c.target == conntrack.MODPROBE)
    assert mod.ops  # persisted at module load with the same value


@pytest.fixture
def pdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NETFIX_PROFILE_PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(d: Path, text: str) -> Path:
    path = d / "ct.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_raise_only_is_a_valid_profile_value_with_a_max(pdir: Path):
    write(pdir, "conntrack:\n  max: auto\n  buckets: raise-only\n")
    assert load_profile("ct").data["conntrack"]["buckets"] == "raise-only"


def test_raise_only_without_max_is_an_error_naming_the_field(pdir: Path):
    path = write(pdir, "conntrack:\n  timeouts: {udp: 15}\n  buckets: raise-only\n")
    with pytest.raises(InputError) as e:
        load_profile("ct")
    assert (e.value.file, e.value.line, e.value.path) == (str(path), 3, "conntrack.buckets")
    assert "raise-only without conntrack.max" in e.value.message


def test_other_words_are_refused_by_the_schema(pdir: Path):
    write(pdir, "conntrack:\n  max: 262144\n  buckets: lower-only\n")
    with pytest.raises(InputError) as e:
        load_profile("ct")
    assert e.value.path == "conntrack.buckets" and "raise-only" in e.value.message
