"""Firewall and SYN-flood knobs without a node: ruleset generation (golden text), the
normalised-listing diff, the plan rows for each kind of node, and profile validation."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest

from netfix.errors import InputError
from netfix.facts import Facts, Value
from netfix.knobs import Context, firewall, synflood
from netfix.plan import NOT_SETTABLE, OK, SKIP, UPDATE
from netfix.profile import validate_file
from netfix.util import sysctl_path

CTX = Context("test")
DATA = Path(__file__).parent.parent / "data"

FULL = {"nodeports": {
    "range": "30000-32767",
    "allow": ["192.168.0.0/16", "10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"],
    "interfaces": {"include": ["eth*", "ens3"], "exclude": ["docker0"]},
    "extra_ports": [{"port": 10250}, {"port": 22, "proto": "tcp"}, {"port": 53, "proto": "udp"},
                    {"port": 22}],
    "log": {"rate": "10/second", "prefix": "np-drop: "},
}}

# `nft -s list table inet netfix` after normalisation, as the node's READ prints it.
LISTING_A = """table inet netfix {
set allow4 {
type ipv4_addr
flags interval
elements = { 10.0.0.0/8 }
}
chain prerouting {
type filter hook prerouting priority mangle; policy accept;
iifname "lo" return
goto guard
}
chain guard {
fib daddr type != local return
tcp dport 30000-32767 jump deny
}
chain deny {
ip saddr @allow4 return
drop
}
}"""
LISTING_B = LISTING_A.replace("{ 10.0.0.0/8 }", "{ 10.0.0.0/8, 192.168.0.0/16 }")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def probe_output(nft: str = "ok", systemd: bool = True, rendered: str | None = LISTING_B,
                 error: str = "") -> str:
    lines = {"none": ["NFT none"], "ok": ["NFT ok /usr/sbin/nft nftables v1.0.6"],
             "broken": ["NFT broken /usr/sbin/nft "]}[nft]
    lines.append(f"SYSTEMD {'yes' if systemd else 'no'}")
    if rendered is not None:
        lines.append(f"RENDER {b64(rendered)}")
    elif error:
        lines.append(f"RENDER-ERROR {b64(error)}")
    return "\n".join(lines) + "\n"


def facts(current: str | None, probe: str, files: dict | None = None) -> Facts:
    f = Facts(host="h")
    f.scripts[firewall.STATE_LABEL] = (current or "absent") + "\n"
    f.scripts[firewall.PROBE] = probe
    f.files.update({firewall.RULESET: None, firewall.UNIT: None, firewall.WANTS: None,
                    **(files or {})})
    return f


def by_target(changes):
    return {c.target: c for c in changes}


# ---------------------------------------------------------------------------- generation


def test_ruleset_golden_text():
    assert firewall.ruleset(firewall.config(FULL)) == \
        (DATA / "firewall_ruleset.nft").read_text()


def test_defaults_cover_the_nodeport_range_and_skip_pod_interfaces():
    s = firewall.config({})
    text = firewall.ruleset(s)
    assert (s.low, s.high, s.log) == (30000, 32767, False)
    assert "tcp dport 30000-32767 jump deny" in text and "udp dport 30000-32767" in text
    for name in ("lo", "cali*", "cilium*", "flannel*", "cni*", "veth*", "vxlan*", "tunl*",
                 "wireguard*", "kube-*"):
        assert f'iifname "{name}" return' in text
    assert "\t\tgoto guard\n" in text  # no include list: every other interface
    assert "log" not in text
    assert "elements" not in text  # empty allow-list: nobody from outside
    assert "priority -150" in text  # before kube-proxy's DNAT at -100


def test_lo_is_excluded_even_with_an_empty_exclude_list():
    text = firewall.ruleset(firewall.config({"nodeports": {"interfaces": {"exclude": []}}}))
    chain = text.split("chain prerouting {")[1].split("}")[0]
    assert chain.count("return") == 1 and 'iifname "lo" return' in chain


def test_allow_list_is_collapsed_and_split_by_family():
    s = firewall.config({"nodeports": {"allow": ["10.0.0.0/9", "10.128.0.0/9", "10.0.0.5",
                                                   "2001:db8::/33", "2001:db8:8000::/33"]}})
    assert s.allow4 == ["10.0.0.0/8"] and s.allow6 == ["2001:db8::/32"]


def test_persistence_files():
    s = firewall.config(FULL)
    nft = firewall.ruleset_file(s, CTX).decode()
    # the boot file uses the same atomic add/delete/define idiom as the live load
    assert "table inet netfix\ndelete table inet netfix\ntable inet netfix {" in nft
    assert "flush" not in nft.replace("no flush ruleset", "")
    unit = firewall.unit_file("/usr/sbin/nft", CTX).decode()
    assert "ExecStart=/usr/sbin/nft -f /etc/netfix/firewall.nft\n" in unit
    assert "Before=network-pre.target" in unit and "After=nftables.service" in unit
    assert "Wants=netfix-firewall.service" in firewall.wants_file(CTX).decode()


def test_set_snippet_loads_atomically_and_deletes_only_its_table():
    assert "table inet netfix\\ndelete table inet netfix\\n" in firewall.SET
    assert firewall.SET.count("nft -f") == 1
    assert "nft delete table inet netfix" in firewall.SET
    assert "flush" not in firewall.SET + firewall.READ


# ---------------------------------------------------------------------------- diff


def test_normalised_listing_diff_shows_only_changed_lines():
    assert firewall.diff_lines(b64(LISTING_A), b64(LISTING_B)) == [
        "-elements = { 10.0.0.0/8 }", "+elements = { 10.0.0.0/8, 192.168.0.0/16 }"]
    assert firewall.diff_lines(b64(LISTING_A), b64(LISTING_A)) == []
    assert firewall.diff_lines("absent", b64(LISTING_A))[0] == "+table inet netfix {"
    assert firewall.describe_state("absent") == "absent"
    assert firewall.describe_state(b64(LISTING_A)).startswith("3 chains, 6 rules, sha256:")


def test_new_table_is_one_cmd_step_plus_three_files():
    ch = by_target(firewall.diff(FULL, facts(None, probe_output()), CTX))
    table = ch[firewall.TABLE]
    assert table.action == UPDATE and table.current == "absent"
    (op,) = table.ops
    assert (op.kind, op.path, op.old, op.new) == ("cmd", firewall.STATE_LABEL, "absent",
                                                  b64(LISTING_B))
    assert (op.read, op.set) == (firewall.READ, firewall.SET)
    assert "+chain guard {" in " ".join(table.notes)
    for path in (firewall.RULESET, firewall.UNIT, firewall.WANTS):
        assert ch[path].action == UPDATE and ch[path].ops[0].old is None
    unit = base64.b64decode(ch[firewall.UNIT].ops[0].new).decode()
    assert "ExecStart=/usr/sbin/nft -f" in unit  # the node's own nft path


def test_table_in_sync_is_ok_and_a_changed_table_is_diffed():
    s = firewall.config(FULL)
    files = {firewall.RULESET: firewall.ruleset_file(s, CTX),
             firewall.UNIT: firewall.unit_file("/usr/sbin/nft", CTX),
             firewall.WANTS: firewall.wants_file(CTX)}
    same = firewall.diff(FULL, facts(b64(LISTING_B), probe_output(), files), CTX)
    assert [c.action for c in same] == [OK] * 4 and not any(c.ops for c in same)
    moved = by_target(firewall.diff(FULL, facts(b64(LISTING_A), probe_output(), files), CTX))
    table = moved[firewall.TABLE]
    assert table.action == UPDATE and table.ops[0].old == b64(LISTING_A)
    assert "+elements = { 10.0.0.0/8, 192.168.0.0/16 }" in table.notes[-1]


def test_disabled_removes_table_and_files():
    files = {firewall.RULESET: b"x", firewall.UNIT: b"y", firewall.WANTS: b"z"}
    ch = by_target(firewall.diff({"enabled": False}, facts(b64(LISTING_A),
                                                           probe_output(rendered=None), files),
                                 CTX))
    assert ch[firewall.TABLE].ops[0].new == "absent"
    assert all(ch[p].ops[0].new is None for p in files)


@pytest.mark.parametrize("probe, words", [
    (probe_output(nft="none", rendered=None), "nft not installed"),
    (probe_output(nft="broken", rendered=None), "nft not usable"),
    (probe_output(rendered=None, error="Error: Could not process rule: No such file"),
     "refused the ruleset, nothing is applied: Error: Could not process rule"),
])
def test_node_without_working_nft_gets_one_skip_row(probe, words):
    changes = firewall.diff(FULL, facts(None, probe), CTX)
    assert len(changes) == 1
    (c,) = changes
    assert c.action == SKIP and NOT_SETTABLE in c.flags and not c.ops
    assert words in c.notes[0]


def test_no_systemd_keeps_the_table_live_and_says_it_is_not_persisted():
    ch = by_target(firewall.diff(FULL, facts(None, probe_output(systemd=False)), CTX))
    assert ch[firewall.TABLE].action == UPDATE
    assert ch[firewall.UNIT].action == SKIP and "not loaded at boot" in ch[firewall.UNIT].notes[0]
    assert firewall.WANTS not in ch


def test_probe_and_needs():
    n = firewall.needs(FULL, CTX)
    assert n.scripts[firewall.STATE_LABEL] == firewall.READ
    assert "unshare -n" in n.scripts[firewall.PROBE]  # rendered in a throwaway netns
    # A parameter of netfix/sh/firewall-probe.sh, assigned at the snippet's top
    embedded = n.scripts[firewall.PROBE].split("\n")[0].removeprefix("NF_RULESET=")
    assert base64.b64decode(embedded).decode() == firewall.ruleset(firewall.config(FULL))
    p = firewall.parse_probe(probe_output())
    assert (p.nft, p.nft_path, p.systemd, p.rendered) == ("ok", "/usr/sbin/nft", True,
                                                         b64(LISTING_B))


# ---------------------------------------------------------------------------- validation


def check(tmp_path, body: str) -> InputError | None:
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent(body))
    try:
        validate_file(f)
    except InputError as e:
        return e
    return None


@pytest.mark.parametrize("body, path, words", [
    ('firewall: {nodeports: {allow: ["10.0.0.0/33"]}}', "firewall.nodeports.allow[0]",
     "not a valid CIDR"),
    ('firewall: {nodeports: {allow: ["10.0.0.0/8", "10.0.0.1/8"]}}',
     "firewall.nodeports.allow[1]", "host bits set"),
    ('firewall: {nodeports: {allow: ["300.1.2.3"]}}', "firewall.nodeports.allow[0]",
     "not a valid CIDR"),
    ('firewall: {nodeports: {allow: ["10.0.0.0/8\\"; flush ruleset"]}}',
     "firewall.nodeports.allow[0]", "must be an IPv4 or IPv6 address"),
    ('firewall: {nodeports: {range: "32767-30000"}}', "firewall.nodeports.range",
     "not a port range"),
    ('firewall: {nodeports: {range: "0-100"}}', "firewall.nodeports.range", "not a port range"),
    ('firewall: {nodeports: {range: "30000"}}', "firewall.nodeports.range",
     "must be a port range"),
    ('firewall: {nodeports: {extra_ports: [{port: 70000}]}}',
     "firewall.nodeports.extra_ports[0].port", "70000"),
    ('firewall: {nodeports: {extra_ports: [{port: 22, proto: icmp}]}}',
     "firewall.nodeports.extra_ports[0].proto", "tcp or udp"),
    ('firewall: {nodeports: {interfaces: {include: ["eth0 drop"]}}}',
     "firewall.nodeports.interfaces.include[0]", "interface name"),
    ('firewall: {nodeports: {log: {prefix: "x\\" drop"}}}', "firewall.nodeports.log.prefix",
     "letters, digits"),
    ('firewall: {nodeports: {log: {rate: "fast"}}}', "firewall.nodeports.log.rate", "N/minute"),
    ("firewall: {nodeports: {allowed: []}}", "firewall.nodeports.allowed", "unknown field"),
    ("syn_flood: {syncookies: 3}", "syn_flood.syncookies", ""),
    ("syn_flood: {somaxconn: 'lots'}", "syn_flood.somaxconn", ">=N"),
])
def test_bad_input_names_the_field(tmp_path, body, path, words):
    err = check(tmp_path, f"description: t\n{body}\n")
    assert err is not None and err.path == path, err
    assert words in err.message and err.line == 2


@pytest.mark.parametrize("section", [
    {"nodeports": {"extra_ports": [{"port": 22, "proto": "tcp; flush ruleset"}]}},
    {"nodeports": {"extra_ports": [{"port": "22 } accept"}]}},
    {"nodeports": {"log": {"prefix": 'x" drop'}}},
    {"nodeports": {"interfaces": {"include": ["eth0\n"]}}},
    {"nodeports": {"allow": ["10.0.0.0/8 } accept"]}},
])
def test_library_callers_cannot_put_unchecked_strings_into_nft(section):
    with pytest.raises(ValueError):
        firewall.config(section)


def test_valid_firewall_profile_loads(tmp_path):
    assert check(tmp_path, """\
        firewall:
          nodeports:
            range: "30000-32767"
            allow: ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32", "203.0.113.7"]
            interfaces: {include: ["eth*"], exclude: []}
            extra_ports: [{port: 10250, proto: tcp}]
            log: {enabled: true, rate: "5/minute", prefix: "netfix-drop "}
        """) is None


# ---------------------------------------------------------------------------- syn_flood


def test_syn_flood_maps_to_sysctls_with_a_note_and_its_own_file():
    f = Facts(host="h")
    for key, value in (("net.ipv4.tcp_syncookies", "0"), ("net.ipv4.tcp_max_syn_backlog", "512"),
                       ("net.core.somaxconn", "16384"), ("net.ipv4.tcp_synack_retries", "5")):
        f.values[sysctl_path(key)] = Value(True, True, value)
    section = {"syncookies": 1, "max_syn_backlog": 8192, "somaxconn": ">=8192",
               "synack_retries": 3}
    ch = by_target(synflood.diff(section, f, CTX))
    assert ch["net.ipv4.tcp_syncookies"].ops[0].new == "1"
    assert ch["net.ipv4.tcp_max_syn_backlog"].ops[0].new == "8192"
    assert ch["net.core.somaxconn"].action == OK  # ">=" leaves a larger value alone
    for key, _ in synflood.KEYS.values():
        assert ch[key].notes[0].startswith("SYN flood:")
    conf = base64.b64decode(ch[synflood.PERSIST].ops[0].new).decode()
    assert "net.ipv4.tcp_synack_retries = 3\n" in conf and "# SYN flood: with 1" in conf
    assert synflood.needs(section, CTX).files >= {synflood.PERSIST}


def test_syn_flood_key_also_under_sysctl_is_refused(tmp_path):
    err = check(tmp_path, """\
        sysctl: {net/core/somaxconn: 4096}
        syn_flood: {somaxconn: 8192}
        """)
    assert err is not None and err.path == "syn_flood.somaxconn" and err.line == 2
    assert "net/core/somaxconn" in err.message and "one place" in err.message
    # nulled in a child profile: the key moves to syn_flood without a conflict
    parent = tmp_path / "parent.yaml"
    parent.write_text("sysctl: {net.core.somaxconn: 4096}\n")
    assert check(tmp_path, f"""\
        extends: {parent}
        sysctl: {{net.core.somaxconn: null}}
        syn_flood: {{somaxconn: 8192}}
        """) is None
