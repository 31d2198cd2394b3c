"""NIC knobs without a node: ethtool parsers on recorded output (json and text), the
interface fact snippet's parser, interface selection, CPU masks, max/auto resolution,
error rows, the overlay MTU arithmetic, and the on-node readers checked against the
parsers (a stand-in `ethtool` prints the same recorded text to both)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from netfix import engine, ethtool, ifaces
from netfix.errors import InputError
from netfix.facts import Facts
from netfix.ifaces import ERROR, INFO, MANAGEMENT, WARNING, Link, Net
from netfix.knobs import Context, mtu, nic, nicpersist, rps
from netfix.knobs import link as link_knob
from netfix.plan import DISRUPTIVE, NOT_SETTABLE, OK, SKIP, UPDATE, HostPlan
from netfix.profile import validate_file

DATA = Path(__file__).parent.parent / "data"
ET = DATA / "ethtool"
CTX = Context("test")


def out(name: str, sub: str, rc: int = 0) -> ethtool.Output:
    path = ET / name
    return ethtool.Output(sub, "json" if path.suffix == ".json" else "text", rc,
                          path.read_text())


def facts_from(recording: str, **kw) -> Facts:
    return Facts(host="n", cpus=2, tools={"ethtool": True},
                 scripts={ifaces.SCRIPT: (DATA / recording).read_text()}, **kw)


def by_target(changes):
    return {c.target: c for c in changes}


def block(match: dict, **settings) -> dict:
    return {"match": match, **settings}


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize("name", ["veth-eth1-k.json", "veth-eth1-k.txt"])
def test_features_json_and_text_agree(name):
    f = ethtool.features(out(name, "k"))
    assert f["generic-receive-offload"] == ethtool.Feature(active=False, fixed=False)
    assert f["large-receive-offload"] == ethtool.Feature(active=False, fixed=True)
    assert f["tx-udp_tnl-segmentation"].active  # names with underscores
    assert f["tx-checksumming"] == ethtool.Feature(active=True, fixed=False)  # json: null


def test_features_json_and_text_are_the_same_on_both_recordings():
    for dev in ("veth-eth1", "host-virtio_net-eth0"):
        assert ethtool.features(out(f"{dev}-k.json", "k")) == \
            ethtool.features(out(f"{dev}-k.txt", "k"))


def test_channel_and_ring_limits_text_and_json():
    veth = ethtool.limits(out("veth-eth1-l.txt", "l"), ethtool.CHANNEL_KEYS)
    assert veth.maximum == {"rx": 2, "tx": 2, "other": 0, "combined": 0}
    assert veth.current == {"rx": 1, "tx": 1, "other": None, "combined": None}
    virtio = ethtool.limits(out("host-virtio_net-eth0-g.txt", "g"), ethtool.RING_KEYS)
    assert virtio.maximum == {"rx": 256, "rx-mini": 0, "rx-jumbo": 0, "tx": 256}
    assert virtio.current["rx"] == 256
    newer = ethtool.limits(out("newer-json-g.json", "g"), ethtool.RING_KEYS)
    assert newer.maximum == {"rx": 4096, "rx-mini": 0, "rx-jumbo": 0, "tx": 4096}
    assert newer.current == {"rx": 256, "rx-mini": None, "rx-jumbo": None, "tx": 256}
    ch = ethtool.limits(out("newer-json-l.json", "l"), ethtool.CHANNEL_KEYS)
    assert ch.maximum["combined"] == 4 and ch.current["combined"] == 2 and ch.maximum["rx"] == 0


def test_coalesce_text_and_both_json_generations():
    text = ethtool.coalesce(out("host-virtio_net-eth0-c.txt", "c"))
    assert text["adaptive-rx"] == "off" and text["adaptive-tx"] is None  # "TX: n/a"
    assert text["rx-usecs"] == "0" and text["rx-usecs-irq"] is None
    new = ethtool.coalesce(out("newer-json-c.json", "c"))
    old = ethtool.coalesce(out("newer-json-c-dup-keys.json", "c"))
    # the old output repeats "rx"/"tx" for the CQE mode: the first pair is adaptive
    assert old["adaptive-rx"] == "off" and new["adaptive-rx"] == "on"
    assert old["rx-usecs"] == new["rx-usecs"] == "33"


def test_unsupported_and_failed_outputs():
    rings = out("veth-eth1-g.txt", "g", rc=1)
    assert rings.unsupported and rings.error == "netlink error: Operation not supported"
    other = ethtool.Output("g", "text", 75, "netlink error: No such device")
    assert not other.unsupported and other.error == "netlink error: No such device"
    assert ethtool.Output("k", "json", 0, "[]").error is None


# --------------------------------------------------------------------------- facts


def test_snippet_parse_veth_node():
    net = ifaces.parse((DATA / "ifaces-veth-node.txt").read_text())
    assert net.cpus == [0, 1]
    assert net.default_devs == ["eth0"]
    assert net.mgmt == {"eth0"}  # SSH_CONNECTION's server address lives there
    assert {link.name for link in net.candidates} == {"eth0", "eth0p", "eth1", "eth1p"}
    eth1 = net.links["eth1"]
    assert eth1.driver == "veth" and eth1.mtu == 1500 and eth1.max_mtu == 65535
    assert eth1.ethtool["k"].mode == "json" and eth1.ethtool["l"].mode == "text"
    assert eth1.ethtool["g"].unsupported
    assert eth1.queues == ["rx-0", "tx-0"] and eth1.qvalues["rx-0/rps_cpus"] == "0"
    vx = net.links["vxlan.calico"]
    assert vx.kind == "vxlan" and vx.mtu == 1500 and not vx.candidate
    assert net.links["eth0"].addrs[0] == ("inet", "10.99.0.11")


def test_snippet_parse_virtio_host_without_ssh():
    net = ifaces.parse((DATA / "ifaces-virtio-host.txt").read_text())
    assert net.mgmt == set() and net.ssh == ""
    assert [link.name for link in net.candidates] == ["eth0"]
    assert net.links["eth0"].driver == "virtio_net"


def test_snippet_runs_ethtool_only_for_what_blocks_can_match():
    s = ifaces.needs({"interfaces": [block({"name": ["eth*", "ens[0-9]"]}, mtu=1400)]})
    script = s.scripts[ifaces.SCRIPT]
    # The blocks' needs are shell variables at the snippet's top (netfix/sh/ifaces.sh)
    params = script.splitlines()[:6]
    assert "NF_GLOBS='ens[0-9] eth*'" in params
    assert "NF_SUBS=''" in params  # mtu only: no ethtool sub-command
    assert "NF_QUEUES=0" in params and "NF_BYDRIVER=0" in params
    s = ifaces.needs({"interfaces": [block({"driver": "veth"}, rps={"cpus": "all"},
                                           rings={"rx": 1})]})
    params = s.scripts[ifaces.SCRIPT].splitlines()[:6]
    assert "NF_DRIVERS=veth" in params and "NF_SUBS=g" in params
    assert "NF_QUEUES=1" in params and "NF_BYDRIVER=1" in params


# --------------------------------------------------------------------------- selection


def net_of(*links: Link, default=("eth0",)) -> Net:
    for link in links:
        link.candidate = True
    return Net({link.name: link for link in links}, [0, 1, 2, 3], list(default))


NET = net_of(Link("eth0", driver="virtio_net"), Link("eth1", driver="veth"),
             Link("eth2", driver="veth"), Link("ens3", driver="e1000e"))


def test_select_globs_driver_default_route_excludes_and_later_wins():
    section = {"interfaces": [
        block({"name": "eth*", "exclude": ["eth0"]}, offloads={"gro": True, "lro": False},
              mtu=1400),
        block({"driver": "veth", "exclude": ["eth2"]}, offloads={"gro": False}),
        block({"default_route": True}, mtu=1500),
        block({"name": ["ens*"], "driver": "e1000e"}, rings={"rx": "max"}),
        block({"name": "bond*"}, mtu=9000),
    ]}
    sel = ifaces.select(section, NET)
    assert sel.wants == {
        "eth0": {"mtu": 1500},
        "eth1": {"offloads": {"gro": False, "lro": False}, "mtu": 1400},  # block 2 wins gro
        "eth2": {"offloads": {"gro": True, "lro": False}, "mtu": 1400},
        "ens3": {"rings": {"rx": "max"}},
    }
    rows = {c.target: c for c in sel.rows}
    assert rows["nic.interfaces[0]"].current == "eth1, eth2"
    assert INFO in rows["nic.interfaces[0]"].flags
    assert rows["nic.interfaces[2]"].current == "eth0"
    nothing = rows["nic.interfaces[4]"]
    assert nothing.action == SKIP and WARNING in nothing.flags
    assert "matched no interface" in nothing.notes[0]


def test_no_match_is_a_warning_row_not_an_error():
    f = facts_from("ifaces-veth-node.txt")
    changes = nic.diff({"interfaces": [block({"name": "nosuch*"}, offloads={"gro": True})]},
                       f, CTX)
    assert [(c.target, c.action, c.flags) for c in changes] == \
        [("nic.interfaces[0]", SKIP, [WARNING])]


# --------------------------------------------------------------------------- masks


def test_masks_normalised_both_ways():
    assert ifaces.norm_mask("00000000,00000003") == "3"
    assert ifaces.norm_mask("0") == ifaces.norm_mask("") == ifaces.norm_mask(None) == "0"
    assert ifaces.norm_mask("00000001,00000000") == "1,00000000"
    assert ifaces.mask([0, 1]) == "3"
    assert ifaces.mask([32]) == "1,00000000"
    assert ifaces.mask(range(64)) == "ffffffff,ffffffff"
    assert ifaces.mask([]) == "0"
    assert ifaces.cpulist("0-3,6") == [0, 1, 2, 3, 6]


def test_spread():
    cpus = [0, 1, 2, 3]
    assert [ifaces.spread(q, 2, cpus) for q in range(2)] == [[0, 2], [1, 3]]
    assert [ifaces.spread(q, 8, cpus) for q in range(5)] == [[0], [1], [2], [3], [0]]
    assert ifaces.spread(0, 1, cpus) == cpus


# --------------------------------------------------------------------------- nic knob


def test_veth_channels_offloads_and_unsupported_rings_coalesce():
    f = facts_from("ifaces-veth-node.txt")
    section = {"interfaces": [block({"name": "eth1"}, channels={"rx": "auto", "tx": 2,
                                                                "combined": 2},
                                    offloads={"gro": True, "lro": True, "tso": True},
                                    rings={"rx": "max"}, coalesce={"rx-usecs": 50})]}
    ch = by_target(nic.diff(section, f, CTX))
    chan = ch["eth1 channels"]
    assert (chan.current, chan.desired, chan.action) == ("rx=1 tx=1", "rx=2 tx=2", UPDATE)
    assert DISRUPTIVE in chan.flags and MANAGEMENT not in chan.flags
    assert chan.ops[0].kind == "cmd" and chan.ops[0].path == "nic:eth1:channels"
    assert ch["eth1 channels combined"].action == SKIP
    assert "not supported by driver veth" in ch["eth1 channels combined"].notes[0]
    off = ch["eth1 offloads"]
    assert (off.current, off.desired) == ("gro=off tso=on", "gro=on tso=on")
    assert DISRUPTIVE not in off.flags
    assert ch["eth1 offload lro"].notes == ["lro is fixed off by driver veth"]
    for group in ("rings", "coalesce"):
        row = ch[f"eth1 {group}"]
        assert row.action == SKIP and NOT_SETTABLE in row.flags and not row.ops
        assert row.notes == [f"{group}: not supported by driver veth"]


def test_ring_above_maximum_is_an_error_row_naming_it_and_the_rest_goes_on():
    f = facts_from("ifaces-virtio-host.txt")
    section = {"interfaces": [block({"default_route": True},
                                    rings={"rx": 4096, "tx": "max"},
                                    channels={"combined": "auto"})]}
    ch = by_target(nic.diff(section, f, CTX))
    err = ch["eth0 rings rx"]
    assert err.action == SKIP and ERROR in err.flags and not err.ops
    assert "4096 is above the hardware maximum 256 of eth0 (virtio_net)" in err.notes[0]
    assert ch["eth0 rings"].desired == "tx=256"  # max resolved; rx left out
    # auto = min(CPUs, hardware maximum): 2 CPUs, maximum 1
    assert ch["eth0 channels"].desired == "combined=1" and ch["eth0 channels"].action == OK


def test_no_ethtool_on_the_node_is_a_row():
    f = facts_from("ifaces-veth-node.txt")
    f.tools["ethtool"] = False
    ch = by_target(nic.diff({"interfaces": [block({"name": "eth1"}, offloads={"gro": 1})]},
                            f, CTX))
    assert ch["eth1 offloads"].action == SKIP
    assert "ethtool is not installed" in ch["eth1 offloads"].notes[0]


# --------------------------------------------------------------------------- rps knob


def test_rps_xps_masks_flow_cnt_and_sock_entries():
    f = facts_from("ifaces-veth-node.txt")
    section = {"interfaces": [block({"name": "eth1"}, rps={"cpus": "all", "flow_cnt": "auto"},
                                    xps={"cpus": "1"})],
               "rps_sock_flow_entries": 30000}
    ch = by_target(rps.diff(section, f, CTX))
    assert (ch["eth1 rx-0 rps_cpus"].current, ch["eth1 rx-0 rps_cpus"].desired) == ("0", "3")
    assert ch["eth1 rx-0 rps_flow_cnt"].desired == "32768"  # 30000 -> 32768, / 1 queue
    assert ch["eth1 tx-0 xps_cpus"].desired == "2"
    sock = ch[rps.SOCK]  # not in a network namespace: absent there
    assert sock.desired == "32768" and sock.action == SKIP and NOT_SETTABLE in sock.flags
    assert "power of two" in " ".join(sock.notes)


def test_rps_covers_queues_a_channel_change_adds():
    f = facts_from("ifaces-veth-node.txt")
    section = {"interfaces": [block({"name": "eth1"}, channels={"rx": 2, "tx": 2},
                                    rps={"cpus": "auto"}, xps={"cpus": "auto"})]}
    ch = by_target(rps.diff(section, f, CTX))
    # 2 rx queues on 2 CPUs: the hardware already spreads, RPS auto stays off
    assert ch["eth1 rx-0 rps_cpus"].desired == ch["eth1 rx-1 rps_cpus"].desired == "0"
    assert ch["eth1 tx-0 xps_cpus"].desired == "1" and ch["eth1 tx-1 xps_cpus"].desired == "2"
    assert "appears with this plan's channel change" in ch["eth1 tx-1 xps_cpus"].notes[0]
    assert ch["eth1 tx-1 xps_cpus"].current == "0"  # a queue that does not exist reads 0


def test_cpu_not_online_is_an_error_row():
    f = facts_from("ifaces-veth-node.txt")
    ch = by_target(rps.diff({"interfaces": [block({"name": "eth1"}, rps={"cpus": "0-5"})]},
                            f, CTX))
    row = ch["eth1 rx-0 rps_cpus"]
    assert row.action == SKIP and ERROR in row.flags and "CPU 2,3,4,5" in row.notes[0]


# --------------------------------------------------------------------------- mtu knob


def test_mtu_on_the_ssh_interface_is_flagged_and_refused():
    f = facts_from("ifaces-veth-node.txt")
    ch = by_target(link_knob.diff({"interfaces": [block({"name": ["eth0", "eth1"]}, mtu=1400)]},
                             f, CTX))
    assert set(ch["eth0 mtu"].flags) == {DISRUPTIVE, MANAGEMENT}
    assert "10.99.0.11" in ch["eth0 mtu"].notes[0]
    assert ch["eth1 mtu"].flags == [DISRUPTIVE]
    hp = HostPlan("n", "p", list(ch.values()))
    assert engine.cuts_off_ssh(hp) == ["mtu eth0 mtu: 1500 -> 1400"]


def test_mtu_outside_driver_range_is_an_error_row():
    f = facts_from("ifaces-veth-node.txt")
    ch = by_target(link_knob.diff({"interfaces": [block({"name": "eth1"}, mtu=65535)]}, f, CTX))
    assert ch["eth1 mtu"].action == UPDATE  # the top of veth's range is fine
    assert ch["eth1 mtu"].flags == [DISRUPTIVE]
    f.scripts[ifaces.SCRIPT] = f.scripts[ifaces.SCRIPT].replace('"max_mtu":65535',
                                                                '"max_mtu":9000')
    ch = by_target(link_knob.diff({"interfaces": [block({"name": "eth1"}, mtu=9216)]}, f, CTX))
    assert ch["eth1 mtu"].action == SKIP and ERROR in ch["eth1 mtu"].flags
    assert "outside the MTU range 68-9000" in ch["eth1 mtu"].notes[0]


def overlay(kind: str, over: int, under: int, info: dict | None = None,
            addrs=(("inet", "10.0.0.1"),), planned=None):
    net = Net({"tun": Link("tun", over, kind=kind, info=info or {"link": "eth0"}),
               "eth0": Link("eth0", under, addrs=list(addrs))}, [0], ["eth0"])
    rows = mtu.overlay_rows({"overlay": {"devices": ["tun"]}}, net, planned or {})
    return next(r for r in rows if r.target == "overlay tun")


def test_overlay_arithmetic():
    assert overlay("vxlan", 1500, 1500).action == SKIP
    assert mtu.OVERLAY_MTU in overlay("vxlan", 1500, 1500).flags
    assert "1500 - 50 (VXLAN over IPv4) = 1450" in overlay("vxlan", 1500, 1500).notes[0]
    assert overlay("vxlan", 1450, 1500).action == OK
    assert overlay("vxlan", 1450, 1500, {"local6": "fd00::1"}).desired == "<= 1430"
    assert overlay("ipip", 1480, 1500).action == OK
    assert overlay("ipip", 1481, 1500).action == SKIP
    assert overlay("wireguard", 1440, 1500).desired == "<= 1440"
    assert overlay("wireguard", 1440, 1500, {}, addrs=[("inet6", "2001:db8::1")]).desired == \
        "<= 1420"
    assert overlay("geneve", 1450, 1500).action == OK
    # the planned underlay MTU counts, not the current one
    assert overlay("vxlan", 1450, 1500, planned={"eth0": 1400}).action == SKIP
    assert "not one netfix knows" in overlay("gre", 1500, 1500).notes[0]


def test_overlay_found_on_recorded_node_via_default_route():
    f = facts_from("ifaces-veth-node.txt")
    rows = by_target(mtu.diff({"overlay": {"devices": ["flannel.1"]}}, f, CTX))
    vx = rows["overlay vxlan.calico"]
    assert vx.action == SKIP and vx.desired == "<= 1450" and vx.current == "1500"
    assert rows["overlay flannel.1"].notes == ["not on this node"]


# --------------------------------------------------------------------------- persistence


def test_boot_script_enables_unit_and_reapplies_only_settable(tmp_path):
    f = facts_from("ifaces-veth-node.txt")
    section = {"interfaces": [block({"name": "eth1"}, offloads={"gro": True},
                                    rings={"rx": 512}, mtu=1400, rps={"cpus": "all"})]}
    ch = by_target(nicpersist.diff(section, f, CTX))
    script = base64.b64decode(ch[nicpersist.SCRIPT].ops[0].new).decode()
    assert script.startswith("#!/bin/sh\n# Managed by netfix")
    assert "s1 gro=on || fail 'eth1 offloads'" in script
    assert "s2 1400 || fail 'eth1 mtu'" in script
    assert "fail 'eth1 rx-0 rps_cpus'" in script
    assert "ethtool -G" not in script  # rings are not supported by veth: nothing to persist
    for path in (nicpersist.UNIT, nicpersist.DROPIN, nicpersist.UDEV):
        assert ch[path].action == UPDATE and ch[path].ops[0].kind == "file"
    unit = base64.b64decode(ch[nicpersist.UNIT].ops[0].new).decode()
    assert "Before=network-pre.target" in unit and "ExecStart=/bin/sh /etc/netfix/nic.sh" in unit
    dropin = base64.b64decode(ch[nicpersist.DROPIN].ops[0].new).decode()
    assert dropin.endswith("[Unit]\nWants=netfix-nic.service\n")
    # run it for an interface it does not manage: nothing to do, success
    path = tmp_path / "nic.sh"
    path.write_text(script)
    r = subprocess.run(["sh", str(path), "nosuchif0"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""


def test_nothing_settable_means_no_files():
    f = facts_from("ifaces-veth-node.txt")
    ch = by_target(nicpersist.diff({"interfaces": [block({"name": "eth1"},
                                                         rings={"rx": 512})]}, f, CTX))
    assert [(c.action, c.desired) for c in ch.values()] == [(OK, "absent")] * 4


# --------------------------------------------------------------------------- readers


@pytest.fixture
def fake_ethtool(tmp_path):
    """An `ethtool` that prints a recorded text file, so the on-node readers can be held
    against the parsers on the same bytes."""
    def make(recording: str) -> dict:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        tool = bin_dir / "ethtool"
        tool.write_text(f"#!/bin/sh\ncat {ET / recording}\n")
        tool.chmod(0o755)
        return {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return make


@pytest.mark.parametrize("group,recording,keys", [
    ("channels", "veth-eth1-l.txt", ["rx", "tx"]),
    ("rings", "host-virtio_net-eth0-g.txt", ["rx", "tx"]),
    ("coalesce", "host-virtio_net-eth0-c.txt", ["adaptive-rx", "rx-usecs", "tx-frames"]),
    ("offloads", "veth-eth1-k.txt", ["gro", "tso", "rx-udp-gro-forwarding"]),
])
def test_readers_print_what_the_parsers_compute(fake_ethtool, group, recording, keys):
    env = fake_ethtool(recording)
    shown = subprocess.run(["sh", "-c", ethtool.read_sh(group, "eth0", keys)], env=env,
                           capture_output=True, text=True).stdout.strip()
    o = out(recording, ethtool.SHOW[group])
    if group in ("channels", "rings"):
        cur = ethtool.limits(o, ethtool.CHANNEL_KEYS + ethtool.RING_KEYS).current
        expect = {k: str(cur[k]) for k in keys}
    elif group == "coalesce":
        expect = {k: ethtool.coalesce(o)[k] for k in keys}
    else:
        feats = ethtool.features(o)
        expect = {k: "on" if feats[ethtool.FEATURE_ALIASES.get(k, k)].active else "off"
                  for k in keys}
    assert shown == ethtool.state(expect)


def test_setter_passes_only_keys_that_differ(tmp_path, fake_ethtool):
    env = fake_ethtool("veth-eth1-l.txt")  # rx=1 tx=1
    log = tmp_path / "calls"
    wrapper = tmp_path / "bin" / "ethtool"
    wrapper.write_text(f'#!/bin/sh\ncase "$1" in -L) echo "$@" >> {log};; '
                       f'*) cat {ET / "veth-eth1-l.txt"};; esac\n')
    set_sh = ethtool.set_sh("channels", "eth1", ["rx", "tx"])
    for value in ("rx=1 tx=1", "rx=2 tx=1"):
        subprocess.run(["sh", "-c", set_sh, "sh", value], env=env, check=True)
    assert log.read_text() == "-L eth1 rx 2\n"


# --------------------------------------------------------------------------- schema


def test_malformed_cpu_list_is_a_schema_error_naming_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nic:\n  interfaces:\n    - match: {name: eth1}\n"
                   "      rps: {cpus: '0-3,'}\n")
    with pytest.raises(InputError) as e:
        validate_file(bad)
    assert "nic.interfaces[0].rps.cpus" in str(e.value) and "CPU list" in str(e.value)
    bad.write_text("irqbalance: {banned_cpus: 'x1'}\n")
    with pytest.raises(InputError) as e:
        validate_file(bad)
    assert "irqbalance.banned_cpus" in str(e.value)


def test_interface_names_and_offload_names_that_could_reach_a_shell_are_refused(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    bad = tmp_path / "bad.yaml"
    for text, field in [("name: 'eth0;reboot'", "match.name"),
                        ("name: eth0, exclude: ['$(id)']", "match.exclude[0]")]:
        bad.write_text(f"nic:\n  interfaces:\n    - match: {{{text}}}\n")
        with pytest.raises(InputError) as e:
            validate_file(bad)
        assert f"nic.interfaces[0].{field}" in str(e.value)
    bad.write_text("nic:\n  interfaces:\n    - match: {name: eth0}\n"
                   "      offloads: {'gro on; x': on}\n")
    with pytest.raises(InputError, match="not an offload name"):
        validate_file(bad)


def test_example_profile_validates():
    prof = validate_file(Path(__file__).parents[2] / "netfix" / "profiles" / "nic-example.yaml")
    assert prof.data["nic"]["interfaces"]


def test_ssh_connection_found_under_sudo():
    """sudo drops SSH_CONNECTION; the snippet takes it from the nearest ancestor."""
    from netfix.facts import build_script, parse

    script = build_script(ifaces.needs({"interfaces": [block({"name": "nomatch"})]}))
    p = subprocess.run(["sh", "-c", "env -u SSH_CONNECTION SUDO_USER=me sh -s"], input=script,
                       capture_output=True, text=True,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                            "SSH_CONNECTION": "192.0.2.9 5555 192.0.2.10 22"})
    assert ifaces.parse(parse("h", p.stdout).scripts[ifaces.SCRIPT]).ssh == \
        "192.0.2.9 5555 192.0.2.10 22"


def test_unparsable_ip_output_is_a_host_error_not_a_crash():
    from netfix.errors import NetfixError

    with pytest.raises(NetfixError, match="cannot parse `ip -j -d link`"):
        ifaces.parse('== link\nOption "-j" is unknown, try "ip -help".\n')
