"""The .link / .network / NetworkManager writer model on recorded fact output
(netfix/sh/linkfiles.sh's records): which file applies, and who wins."""

from __future__ import annotations

from netfix.facts import Facts
from netfix.knobs.nicpersist import UDEV
from netfix.plan import Change
from netfix.writers import _common as common
from netfix.writers import linkfiles

DEFAULT = ("/usr/lib/systemd/network/99-default.link",
           "[Match]\nOriginalName=*\n[Link]\nNamePolicy=keep kernel database onboard slot path\n"
           "AlternativeNamesPolicy=database onboard slot path\nMACAddressPolicy=persistent\n")
RINGS = ("/etc/systemd/network/50-e1000e.link",
         "[Match]\nDriver=e1000e\n[Link]\nNamePolicy=keep kernel database onboard slot path\n"
         "RxBufferSize=512\nTxBufferSize=512\nRxCoalesceSec=20us\nGenericReceiveOffload=no\n")
IF = "IF enp0s2 52:54:00:12:34:56 e1000e 1 - pci-0000:00:02.0"


def dump(*files: tuple[str, str | None], extra: str = "") -> str:
    out = []
    for path, text in files:
        if text is None:
            out.append(f"M {path}")
            continue
        out.append(f"F {path}")
        out += [f"| {line}" for line in text.splitlines()]
    return "\n".join([*out, IF, extra]) + "\n"


def rows(netfix_rule: bool = True) -> list[Change]:
    out = [Change("nic", "enp0s2 rings", "rx=256 tx=256", "rx=1024 tx=1024"),
           Change("nic", "enp0s2 coalesce", "rx-usecs=3", "rx-usecs=10"),
           Change("nic", "enp0s2 offloads", "gro=on", "gro=on"),
           Change("mtu", "enp0s2 mtu", "1500", "9000")]
    out.append(Change("nic", UDEV, "absent", "1 lines, sha256:x" if netfix_rule else "absent"))
    return out


def run(text: str, netfix_rule: bool = True) -> dict[str, Change]:
    changes = rows(netfix_rule)
    f = Facts(host="n1")
    f.scripts[linkfiles.SCRIPT] = text
    linkfiles.annotate(changes, f)
    return {c.target: c for c in changes}


def test_first_matching_link_file_applies_and_netfix_rule_runs_after_it():
    ch = run(dump(DEFAULT, RINGS))
    rings = ch["enp0s2 rings"]
    assert rings.wins == "netfix" and "other-writer" not in rings.flags
    udev, own = rings.writers
    assert (udev.name, udev.when, udev.value, udev.source, udev.wins) == (
        "systemd-udevd", "link-add", "rx=512 tx=512", RINGS[0], False)
    assert (own.name, own.value, own.wins) == ("netfix-nic", "rx=1024 tx=1024", True)
    assert ch["enp0s2 coalesce"].writers[0].value == "rx-usecs=20"  # 20us in usecs
    assert ch["enp0s2 offloads"].wins == "netfix"  # gro off there; netfix's rule wins
    assert "warning" not in rings.flags  # it carries a NamePolicy


def test_without_netfix_rule_the_link_file_wins_at_boot():
    ch = run(dump(DEFAULT, RINGS), netfix_rule=False)
    rings = ch["enp0s2 rings"]
    assert rings.wins == "systemd-udevd" and rings.reason("other-writer").detail == \
        "systemd-udevd"
    assert rings.boot == "rx=512 tx=512"
    assert rings.writers[0].wins and not rings.writers[1].wins


def test_only_the_first_match_applies():
    early = ("/etc/systemd/network/10-all.link", "[Match]\nOriginalName=*\n[Link]\n"
             "NamePolicy=kernel\n")
    ch = run(dump(DEFAULT, RINGS, early))
    assert not ch["enp0s2 rings"].writers  # 10-all.link matched first and sets no rings


def test_same_name_in_etc_hides_usr_lib_and_masking():
    hidden = ("/usr/lib/systemd/network/50-e1000e.link", RINGS[1].replace("512", "64"))
    ch = run(dump(DEFAULT, hidden, RINGS))
    assert ch["enp0s2 rings"].writers[0].value == "rx=512 tx=512"
    masked = ("/etc/systemd/network/50-e1000e.link", None)
    ch = run(dump(DEFAULT, hidden, masked))
    assert not ch["enp0s2 rings"].writers  # masked: neither copy applies


def test_match_fields():
    iface = linkfiles.ifaces(common.records(IF + "\n"))["enp0s2"]
    assert iface.type == "ether" and iface.path == "pci-0000:00:02.0"
    m = linkfiles.matches
    assert m([("MACAddress", "52:54:00:12:34:56 aa:bb:cc:dd:ee:ff")], iface)
    assert m([("MACAddress", "52:54:00:12:34:56".upper())], iface)
    assert not m([("Driver", "virtio_net")], iface)
    assert m([("Driver", "!virtio_net")], iface)
    assert m([("Path", "pci-0000:00:*"), ("Type", "ether")], iface)
    assert not m([("Host", "node1")], iface)  # not evaluated: not taken as a match


def test_link_without_name_policy_is_warned():
    bare = ("/etc/systemd/network/50-e1000e.link",
            "[Match]\nDriver=e1000e\n[Link]\nRxBufferSize=512\nTxBufferSize=512\n")
    rings = run(dump(DEFAULT, bare))["enp0s2 rings"]
    assert rings.reason("warning").detail == bare[0]
    assert "kernel name" in rings.reason("warning").message


def test_networkd_mtu_wins_when_networkd_runs():
    net = ("/etc/systemd/network/10-e.network", "[Match]\nName=enp0s2\n[Link]\nMTUBytes=1400\n")
    idle = run(dump(DEFAULT, net))["enp0s2 mtu"]
    assert idle.wins == "netfix" and "other-writer" not in idle.flags
    mtu = run(dump(DEFAULT, net, extra="ENABLED systemd-networkd"))["enp0s2 mtu"]
    assert mtu.wins == "systemd-networkd" and mtu.boot == "1400"
    assert "other-writer" in mtu.flags and net[0] in mtu.reason("other-writer").message


def test_networkmanager_keyfile_by_interface_name():
    nm = ("/etc/NetworkManager/system-connections/e.nmconnection",
          "[connection]\nid=e\ntype=ethernet\ninterface-name=enp0s2\n[ethernet]\nmtu=9000\n"
          "[ethtool]\nring-rx=4096\nfeature-gro=false\n")
    ch = run(dump(DEFAULT, nm, extra="PROC 612 NetworkManager"))
    assert ch["enp0s2 mtu"].wins == "netfix"  # same MTU: no conflict
    assert ch["enp0s2 mtu"].writers[0].name == "NetworkManager"
    rings = ch["enp0s2 rings"]
    assert rings.wins == "NetworkManager" and rings.writers[0].value == "rx=4096"
    assert rings.boot == "rx=4096 tx=1024"
    assert ch["enp0s2 offloads"].wins == "NetworkManager"
    other = ("/etc/NetworkManager/system-connections/o.nmconnection",
             "[connection]\ninterface-name=eth9\n[ethernet]\nmtu=1280\n")
    assert not run(dump(DEFAULT, other, extra="PROC 612 NetworkManager"))["enp0s2 mtu"].writers


def test_value_parsers():
    assert linkfiles._usecs("1") == "1000000" and linkfiles._usecs("5ms") == "5000"
    assert linkfiles._usecs("abc") is None
    assert linkfiles._bytes("9K") == "9216" and linkfiles._bytes("1500") == "1500"


def test_needs_only_with_interfaces():
    assert not linkfiles.needs({"sysctl": {"a.b": 1}}).scripts
    assert linkfiles.SCRIPT in linkfiles.needs({"nic": {"interfaces": [{}]}}).scripts


def test_w_dump_records_parse_back(tmp_path):
    """netfix/sh/writers.sh's w_dump run by a real sh: comments and blank lines dropped,
    a masked file, an empty file and an absent one, parsed back by _common.records."""
    import subprocess

    from netfix import sh

    (tmp_path / "a.link").write_text("# c\n[Match]\n\n; c2\nDriver=e1000e\n  RxBufferSize=512\n")
    (tmp_path / "empty.link").write_text("")
    (tmp_path / "m.link").symlink_to("/dev/null")
    files = [str(tmp_path / n) for n in ("a.link", "empty.link", "m.link", "absent.link")]
    script = sh.function("writers.sh", "w_dump") + 'w_dump "$@"\n'
    out = subprocess.run(["sh", "-c", script, "sh", *files], capture_output=True, text=True,
                         check=True).stdout
    rec = common.records(out)
    assert rec.files == {files[0]: "[Match]\nDriver=e1000e\n  RxBufferSize=512\n",
                         files[1]: "", files[2]: None}
