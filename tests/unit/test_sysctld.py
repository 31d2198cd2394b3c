"""The boot-time sysctl appliers' model (netfix.sysctld) on recorded sysctl.d trees.

Each case is a tree whose outcome under the real binaries is known (the same shapes
tests/integration/test_sysctl_boot_lab.py runs through systemd-sysctl 252 and procps
4.0.2 in lab nodes): file order, hiding, masking, the 99-sysctl.conf symlink, globs,
`-` prefixes and slashed keys.
"""

from __future__ import annotations

from netfix.facts import DirEntry, Facts, Value
from netfix.knobs import Context, sysctl
from netfix.plan import SHADOWED
from netfix.sysctld import (
    Applier,
    BootValue,
    boot_values,
    conf_files,
    detect,
    key_path,
    parse_lines,
)
from netfix.sysctlfiles import BOOT_SCRIPT
from netfix.util import sysctl_path

SYSTEMD, PROCPS = Applier.SYSTEMD, Applier.PROCPS
ETC, USR = "/etc/sysctl.d", "/usr/lib/sysctl.d"
CONF = b"net.core.somaxconn = 1111\nnet.ipv4.tcp_fin_timeout = 11\n"  # /etc/sysctl.conf
SOMAX, FIN = "net.core.somaxconn", "net.ipv4.tcp_fin_timeout"
RP = "net.ipv4.conf.{}.rp_filter"


def tree(etc: dict[str, bytes | None], usr: dict[str, bytes | None] | None = None):
    """None: a symlink to /dev/null."""
    def entries(d):
        return {n: DirEntry(c, masked=c is None) for n, c in d.items()}
    return {ETC: entries(etc), USR: entries(usr or {})}


def values(applier, dirs, keys, sysctl_conf=CONF):
    found = boot_values(applier, dirs, sysctl_conf, {}, set(keys))
    return {k: (v.value, v.source) for k, v in found.items()}


def test_key_forms_normalise_like_both_binaries():
    assert key_path("net.ipv4.conf.eth0/100.rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"
    assert key_path("net/ipv4/conf/eth0.100/rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"
    assert key_path(" net.ipv4.ip_forward ") == "net/ipv4/ip_forward"
    lines = parse_lines(b"# c\n; c\n-net.core.x = 1 \nnet.core.y\n-net.core.z\n k=\n", "f")
    assert [(ln.key, ln.value) for ln in lines] == [
        ("net/core/x", "1"), ("net/core/z", None), ("k", "")]


def test_sysctl_conf_only_through_the_symlink_in_name_order_under_systemd():
    """The issue's case: 99-zz.conf and sysctl.conf set the same key. systemd-sysctl
    reads sysctl.conf as 99-sysctl.conf (before 99-zz), procps applies it last."""
    dirs = tree({"99-sysctl.conf": CONF, "99-zz.conf": b"net.core.somaxconn = 2222\n",
                 "10-early.conf": b"net.ipv4.tcp_fin_timeout = 22\n"})
    assert values(SYSTEMD, dirs, [SOMAX, FIN]) == {
        SOMAX: ("2222", f"{ETC}/99-zz.conf"), FIN: ("11", f"{ETC}/99-sysctl.conf")}
    assert values(PROCPS, dirs, [SOMAX, FIN]) == {
        SOMAX: ("1111", "/etc/sysctl.conf"), FIN: ("11", "/etc/sysctl.conf")}
    # Without the symlink systemd-sysctl never reads /etc/sysctl.conf.
    del dirs[ETC]["99-sysctl.conf"]
    assert values(SYSTEMD, dirs, [SOMAX, FIN]) == {
        SOMAX: ("2222", f"{ETC}/99-zz.conf"), FIN: ("22", f"{ETC}/10-early.conf")}
    assert values(PROCPS, dirs, [SOMAX])[SOMAX] == ("1111", "/etc/sysctl.conf")


def test_masking_and_same_name_hiding_across_dirs():
    dirs = tree({"50-vendor.conf": None, "60-local.conf": b"net.core.somaxconn = 600\n"},
                {"50-vendor.conf": b"net.ipv4.tcp_fin_timeout = 50\n",
                 "60-local.conf": b"net.core.somaxconn = 1\n",
                 "70-usr.conf": b"net.ipv4.tcp_fin_timeout = 70\n"})
    for applier in (SYSTEMD, PROCPS):
        got = values(applier, dirs, [SOMAX, FIN], sysctl_conf=None)
        assert got == {SOMAX: ("600", f"{ETC}/60-local.conf"),
                       FIN: ("70", f"{USR}/70-usr.conf")}
    paths = [p for p, _ in conf_files(SYSTEMD, dirs, None, {})]
    assert paths == [f"{ETC}/60-local.conf", f"{USR}/70-usr.conf"]


def test_explicit_key_beats_glob_whatever_the_order_and_last_glob_wins():
    dirs = tree({"10-explicit.conf": b"net.ipv4.conf.lo.rp_filter = 2\n",
                 "20-glob.conf": b"net.ipv4.conf.*.rp_filter = 1\n",
                 "30-glob.conf": b"net/ipv4/conf/e*/rp_filter = 0\n"})
    keys = [RP.format("lo"), RP.format("eth0"), RP.format("all")]
    for applier in (SYSTEMD, PROCPS):
        got = boot_values(applier, dirs, None, {}, set(keys))
        assert got[RP.format("lo")] == BootValue("2", f"{ETC}/10-explicit.conf")
        assert got[RP.format("eth0")] == BootValue("0", f"{ETC}/30-glob.conf",
                                                   "net/ipv4/conf/e*/rp_filter")
        assert got[RP.format("all")].value == "1"


def test_a_glob_does_not_cross_path_components():
    dirs = tree({"10.conf": b"net.*.rp_filter = 1\n"})
    assert boot_values(SYSTEMD, dirs, None, {}, {RP.format("lo")})[RP.format("lo")].value is None


def test_reassigning_the_same_value_keeps_systemds_order_not_procps():
    """systemd: a repeated assignment with the same value stays where it was, so a glob
    in between wins; procps appends every line, so the repeat wins."""
    dirs = tree({"10.conf": b"net.ipv4.conf.*.rp_filter = 1\n",
                 "20.conf": b"net.ipv4.conf.e*.rp_filter = 2\n",
                 "30.conf": b"net.ipv4.conf.*.rp_filter = 1\n"})
    key = RP.format("eth0")
    assert values(SYSTEMD, dirs, [key], None)[key] == ("2", f"{ETC}/20.conf")
    assert values(PROCPS, dirs, [key], None)[key] == ("1", f"{ETC}/30.conf")


def test_minus_prefixes():
    """`-key = v` only ignores failures; `-key` alone excludes from globs, and under
    systemd it also drops an earlier explicit line (a later hashmap entry)."""
    dirs = tree({"10.conf": b"-net.core.somaxconn = 700\nnet.ipv4.tcp_fin_timeout = 9\n",
                 "20.conf": b"net.ipv4.conf.*.rp_filter = 1\n-net.ipv4.conf.lo.rp_filter\n",
                 "30.conf": b"-net.ipv4.tcp_fin_timeout\n"})
    keys = [SOMAX, FIN, RP.format("lo"), RP.format("eth0")]
    sd = values(SYSTEMD, dirs, keys, None)
    assert sd[SOMAX] == ("700", f"{ETC}/10.conf")
    assert sd[RP.format("lo")] == (None, f"{ETC}/20.conf")
    assert sd[RP.format("eth0")][0] == "1"
    assert sd[FIN] == (None, f"{ETC}/30.conf")
    pp = values(PROCPS, dirs, keys, None)
    assert pp[FIN] == ("9", f"{ETC}/10.conf") and pp[RP.format("lo")][0] is None


def test_detect_the_applier():
    booted = "PID1 systemd\nSYSTEMD_SYSCTL /usr/lib/systemd/systemd-sysctl\nSYSTEMD_VERSION 252\n"
    b = detect(booted + "LINK /etc/sysctl.d/99-sysctl.conf ../sysctl.conf\n")
    assert (b.applier, b.version) == (SYSTEMD, "252") and "pid 1" in b.why
    assert b.link("/etc/sysctl.d/99-sysctl.conf") == "../sysctl.conf"
    booted_sh = "PID1 sh\nBOOTED\nSYSTEMD_SYSCTL /lib/systemd/systemd-sysctl\n"
    assert detect(booted_sh).applier == SYSTEMD
    b = detect("PID1 sh\nSYSTEMD_SYSCTL /usr/lib/systemd/systemd-sysctl\nPROCPS_VERSION 4.0.2\n")
    assert (b.applier, b.version) == (PROCPS, "4.0.2") and "pid 1 is sh" in b.why
    assert detect("PID1 systemd\n").applier == PROCPS  # no systemd-sysctl binary
    assert detect("").applier == PROCPS


def test_plan_rows_name_the_applier_its_file_and_the_symlink():
    f = Facts(host="h", dirs=tree({"99-sysctl.conf": CONF,
                                   "99-zz.conf": b"net.ipv4.tcp_fin_timeout = 33\n"}))
    f.files["/etc/sysctl.conf"] = CONF
    for key in (SOMAX, FIN):
        f.values[sysctl_path(key)] = Value(True, True, "5")
    f.scripts[BOOT_SCRIPT] = ("PID1 systemd\nSYSTEMD_SYSCTL /usr/lib/systemd/systemd-sysctl\n"
                              "SYSTEMD_VERSION 252\nLINK /etc/sysctl.d/99-sysctl.conf "
                              "../sysctl.conf\n")
    rows = {c.target: c for c in sysctl.diff({SOMAX: 4096, FIN: 30}, f, Context("t"))}
    som, fin = rows[SOMAX], rows[FIN]
    assert som.boot == "1111" and som.wins == "systemd-sysctl"
    assert som.reason(SHADOWED).detail == "/etc/sysctl.d/99-sysctl.conf"
    assert "(a symlink to ../sysctl.conf)" in som.notes[-1]
    assert fin.boot == "33" and fin.reason(SHADOWED).detail == "/etc/sysctl.d/99-zz.conf"
    w = fin.writers[0]
    assert (w.name, w.when, w.value, w.version, w.wins) == ("systemd-sysctl", "boot", "33",
                                                             "252", True)
    assert "applied at boot by systemd-sysctl" in rows[sysctl.PERSIST].notes[-1]
    # procps on the same tree: sysctl.conf last.
    f.scripts[BOOT_SCRIPT] = "PID1 sh\n"
    rows = {c.target: c for c in sysctl.diff({SOMAX: 1111, FIN: 30}, f, Context("t"))}
    assert rows[SOMAX].wins == "netfix" and SHADOWED not in rows[SOMAX].flags
    assert rows[FIN].boot == "11" and rows[FIN].reason(SHADOWED).detail == "/etc/sysctl.conf"
    assert rows[FIN].writers[0].name == "procps"
