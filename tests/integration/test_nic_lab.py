"""NIC knobs end to end on netns lab nodes: channels, offloads, RPS/XPS/RFS and MTU on the
veth eth1 (plan, apply, live state read inside the node, second plan empty, the boot
script bringing settings back, rollback byte for byte); rings and coalescing reported as
not supported by veth; the overlay MTU check with a real vxlan device; the refusal of a
disruptive change on eth0, which carries netfix's SSH session; irqbalance without
systemd; bad input."""

from __future__ import annotations

import json
import textwrap

import pytest

pytestmark = pytest.mark.integration

ETC = ("/etc/netfix", "/etc/systemd/system", "/etc/udev/rules.d", "/etc/sysctl.d",
       "/etc/default")
Q = "/sys/class/net/eth1/queues"

PROFILE = """\
description: NIC knobs on the lab's veth eth1
nic:
  interfaces:
    - match: {name: "eth*", exclude: [eth0]}
      offloads: {gro: off}
    - match: {driver: veth, exclude: [eth0, eth1p]}
      channels: {rx: 2, tx: 2}
      offloads: {gro: on, rx-udp-gro-forwarding: on}
      rps: {cpus: all, flow_cnt: 2048}
      xps: {cpus: auto}
      mtu: 1400
      txqueuelen: 3000
      rings: {rx: 512, tx: max}
      coalesce: {adaptive-rx: on, rx-usecs: 50}
    - match: {name: "bond*"}
      mtu: 9000
  rps_sock_flow_entries: 32768
"""


def by_target(plan: dict, host: str) -> dict:
    hp = next(h for h in plan["hosts"] if h["host"] == host)
    assert hp["error"] is None, hp["error"]
    return {c["target"]: c for c in hp["changes"]}


def live(lab, node: str) -> dict[str, str]:
    """eth1 as the kernel reports it, read inside the node with ethtool, sysfs and ip."""
    out = lab.sh(node, "ethtool -l eth1 | sed -n '/Current/,$p' | tr -s '\\t' ' ' | tr '\\n' ';';"
                 " echo; ethtool -k eth1 | grep -E '^(generic-receive-offload|"
                 "rx-udp-gro-forwarding):' | tr '\\n' ';'; echo;"
                 " ip -o link show eth1 | grep -o 'mtu [0-9]*'; "
                 " ip -j link show eth1 | grep -o '\"txqlen\":[0-9]*'; "
                 f"cd {Q} && grep -H '' */rps_cpus */rps_flow_cnt */xps_cpus | tr '\\n' ' '")
    channels, offloads, mtu, txqlen, queues = out.splitlines()
    return {"channels": channels, "offloads": offloads, "mtu": mtu, "txqlen": txqlen,
            "queues": queues}


def etc(lab, node: str) -> dict[str, str]:
    files = lab.files(node, ETC)
    links = lab.sh(node, "find " + " ".join(ETC) + " -type l -printf '%p -> %l\\n' "
                   "2>/dev/null | sort")
    return {**files, "symlinks": links}


def test_plan_apply_boot_script_replan_rollback(lab, tmp_path):
    prof = tmp_path / "nic-lab.yaml"
    prof.write_text(PROFILE)
    before, before_etc = live(lab, "node1"), etc(lab, "node1")
    assert "RX: 1;TX: 1" in before["channels"]
    ch = by_target(lab.plan_json("--profile", str(prof), "--limit", "node1"), "node1")
    assert ch["nic.interfaces[1]"]["current"] == "eth1"
    assert ch["nic.interfaces[0]"]["current"] == "eth1, eth1p"
    assert ch["nic.interfaces[2]"]["action"] == "skip"
    assert "warning" in ch["nic.interfaces[2]"]["flags"]
    assert ch["eth1 channels"]["desired"] == "rx=2 tx=2"
    assert ch["eth1 channels"]["flags"] == ["disruptive"]
    assert ch["eth1 offloads"]["current"] == "gro=off rx-udp-gro-forwarding=off"
    assert ch["eth1 offloads"]["desired"] == "gro=on rx-udp-gro-forwarding=on"  # block 2 won
    assert ch["eth1p offloads"]["action"] == "ok"  # block 1 only: gro off, as it is
    assert ch["eth1 mtu"]["flags"] == ["disruptive"]
    txq = ch["eth1 txqueuelen"]  # a link attribute: one registry entry, not disruptive
    assert (txq["current"], txq["desired"], txq["flags"]) == ("1000", "3000", [])
    assert [op["path"] for op in txq["ops"]] == ["txqueuelen:eth1:txqueuelen"]
    assert ch["eth1 rx-1 rps_cpus"]["desired"] == "3"  # rx-1 comes with the channel change
    assert ch["eth1 tx-1 xps_cpus"]["desired"] == "2"
    for group in ("rings", "coalesce"):
        row = ch[f"eth1 {group}"]
        assert row["action"] == "skip" and row["ops"] == []
        assert row["notes"] == [f"{group}: not supported by driver veth"]
    sock = ch["net.core.rps_sock_flow_entries"]  # global: absent in a network namespace
    assert sock["action"] == "skip" and "not-settable" in sock["flags"]

    try:
        p = lab.netfix("apply", "--yes", "--profile", str(prof), "--limit", "node1")
        assert "applied" in p.stdout
        now = live(lab, "node1")
        assert "RX: 2;TX: 2" in now["channels"]
        assert now["offloads"] == "generic-receive-offload: on;rx-udp-gro-forwarding: on;"
        assert now["mtu"] == "mtu 1400"
        assert now["txqlen"] == '"txqlen":3000'
        journal = lab.sh("node1", "cat /var/lib/netfix/tx/*.json")
        assert '"txqueuelen:eth1:txqueuelen"' in journal  # a journaled step: rollback undoes it
        for q, value in (("rx-0/rps_cpus", "3"), ("rx-1/rps_cpus", "3"),
                         ("rx-0/rps_flow_cnt", "2048"), ("rx-1/rps_flow_cnt", "2048"),
                         ("tx-0/xps_cpus", "1"), ("tx-1/xps_cpus", "2")):
            assert f"{q}:{value} " in now["queues"], (q, now["queues"])
        assert lab.sh("node2", "cat /sys/class/net/eth1/mtu").strip() == "1500"  # only node1

        files = etc(lab, "node1")
        for path in ("/etc/netfix/nic.sh", "/etc/udev/rules.d/90-netfix-nic.rules",
                     "/etc/systemd/system/netfix-nic.service",
                     "/etc/systemd/system/sysinit.target.d/netfix-nic.conf"):
            assert path in files, path
        again = by_target(lab.plan_json("--profile", str(prof), "--limit", "node1"), "node1")
        assert [t for t, c in again.items() if c["action"] == "update"] == []
        assert lab.netfix("apply", "--yes", "--profile", str(prof),
                          "--limit", "node1").returncode == 0

        # A reboot or driver reset loses all of it; the boot script brings it back.
        lab.sh("node1", f"ethtool -K eth1 gro off rx-udp-gro-forwarding off && "
               f"ethtool -L eth1 rx 1 tx 1 && ip link set eth1 mtu 1500 txqueuelen 1000 && "
               f"echo 0 > {Q}/rx-0/rps_cpus && echo 0 > {Q}/rx-0/rps_flow_cnt")
        assert live(lab, "node1")["mtu"] == "mtu 1500"
        drift = json.loads(lab.netfix("drift", "--json", "--profile", str(prof), "--limit",
                                      "node1", check_rc=2).stdout)
        drifted = {i["target"] for h in drift["hosts"] for i in h["items"]}
        assert {"eth1 txqueuelen", "eth1 mtu"} <= drifted, drifted
        lab.sh("node1", "sh /etc/netfix/nic.sh eth1p")  # another interface: not touched
        assert live(lab, "node1")["mtu"] == "mtu 1500"
        lab.sh("node1", "sh /etc/netfix/nic.sh")
        assert live(lab, "node1") == now
    finally:
        lab.netfix("rollback", "--yes", "--limit", "node1")
    assert live(lab, "node1") == before
    assert etc(lab, "node1") == before_etc


def test_overlay_mtu_check_with_a_real_vxlan_device(lab, tmp_path):
    prof = tmp_path / "overlay.yaml"
    prof.write_text("nic:\n  overlay: {underlay: eth0}\n")
    try:
        # With a lower device the kernel sizes the vxlan itself: 1500 - 50.
        lab.sh("node2", "ip link add vxlan.calico type vxlan id 42 dstport 4789 dev eth0")
        row = by_target(lab.plan_json("--profile", str(prof), "--limit", "node2"),
                        "node2")["overlay vxlan.calico"]
        assert (row["current"], row["desired"], row["action"]) == ("1450", "<= 1450", "ok")
        assert row["notes"] == ["fits: eth0 MTU 1500 - 50 (VXLAN over IPv4) = 1450"]
        lab.sh("node2", "ip link del vxlan.calico && ip link add vxlan.calico type vxlan "
               "id 42 dstport 4789 local 10.251.0.12 && ip link set vxlan.calico mtu 1500")
        plan = lab.netfix("plan", "--profile", str(prof), "--limit", "node2")
        assert "overlay-mtu" in plan.stdout and "set the overlay MTU to 1450" in plan.stdout
        row = by_target(lab.plan_json("--profile", str(prof), "--limit", "node2"),
                        "node2")["overlay vxlan.calico"]
        assert row["action"] == "skip" and row["flags"] == ["overlay-mtu"]
        lab.sh("node2", "ip link set vxlan.calico mtu 1450")
        row = by_target(lab.plan_json("--profile", str(prof), "--limit", "node2"),
                        "node2")["overlay vxlan.calico"]
        assert row["action"] == "ok" and row["flags"] == []
    finally:
        lab.sh("node2", "ip link del vxlan.calico", check=False)


def test_disruptive_change_on_the_ssh_interface_is_refused(lab, tmp_path):
    prof = tmp_path / "eth0.yaml"
    prof.write_text("nic:\n  interfaces:\n    - match: {default_route: true}\n"
                    "      mtu: 1400\n    - match: {name: eth0}\n      mtu: 1400\n"
                    "      offloads: {gro: on}\n")
    before, before_etc = lab.sh("node3", "cat /sys/class/net/eth0/mtu"), etc(lab, "node3")
    ch = by_target(lab.plan_json("--profile", str(prof), "--limit", "node3"), "node3")
    assert ch["nic.interfaces[0]"]["action"] == "skip"  # the lab has no default route
    assert set(ch["eth0 mtu"]["flags"]) == {"disruptive", "management"}
    assert "carries this SSH session (to 10.251.0.13)" in " ".join(ch["eth0 mtu"]["notes"])
    p = lab.netfix("apply", "--yes", "--profile", str(prof), "--limit", "node3", "--json",
                   check_rc=1)
    res = json.loads(p.stdout[p.stdout.index("["):])[0]
    assert res["status"] == "refused" and "--allow-disruptive" in res["message"]
    assert res["details"] == ["mtu eth0 mtu: 1500 -> 1400"]
    assert lab.sh("node3", "cat /sys/class/net/eth0/mtu") == before
    assert etc(lab, "node3") == before_etc  # nothing at all: not even the offloads
    try:
        lab.netfix("apply", "--yes", "--profile", str(prof), "--limit", "node3",
                   "--allow-disruptive")
        assert lab.sh("node3", "cat /sys/class/net/eth0/mtu").strip() == "1400"
    finally:
        lab.netfix("rollback", "--yes", "--limit", "node3")
    assert lab.sh("node3", "cat /sys/class/net/eth0/mtu") == before


def test_irqbalance_without_systemd(lab, tmp_path):
    prof = tmp_path / "irq.yaml"
    prof.write_text("irqbalance: {enabled: true, running: true, banned_cpus: '1'}\n")
    before = etc(lab, "node2")
    ch = by_target(lab.plan_json("--profile", str(prof), "--limit", "node2"), "node2")
    for what in ("enabled", "running"):
        row = ch[f"irqbalance.service {what}"]
        assert row["action"] == "skip" and "not systemd" in row["notes"][0]
    path = "/etc/default/irqbalance"
    assert ch[f"{path} banned CPUs"]["desired"] == "IRQBALANCE_BANNED_CPULIST=1"
    try:
        lab.netfix("apply", "--yes", "--profile", str(prof), "--limit", "node2")
        assert lab.sh("node2", f"grep -x IRQBALANCE_BANNED_CPULIST=1 {path}").strip()
        again = by_target(lab.plan_json("--profile", str(prof), "--limit", "node2"), "node2")
        assert again[f"{path} banned CPUs"]["action"] == "ok"
    finally:
        lab.netfix("rollback", "--yes", "--limit", "node2")
    assert etc(lab, "node2") == before


def test_bad_input(lab, tmp_path):
    bad = tmp_path / "bad-cpus.yaml"
    bad.write_text(textwrap.dedent("""\
        nic:
          interfaces:
            - match: {name: eth1}
              rps: {cpus: "0-1,,3"}
        """))
    p = lab.netfix("plan", "--profile", str(bad), "--limit", "node1", check_rc=1)
    assert "bad-cpus.yaml:4: nic.interfaces[0].rps.cpus: must be a CPU list" in p.stderr
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text("nic:\n  interfaces:\n    - match: {name: 'wlan*'}\n      mtu: 1400\n")
    p = lab.netfix("plan", "--profile", str(nothing), "--limit", "node1", "--detailed-exitcode")
    assert "matched no interface on this host" in p.stdout
    assert lab.netfix("apply", "--yes", "--profile", str(nothing),
                      "--limit", "node1").returncode == 0
