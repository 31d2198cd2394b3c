"""Profiles: loading, extends, schema errors with file:line:path, semantic checks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from netfix.errors import InputError
from netfix.knobs.conntrack import field_for_sysctl as conntrack_field_for_sysctl
from netfix.profile import (
    field_path,
    find_profile,
    list_profiles,
    load_profile,
    profile_search_path,
    validate_file,
)

REPO = Path(__file__).resolve().parents[2]
REPO_PROFILES = REPO / "netfix" / "profiles"  # shipped as package data


@pytest.fixture
def pdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated profile dir first in the search path; cwd moved so ./profiles is empty."""
    d = tmp_path / "profiles.d"
    d.mkdir()
    monkeypatch.setenv("NETFIX_PROFILE_PATH", str(d))
    monkeypatch.chdir(tmp_path)
    return d


def write(d: Path, name: str, text: str) -> Path:
    path = d / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def error_of(name_or_path: str | Path) -> InputError:
    with pytest.raises(InputError) as info:
        load_profile(name_or_path)
    return info.value


# --------------------------------------------------------------------------- shipped profiles


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Pin the repo's profiles first so an /etc/netfix/profiles on this machine cannot interfere.
    monkeypatch.setenv("NETFIX_PROFILE_PATH", str(REPO_PROFILES))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("name", ["base", "k8s-node", "public-vds"])
def test_shipped_profiles_validate(shipped: None, name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.description
    assert "extends" not in profile.data
    assert validate_file(REPO_PROFILES / f"{name}.yaml").data == profile.data


def test_base_values(shipped: None) -> None:
    data = load_profile("base").data
    assert data["sysctl"]["net.ipv4.tcp_syncookies"] == 1
    assert data["sysctl"]["net.core.somaxconn"] == ">=4096"
    # Not set on purpose: a wide local port range would overlap the NodePort range.
    assert "net.ipv4.ip_local_port_range" not in data["sysctl"]


def test_k8s_node_matches_kube_proxy(shipped: None) -> None:
    profile = load_profile("k8s-node")
    assert [Path(f).name for f in profile.files] == ["base.yaml", "k8s-node.yaml"]
    conntrack = profile.data["conntrack"]
    assert conntrack["max"] == "auto"
    assert conntrack["auto"] == {"per_core": 32768, "min": 131072, "max_memory_percent": 5}
    assert conntrack["timeouts"]["tcp_established"] == 86400
    assert conntrack["timeouts"]["tcp_close_wait"] == 3600
    assert conntrack["timeouts"]["tcp_syn_sent"] == 60  # from base
    assert profile.data["sysctl"]["net.ipv4.ip_forward"] == 1


def test_public_vds_merges_the_whole_chain(shipped: None) -> None:
    profile = load_profile("public-vds")
    assert [Path(f).name for f in profile.files] == [
        "base.yaml",
        "k8s-node.yaml",
        "public-vds.yaml",
    ]
    data = profile.data
    timeouts = data["conntrack"]["timeouts"]
    assert timeouts["tcp_syn_sent"] == 30  # overrides base's 60
    assert timeouts["tcp_syn_recv"] == 30
    assert timeouts["tcp_established"] == 86400  # inherited from k8s-node
    assert (timeouts["udp"], timeouts["udp_stream"], timeouts["icmp"]) == (15, 60, 10)
    assert data["conntrack"]["max"] == 262144
    assert "buckets" not in data["conntrack"]  # derived later as max/4
    assert "auto" not in data["conntrack"]  # nulled: unused with an explicit max
    assert data["sysctl"]["net.ipv4.ip_forward"] == 1  # inherited from k8s-node
    assert data["sysctl"]["net.ipv4.tcp_syncookies"] == 1  # inherited from base
    assert data["sysctl"]["net.core.somaxconn"] == ">=8192"
    assert data["sysctl"]["net.ipv4.tcp_synack_retries"] == 3


def test_shipped_profiles_leave_conntrack_sysctls_to_the_conntrack_section(shipped: None) -> None:
    for name in ("base", "k8s-node", "public-vds"):
        for key in load_profile(name).data.get("sysctl", {}):
            assert conntrack_field_for_sysctl(key) is None, (name, key)


# --------------------------------------------------------------------------- extends


def test_two_parents_later_wins_and_child_on_top(pdir: Path) -> None:
    write(
        pdir,
        "a.yaml",
        """
        description: a
        sysctl: {net.core.somaxconn: 1000, net.ipv4.tcp_syncookies: 1}
        conntrack: {timeouts: {udp: 30, icmp: 30}}
    """,
    )
    write(
        pdir,
        "b.yaml",
        """
        description: b
        sysctl: {net.core.somaxconn: 2000}
        conntrack: {timeouts: {udp: 20}}
    """,
    )
    write(
        pdir,
        "child.yaml",
        """
        extends: [a, b]
        conntrack: {timeouts: {icmp: 5}}
    """,
    )
    profile = load_profile("child")
    assert [Path(f).stem for f in profile.files] == ["a", "b", "child"]
    assert profile.data["sysctl"] == {"net.core.somaxconn": 2000, "net.ipv4.tcp_syncookies": 1}
    assert profile.data["conntrack"]["timeouts"] == {"udp": 20, "icmp": 5}
    assert profile.description == "b"  # inherited from the last parent that has one


def test_diamond_applies_shared_parent_once(pdir: Path) -> None:
    write(pdir, "root.yaml", "sysctl: {net.core.somaxconn: 1}\n")
    write(pdir, "left.yaml", "extends: root\nsysctl: {net.core.somaxconn: 2}\n")
    write(pdir, "right.yaml", "extends: root\nsysctl: {net.ipv4.ip_forward: 1}\n")
    write(pdir, "top.yaml", "extends: [left, right]\n")
    profile = load_profile("top")
    assert [Path(f).stem for f in profile.files] == ["root", "left", "right", "top"]
    # root must not come back through `right` and undo left's override.
    assert profile.data["sysctl"] == {"net.core.somaxconn": 2, "net.ipv4.ip_forward": 1}


def test_null_deletes_inherited_keys(pdir: Path) -> None:
    write(
        pdir,
        "parent.yaml",
        """
        sysctl: {net.core.somaxconn: 4096, net.ipv4.ip_forward: 1}
        conntrack: {max: auto, auto: {per_core: 1}, timeouts: {udp: 30, icmp: 10}}
    """,
    )
    write(
        pdir,
        "child.yaml",
        """
        extends: parent
        sysctl: {net.ipv4.ip_forward: null}
        conntrack: {auto: null, timeouts: {icmp: null}}
    """,
    )
    data = load_profile("child").data
    assert data["sysctl"] == {"net.core.somaxconn": 4096}
    assert data["conntrack"] == {"max": "auto", "timeouts": {"udp": 30}}


def test_null_in_a_new_mapping_leaves_no_null_behind(pdir: Path) -> None:
    write(pdir, "p.yaml", "description: p\n")
    write(pdir, "c.yaml", "extends: p\nconntrack: {timeouts: {udp: null, icmp: 3}}\n")
    assert load_profile("c").data["conntrack"] == {"timeouts": {"icmp": 3}}


def test_relative_path_parent_is_relative_to_the_child(pdir: Path, tmp_path: Path) -> None:
    sub = tmp_path / "elsewhere" / "deep"
    sub.mkdir(parents=True)
    write(sub.parent, "parent.yaml", "sysctl: {net.core.somaxconn: 77}\n")
    child = write(sub, "child.yaml", "extends: ../parent.yaml\n")
    assert load_profile(str(child)).data["sysctl"]["net.core.somaxconn"] == 77


def test_cycle_error_names_the_cycle(pdir: Path) -> None:
    write(pdir, "a.yaml", "extends: b\n")
    write(pdir, "b.yaml", "description: b\nextends: [c]\n")
    write(pdir, "c.yaml", "extends: a\n")
    err = error_of("a")
    assert "a -> b -> c -> a" in str(err)
    assert err.file is not None and err.file.endswith("c.yaml")
    assert err.line == 1


def test_self_extends_is_a_cycle(pdir: Path) -> None:
    write(pdir, "me.yaml", "extends: me\n")
    assert "me -> me" in str(error_of("me"))


def test_unknown_parent_points_at_the_extends_entry(pdir: Path) -> None:
    write(pdir, "x.yaml", "description: x\nextends:\n  - nosuch\n")
    err = error_of("x")
    assert (err.line, err.path) == (3, "extends[0]")
    assert "unknown profile 'nosuch'" in err.message


# --------------------------------------------------------------------------- finding


def test_unknown_profile_lists_available_and_dirs(pdir: Path) -> None:
    write(pdir, "alpha.yaml", "description: first\n")
    write(pdir, "beta.yml", "description: second\n")
    with pytest.raises(InputError) as info:
        find_profile("gamma")
    message = str(info.value)
    assert "unknown profile 'gamma'" in message
    assert "alpha" in message and "beta" in message
    assert str(pdir) in message


def test_search_path_order_and_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    write(first, "same.yaml", "description: from one\n")
    write(second, "same.yaml", "description: from two\n")
    write(second, "only2.yaml", "description: only two\n")
    monkeypatch.setenv("NETFIX_PROFILE_PATH", f"{first}:{second}")
    monkeypatch.chdir(tmp_path)
    dirs = profile_search_path()
    assert dirs[:3] == [first, second, tmp_path / "profiles"]
    assert dirs[-1] == REPO_PROFILES
    assert find_profile("same") == first / "same.yaml"
    listed = {name: (path, desc) for name, path, desc in list_profiles()}
    assert listed["same"] == (first / "same.yaml", "from one")
    assert listed["only2"][1] == "only two"
    assert "public-vds" in listed  # the repo's profiles come last


def test_path_like_names_are_paths(pdir: Path, tmp_path: Path) -> None:
    write(pdir, "named.yaml", "description: by name\n")
    loose = write(tmp_path, "loose.yaml", "description: by path\n")
    assert load_profile("named").description == "by name"
    assert load_profile("loose.yaml").description == "by path"  # relative to cwd
    assert load_profile(str(loose)).name == "loose"
    with pytest.raises(InputError, match="profile file not found"):
        find_profile("./missing.yaml")


# --------------------------------------------------------------------------- YAML errors


def test_malformed_yaml_reports_file_and_line(pdir: Path) -> None:
    path = write(
        pdir,
        "bad.yaml",
        """
        description: broken
        sysctl:
          net.core.somaxconn: 4096
          net.ipv4.ip_forward: 1: 2
    """,
    )
    err = error_of("bad")
    assert err.file == str(path)
    assert err.line == 4
    assert "mapping values are not allowed" in err.message
    assert str(err).startswith(f"{path}:4: invalid YAML")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "empty"), ("# only a comment\n", "empty"), ("{}\n", "empty"),
     ("- a\n- b\n", "not a profile: its YAML is a list")],
)
def test_empty_or_non_mapping(pdir: Path, text: str, expected: str) -> None:
    (pdir / "odd.yaml").write_text(text)
    assert expected in error_of("odd").message


def test_duplicate_key_is_an_error(pdir: Path) -> None:
    write(pdir, "dup.yaml", "sysctl:\n  net.core.somaxconn: 1\n  net.core.somaxconn: 2\n")
    err = error_of("dup")
    assert err.line == 3 and "duplicate key" in err.message and "line 2" in err.message


def test_non_string_key_is_an_error(pdir: Path) -> None:
    write(pdir, "boolkey.yaml", "sysctl:\n  yes: 1\n")
    err = error_of("boolkey")
    assert err.line == 2 and "must be a string" in err.message


# --------------------------------------------------------------------------- schema errors


def test_schema_error_has_file_line_and_field_path(pdir: Path) -> None:
    path = write(
        pdir,
        "typo.yaml",
        """
        description: wrong type deep down
        conntrack:
          timeouts:
            tcp_established: 86400
            udp: thirty
    """,
    )
    err = error_of("typo")
    assert (err.file, err.line, err.path) == (str(path), 5, "conntrack.timeouts.udp")
    assert "must be an integer" in err.message and "'thirty'" in err.message


def test_schema_error_in_parent_points_at_parent(pdir: Path) -> None:
    parent = write(pdir, "parent.yaml", "description: p\nconntrack:\n  max: 12\n")
    write(pdir, "child.yaml", "extends: parent\n")
    err = error_of("child")
    assert (err.file, err.line, err.path) == (str(parent), 3, "conntrack.max")
    assert '>= 1024 or "auto"' in err.message


def test_unknown_field_points_at_its_line(pdir: Path) -> None:
    write(pdir, "extra.yaml", "description: x\nconntrack:\n  max: auto\n  maxx: 5\n")
    err = error_of("extra")
    assert (err.line, err.path) == (4, "conntrack.maxx")
    assert "unknown field 'maxx'" in err.message and "buckets" in err.message


def test_null_inside_a_list_is_rejected(pdir: Path) -> None:
    write(pdir, "nl.yaml", "extends:\n  - base\n  - null\n")
    err = error_of("nl")
    assert (err.line, err.path) == (3, "extends[1]")
    assert "got null" in err.message


@pytest.mark.parametrize(
    "key",
    ["net.ipv4 x", "net.core.x;reboot", "net..core", "net.$(id).x", "net", "../etc/passwd"],
)
def test_bad_sysctl_key_rejected(pdir: Path, key: str) -> None:
    write(pdir, "k.yaml", f'description: k\nsysctl:\n  "{key}": 1\n')
    err = error_of("k")
    assert err.line == 3
    assert "not a sysctl key" in err.message
    assert err.path == field_path(["sysctl", key])


@pytest.mark.parametrize(
    "value", ["1; reboot", "$(id)", "`id`", "4096 | tee", "a\\nb", ">= 1 && x", 'x"y', ">=", "a\tb"]
)
def test_bad_sysctl_value_rejected(pdir: Path, value: str) -> None:
    # A JSON string is a valid YAML double-quoted scalar.
    (pdir / "v.yaml").write_text(f"sysctl:\n  net.core.somaxconn: {json.dumps(value)}\n")
    err = error_of("v")
    assert err.path == 'sysctl."net.core.somaxconn"'
    assert err.line == 2
    assert "must be an integer, a string of space-separated" in err.message


@pytest.mark.parametrize(
    "value", [1, "4096 131072 6291456", "bbr", "fq", ">=4096", "<= 10", "-1", "1,2"]
)
def test_good_sysctl_values_accepted(pdir: Path, value: object) -> None:
    (pdir / "ok.yaml").write_text(f"sysctl:\n  net.ipv4.tcp_rmem: {json.dumps(value)}\n")
    assert load_profile("ok").data["sysctl"]["net.ipv4.tcp_rmem"] == value


def test_sysctl_value_with_trailing_newline_rejected(pdir: Path) -> None:
    # Python's `$` matches before a final newline; the schema must not let one through.
    write(pdir, "nl.yaml", 'sysctl:\n  net.ipv4.tcp_congestion_control: "bbr\\n"\n')
    assert "must be an integer" in error_of("nl").message


def test_slashed_sysctl_key_accepted(pdir: Path) -> None:
    write(pdir, "sl.yaml", "sysctl:\n  net/ipv4/conf/eth0.100/rp_filter: 2\n")
    assert load_profile("sl").data["sysctl"] == {"net/ipv4/conf/eth0.100/rp_filter": 2}


# --------------------------------------------------------------------------- semantic checks


def test_broken_4_to_1_names_both_numbers(pdir: Path) -> None:
    path = write(pdir, "ct.yaml", "conntrack:\n  max: 262144\n  buckets: 1000\n")
    err = error_of("ct")
    assert (err.file, err.line, err.path) == (str(path), 3, "conntrack.buckets")
    assert "1000" in err.message and "262144" in err.message and "65536" in err.message
    assert "4:1" in err.message


def test_matching_buckets_accepted(pdir: Path) -> None:
    write(pdir, "ct.yaml", "conntrack:\n  max: 262144\n  buckets: 65536\n")
    assert load_profile("ct").data["conntrack"]["buckets"] == 65536


def test_buckets_checked_against_inherited_max(pdir: Path) -> None:
    write(pdir, "p.yaml", "conntrack: {max: 262144, buckets: 65536}\n")
    child = write(pdir, "c.yaml", "extends: p\nconntrack:\n  max: 524288\n")
    err = error_of("c")
    # buckets was set by the parent; the report says so with the child's max.
    assert err.path == "conntrack.buckets" and "524288" in err.message
    assert err.file != str(child)


def test_buckets_with_auto_max_rejected(pdir: Path) -> None:
    write(pdir, "ct.yaml", "conntrack:\n  max: auto\n  buckets: 65536\n")
    err = error_of("ct")
    assert err.path == "conntrack.buckets" and "auto" in err.message


@pytest.mark.parametrize(
    ("key", "owner"),
    [
        ("net.netfilter.nf_conntrack_max", "conntrack.max"),
        ("net/netfilter/nf_conntrack_buckets", "conntrack.buckets"),
        ("net.netfilter.nf_conntrack_udp_timeout", "conntrack.timeouts.udp"),
        (
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            "conntrack.timeouts.tcp_established",
        ),
        ("net.netfilter.nf_conntrack_icmpv6_timeout", "conntrack.timeouts"),
        ("net.nf_conntrack_max", "conntrack.max"),
    ],
)
def test_conntrack_sysctls_must_use_conntrack_section(pdir: Path, key: str, owner: str) -> None:
    write(pdir, "s.yaml", f"description: s\nsysctl:\n  {key}: 5\n")
    err = error_of("s")
    assert err.line == 3
    assert err.path == field_path(["sysctl", key])
    assert "conntrack section" in err.message and owner in err.message


def test_unrelated_netfilter_sysctl_allowed(pdir: Path) -> None:
    write(pdir, "s.yaml", "sysctl:\n  net.netfilter.nf_conntrack_tcp_be_liberal: 1\n")
    assert load_profile("s").data["sysctl"]["net.netfilter.nf_conntrack_tcp_be_liberal"] == 1


def test_list_profiles_survives_a_broken_file(pdir: Path) -> None:
    write(pdir, "good.yaml", "description: fine\n")
    (pdir / "broken.yaml").write_text("a: [\n")
    listed = {name: desc for name, _, desc in list_profiles()}
    assert listed["good"] == "fine"
    assert listed["broken"] == "(invalid YAML)"


# --------------------------------------------------------------------------- not a profile


def test_shipped_and_test_data_profiles_still_load(shipped: None) -> None:
    files = sorted(REPO_PROFILES.glob("*.yaml")) + sorted(
        (REPO / "tests" / "data").glob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        assert validate_file(path).files[-1] == str(path)


SECRET = "hunter2-s3cr3t"


@pytest.mark.parametrize(
    "text",
    [f"root:x:0:0:root:/root:/bin/bash\nsvc:{SECRET}:1:1::/:/bin/sh\n",  # /etc/passwd
     f"{SECRET}\n", f"- {SECRET}\n", f"{SECRET}: [\n"],
)
def test_a_file_that_is_not_a_profile_is_named_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(text)
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    err = error_of("../../etc/passwd")
    assert err.file == "../../etc/passwd" and err.line in (1, 2)
    assert SECRET not in str(err) and "root:x" not in str(err)
    # Reached through extends, the same holds and the parent file is named.
    write(tmp_path, "child.yaml", "extends: etc/passwd\n")
    err = error_of(tmp_path / "child.yaml")
    assert err.file == str(tmp_path / "etc" / "passwd") and SECRET not in str(err)


def test_non_mapping_says_why_it_is_not_a_profile(pdir: Path) -> None:
    write(pdir, "passwd.yaml", f"root:x:0:0:root:/root:/bin/bash\nsvc:{SECRET}:1:1\n")
    err = error_of("passwd")
    assert err.message.startswith("not a profile: its YAML is a string, a profile is a mapping")
    assert "sysctl" in err.message and SECRET not in err.message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        # docker-compose.yml with empty sections: nulls used to be stripped to nothing.
        (f"version: '3'\nservices:\nvolumes:\nx-secret: {SECRET}\n", 1,
         "not a profile: none of its top-level keys ('version', 'services', 'volumes', "
         "'x-secret') is a profile key"),
        # An Ansible vars file whose values are all unset.
        ("db_password:\napi_token:\n", 1, "not a profile: none of its top-level keys "
         "('db_password', 'api_token')"),
        # A profile with a stray key: named, not called a non-profile.
        ("sysctl: {net.core.somaxconn: 1}\nsysctls:\n", 2, "unknown top-level key 'sysctls'"),
        ("a: 1\nb: 2\nc: 3\nd: 4\ne: 5\nf: 6\nsysctl: {}\n", 1,
         "unknown top-level keys 'a', 'b', 'c', 'd', 'e' and 1 more"),
    ],
)
def test_mapping_with_unknown_top_level_keys_is_an_error(
    pdir: Path, text: str, line: int, words: str
) -> None:
    path = write(pdir, "other.yml", text)
    err = error_of(path)
    assert (err.file, err.line, err.path) == (str(path), line, None)
    assert words in err.message and "a profile has only description, extends" in err.message
    assert SECRET not in str(err)


def test_profile_with_only_known_keys_still_loads(pdir: Path) -> None:
    # Every key is a profile key, so the file is a profile even if it sets nothing.
    write(pdir, "d.yaml", "description: placeholder\n")
    write(pdir, "s.yaml", "sysctl:\n")
    assert load_profile("d").data == {"description": "placeholder"}
    assert load_profile("s").data == {}


def test_list_profiles_never_shows_a_non_profiles_description(pdir: Path) -> None:
    write(pdir, "compose.yaml", f"description: {SECRET}\nservices: {{}}\n")
    listed = {name: desc for name, _, desc in list_profiles()}
    assert listed["compose"] == "(not a profile)"


# --------------------------------------------------------------------------- integers


@pytest.mark.parametrize(
    ("text", "line", "path", "got"),
    [
        ("sysctl:\n  net.core.somaxconn: 8192.0\n", 2, 'sysctl."net.core.somaxconn"', "8192"),
        ("sysctl:\n  net.ipv4.tcp_syncookies: 1.5\n", 2, 'sysctl."net.ipv4.tcp_syncookies"',
         ""),
        ("syn_flood:\n  somaxconn: 8192.0\n", 2, "syn_flood.somaxconn", "8192"),
        ("syn_flood:\n  syncookies: 1.0\n", 2, "syn_flood.syncookies", "1"),
        ("syn_flood:\n  synack_retries: 3.0\n", 2, "syn_flood.synack_retries", "3"),
        ("conntrack:\n  max: 262144.0\n", 2, "conntrack.max", "262144"),
        ("conntrack:\n  max: 262144\n  buckets: 65536.0\n", 3, "conntrack.buckets", "65536"),
        ("conntrack:\n  max: auto\n  auto: {per_core: 32768.0}\n", 3,
         "conntrack.auto.per_core", "32768"),
        ("conntrack:\n  timeouts:\n    udp: 30.0\n", 3, "conntrack.timeouts.udp", "30"),
        ("nic:\n  rps_sock_flow_entries: 32768.0\n", 2, "nic.rps_sock_flow_entries", "32768"),
        ("nic:\n  interfaces:\n    - match: {name: eth0}\n      rings: {rx: 512.0}\n", 4,
         "nic.interfaces[0].rings.rx", "512"),
        ("nic:\n  interfaces:\n    - match: {name: eth0}\n      channels: {combined: 4.0}\n",
         4, "nic.interfaces[0].channels.combined", "4"),
        ("nic:\n  interfaces:\n    - match: {name: eth0}\n      coalesce: {rx-usecs: 10.0}\n",
         4, "nic.interfaces[0].coalesce.rx-usecs", "10"),
        ("nic:\n  interfaces:\n    - match: {name: eth0}\n      mtu: 1500.0\n", 4,
         "nic.interfaces[0].mtu", "1500"),
        ("nic:\n  interfaces:\n    - match: {name: eth0}\n      rps: {cpus: 1.0, flow_cnt: 2}\n",
         4, "nic.interfaces[0].rps.cpus", "1"),
        ("irqbalance:\n  banned_cpus: 1.0\n", 2, "irqbalance.banned_cpus", "1"),
        ("firewall:\n  nodeports:\n    extra_ports: [{port: 10250.0}]\n", 3,
         "firewall.nodeports.extra_ports[0].port", "10250"),
    ],
)
def test_float_for_a_kernel_value_is_refused_at_validation(
    pdir: Path, text: str, line: int, path: str, got: str
) -> None:
    file = write(pdir, "f.yaml", text)
    err = error_of("f")
    assert str(err).startswith(f"{file}:{line}: {path}: "), str(err)
    assert "got number" in err.message
    if got:
        assert err.message.endswith(f"; write {got})") or err.message.endswith(f"; write {got}")


def test_integers_and_the_one_percentage_still_accepted(pdir: Path) -> None:
    write(pdir, "ok.yaml", """
        conntrack: {max: auto, auto: {max_memory_percent: 2.5}}
        sysctl: {net.core.somaxconn: 8192, net.ipv4.tcp_rmem: "4096 131072 6291456"}
        syn_flood: {max_syn_backlog: "<=4096"}
    """)
    data = load_profile("ok").data
    assert data["conntrack"]["auto"]["max_memory_percent"] == 2.5
    assert type(data["sysctl"]["net.core.somaxconn"]) is int
