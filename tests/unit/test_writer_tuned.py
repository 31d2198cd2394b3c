"""TuneD's writer model on recorded fact output (netfix/sh/tuned.sh's records) and
TuneD's real configuration format: active_profile, tuned-main.conf, include= chains."""

from __future__ import annotations

import base64

from netfix.facts import DirEntry, Facts
from netfix.plan import Change, Op
from netfix.writers import _common as common
from netfix.writers import tuned

NETFIX_FILE = "/etc/sysctl.d/90-netfix.conf"


def dump(files: dict[str, str], pid: int = 4242) -> str:
    out = [f"PROC {pid} tuned", "ARG /usr/bin/python3", "ARG /usr/sbin/tuned", "ARG -l"]
    for path, text in files.items():
        out.append(f"F {path}")
        out += [f"| {line}" for line in text.splitlines()]
    return "\n".join(out) + "\n"


BASE = {
    "/etc/tuned/active_profile": "k8s-node\n",
    "/etc/tuned/tuned-main.conf": "daemon = 1\nreapply_sysctl = 1\n",
    # the child in /etc/tuned, its parent shipped in /usr/lib/tuned
    "/etc/tuned/k8s-node/tuned.conf": "[main]\nsummary=node\ninclude=network-throughput\n"
                                      "[sysctl]\nnet.core.somaxconn=2048\n"
                                      "[net]\ntype=net\ndevices=eth*\nring=rx 2048 tx 2048\n",
    "/usr/lib/tuned/network-throughput/tuned.conf": "[main]\ninclude=throughput-performance\n"
                                                    "[sysctl]\nnet.core.somaxconn=512\n"
                                                    "net.ipv4.tcp_rmem=4096 87380 16777216\n",
    "/usr/lib/tuned/throughput-performance/tuned.conf": "[sysctl]\nnet.core.rmem_max=>8388608\n"
                                                        "net.ipv4.tcp_rmem=4096 1 2\n",
}


def facts_with(files: dict[str, str], netfix_conf: bytes | None = b"net.core.somaxconn = 4096\n",
               others: dict[str, bytes] | None = None) -> Facts:
    f = Facts(host="n1")
    f.scripts[tuned.SCRIPT] = dump(files)
    f.dirs["/etc/sysctl.d"] = {}
    if netfix_conf is not None:
        f.dirs["/etc/sysctl.d"]["90-netfix.conf"] = DirEntry(netfix_conf)
    for path, content in (others or {}).items():
        parent, _, base = path.rpartition("/")
        f.dirs.setdefault(parent, {})[base] = DirEntry(content)
    return f


def plan_rows(**desired: str) -> list[Change]:
    rows = [Change("sysctl", k.replace("__", "."), "1", v) for k, v in desired.items()]
    content = "".join(f"{c.target} = {c.desired}\n" for c in rows).encode()
    rows.append(Change("sysctl", NETFIX_FILE, "absent", "x",
                       ops=[Op("file", NETFIX_FILE, None, base64.b64encode(content).decode())]))
    return rows


def row(changes: list[Change], target: str) -> Change:
    return next(c for c in changes if c.target == target)


def test_include_chain_is_merged_in_tuned_order():
    prof = tuned.load(common.records(dump(BASE)).files)
    assert prof.files == ["/usr/lib/tuned/throughput-performance/tuned.conf",
                          "/usr/lib/tuned/network-throughput/tuned.conf",
                          "/etc/tuned/k8s-node/tuned.conf"]
    # the including profile wins over what it includes, key by key
    assert prof.sysctl["net.core.somaxconn"] == ("2048", "/etc/tuned/k8s-node/tuned.conf")
    assert prof.sysctl["net.ipv4.tcp_rmem"][0] == "4096 87380 16777216"
    assert prof.sysctl["net.core.rmem_max"][0] == ">8388608"
    assert not prof.problems


def test_etc_profile_hides_the_shipped_one_of_the_same_name():
    files = {**BASE, "/etc/tuned/network-throughput/tuned.conf": "[sysctl]\nnet.core.somaxconn=7\n"}
    prof = tuned.load(common.records(dump(files)).files)
    assert "/usr/lib/tuned/network-throughput/tuned.conf" not in prof.files
    assert "/usr/lib/tuned/throughput-performance/tuned.conf" not in prof.files  # its include


def test_reapply_1_netfix_file_wins():
    changes = plan_rows(net__core__somaxconn="4096")
    tuned.annotate(changes, facts_with(BASE))
    c = row(changes, "net.core.somaxconn")
    assert c.wins == "netfix" and "other-writer" not in c.flags
    (w,) = c.writers
    assert (w.name, w.when, w.value, w.wins) == ("tuned", "start", "2048", False)
    assert "re-applies /etc/sysctl.d/90-netfix.conf" in " ".join(c.notes)


def test_reapply_0_tuned_wins_and_names_the_file():
    files = {**BASE, "/etc/tuned/tuned-main.conf": "reapply_sysctl = 0\n"}
    changes = plan_rows(net__core__somaxconn="4096")
    tuned.annotate(changes, facts_with(files))
    c = row(changes, "net.core.somaxconn")
    assert c.wins == "tuned" and c.reason("other-writer").detail == "tuned"
    assert "/etc/tuned/k8s-node/tuned.conf" in c.reason("other-writer").message
    assert c.writers[0].wins and c.writers[0].value == "2048"
    assert c.boot == "2048"  # tuned.service starts after systemd-sysctl


def test_reapply_0_same_value_is_no_conflict():
    files = {**BASE, "/etc/tuned/tuned-main.conf": "reapply_sysctl = false\n"}
    changes = plan_rows(net__core__somaxconn="2048")
    tuned.annotate(changes, facts_with(files))
    c = row(changes, "net.core.somaxconn")
    assert c.wins == "netfix" and "other-writer" not in c.flags


def test_reapply_1_but_a_later_file_tuned_reapplies_wins():
    changes = plan_rows(net__core__somaxconn="4096")
    later = {"/etc/sysctl.d/99-zz.conf": b"net.core.somaxconn = 100\n"}
    tuned.annotate(changes, facts_with(BASE, others=later))
    c = row(changes, "net.core.somaxconn")
    assert c.wins == "tuned" and "99-zz.conf" in c.reason("other-writer").message


def test_usr_lib_sysctl_d_is_not_reapplied():
    """plugin_sysctl.py re-applies /run/sysctl.d and /etc/sysctl.d only: a key netfix
    does not persist in them stays at TuneD's value."""
    changes = [Change("sysctl", "net.core.somaxconn", "1", "4096")]
    f = facts_with(BASE, netfix_conf=None,
                   others={"/usr/lib/sysctl.d/99-x.conf": b"net.core.somaxconn = 4096\n"})
    tuned.annotate(changes, f)
    assert changes[0].wins == "tuned" and "other-writer" in changes[0].flags


def test_raise_only_modifier():
    files = {**BASE, "/etc/tuned/tuned-main.conf": "reapply_sysctl = 0\n"}
    small, big = plan_rows(net__core__rmem_max="4194304"), plan_rows(net__core__rmem_max="16777216")
    tuned.annotate(small, facts_with(files))
    tuned.annotate(big, facts_with(files))
    assert row(small, "net.core.rmem_max").wins == "tuned"  # > raises 4 MiB to 8 MiB
    assert row(big, "net.core.rmem_max").wins == "netfix"  # already above: TuneD leaves it
    assert row(big, "net.core.rmem_max").writers[0].value is None


def test_net_ring_on_matching_devices_only():
    changes = [Change("nic", "eth0 rings", "rx=256 tx=256", "rx=1024 tx=1024"),
               Change("nic", "ens3 rings", "rx=256 tx=256", "rx=1024 tx=1024")]
    tuned.annotate(changes, facts_with(BASE))
    eth0, ens3 = changes
    assert eth0.wins == "tuned" and eth0.writers[0].value == "rx=2048 tx=2048"
    assert "other-writer" in eth0.flags and eth0.boot == "rx=2048 tx=2048"
    assert not ens3.writers  # devices=eth*


def test_no_daemon_no_writer():
    changes = plan_rows(net__core__somaxconn="4096")
    f = facts_with(BASE)
    f.scripts[tuned.SCRIPT] = ""
    tuned.annotate(changes, f)
    assert not row(changes, "net.core.somaxconn").writers


def test_needs_reads_nothing_for_a_profile_tuned_cannot_touch():
    assert not tuned.needs({"firewall": {"x": 1}}).scripts
    assert tuned.SCRIPT in tuned.needs({"sysctl": {"net.core.somaxconn": 1}}).scripts


def test_missing_profile_is_a_note_not_a_crash():
    files = {**BASE, "/etc/tuned/active_profile": "nosuch\n"}
    prof = tuned.load(common.records(dump(files)).files)
    assert prof.problems and "nosuch" in prof.problems[0]


def test_override_including_the_shipped_profile_of_the_same_name_and_cycles():
    files = {**BASE, "/etc/tuned/network-throughput/tuned.conf":
             "[main]\ninclude=network-throughput\n[sysctl]\nnet.core.somaxconn=7\n"}
    prof = tuned.load(common.records(dump(files)).files)
    assert "/usr/lib/tuned/network-throughput/tuned.conf" in prof.files  # the shipped one
    cyc = {**BASE, "/usr/lib/tuned/throughput-performance/tuned.conf":
           "[main]\ninclude=k8s-node\n[sysctl]\nnet.core.rmem_max=1\n"}
    prof = tuned.load(common.records(dump(cyc)).files)
    assert any("include cycle" in p for p in prof.problems), prof.problems
