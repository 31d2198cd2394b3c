"""irqbalance knob: the defaults-file edit (one line changes, every other byte stays), the
path per distro, service rows with and without systemd as PID 1, and the config step's
set snippet run for real against a file in a temp dir."""

from __future__ import annotations

import hashlib
import subprocess

from netfix.facts import Facts, Value, build_script, parse
from netfix.ifaces import ERROR
from netfix.knobs import Context, irqbalance
from netfix.plan import NOT_SETTABLE, OK, SKIP, UPDATE

CTX = Context("test")
DEBIAN_DEFAULTS = (b"#Configuration for the irqbalance daemon\n\n"
                   b"#Should irqbalance be enabled?\nENABLED=\"1\"\n"
                   b"#IRQBALANCE_BANNED_CPULIST=\n#IRQBALANCE_ARGS=\n")


def facts(state: str, files: dict | None = None) -> Facts:
    f = Facts(host="n", cpus=4, scripts={"irqbalance": state})
    f.files = {irqbalance.DEBIAN: None, irqbalance.RHEL: None, **(files or {})}
    return f


def by_target(changes):
    return {c.target: c for c in changes}


def test_edit_keeps_every_other_byte():
    new = irqbalance.edit(DEBIAN_DEFAULTS, "0-1", CTX)
    assert new == DEBIAN_DEFAULTS.replace(
        b"#IRQBALANCE_BANNED_CPULIST=\n",
        b"#IRQBALANCE_BANNED_CPULIST=\n# set by netfix (profile test)\n"
        b"IRQBALANCE_BANNED_CPULIST=0-1\n")
    assert irqbalance.banned(new) == "0-1"
    again = irqbalance.edit(new, "2", CTX)  # the active line is replaced in place
    assert again == new.replace(b"CPULIST=0-1", b"CPULIST=2")
    plain = irqbalance.edit(b'IRQBALANCE_ARGS="-x"', "3", CTX)  # no newline at the end
    assert plain == b'IRQBALANCE_ARGS="-x"\n# set by netfix (profile test)\n' \
        b"IRQBALANCE_BANNED_CPULIST=3\n"
    assert irqbalance.edit(None, "1", CTX).endswith(b"\nIRQBALANCE_BANNED_CPULIST=1\n")
    assert irqbalance.banned(b'export IRQBALANCE_BANNED_CPULIST="1,3"\n') == "1,3"


def test_path_debian_rhel_and_default():
    assert irqbalance.config_path(facts(""), {}) == irqbalance.DEBIAN
    assert irqbalance.config_path(facts(""), {"sysconfig": "yes"}) == irqbalance.RHEL
    assert irqbalance.config_path(facts("", {irqbalance.RHEL: b""}), {}) == irqbalance.RHEL


def test_no_systemd_service_rows_are_not_settable_config_still_planned():
    ch = by_target(irqbalance.diff({"enabled": True, "running": True, "banned_cpus": "0"},
                                   facts("pid1 sh\n"), CTX))
    for what in ("enabled", "running"):
        row = ch[f"irqbalance.service {what}"]
        assert row.action == SKIP and NOT_SETTABLE in row.flags and not row.ops
        assert "PID 1 is sh, not systemd" in row.notes[0]
    cfg = ch[f"{irqbalance.DEBIAN} banned CPUs"]
    assert cfg.action == UPDATE
    assert (cfg.current, cfg.desired) == ("IRQBALANCE_BANNED_CPULIST=(unset)",
                                          "IRQBALANCE_BANNED_CPULIST=0")
    assert cfg.ops[0].kind == "cmd" and cfg.ops[0].old == "absent"


def test_systemd_service_rows():
    state = "pid1 systemd\nenabled disabled\nactive inactive\n"
    ch = by_target(irqbalance.diff({"enabled": True, "running": False}, facts(state), CTX))
    en = ch["irqbalance.service enabled"]
    assert (en.current, en.desired, en.action) == ("disabled", "enabled", UPDATE)
    assert "systemctl enable --quiet irqbalance.service" in en.ops[0].set
    assert ch["irqbalance.service running"].action == OK
    missing = irqbalance.diff({"enabled": True}, facts("pid1 systemd\nenabled \nactive "), CTX)
    assert missing[0].action == SKIP and "not installed" in missing[0].notes[0]


def test_banned_cpu_that_does_not_exist_is_an_error_row():
    ch = irqbalance.diff({"banned_cpus": "6-7"}, facts("pid1 sh"), CTX)
    assert ch[0].action == SKIP and ERROR in ch[0].flags and "CPU 6,7" in ch[0].notes[0]


def test_banned_cpus_are_checked_against_the_online_list_not_a_count():
    # Online "0-3,6" is five CPUs: CPU 6 exists, CPU 4 is offline.
    f = facts("pid1 sh")
    f.cpus, f.values = 5, {irqbalance.ONLINE: Value(True, False, "0-3,6")}
    ok = irqbalance.diff({"banned_cpus": "6"}, f, CTX)[0]
    assert ok.action == UPDATE and ERROR not in ok.flags
    offline = irqbalance.diff({"banned_cpus": "3-4"}, f, CTX)[0]
    assert offline.action == SKIP and ERROR in offline.flags and not offline.ops
    assert "CPU 4 " in offline.notes[0] and "online CPUs 0-3,6" in offline.notes[0]


def test_online_cpu_list_comes_from_the_fact_script_round_trip():
    needs = irqbalance.needs({"banned_cpus": "6"}, CTX)
    assert f"v {irqbalance.ONLINE}" in build_script(needs).splitlines()
    # What the fact script prints for it: a `v` record, then the value from its one grep.
    out = (f"@@NF\tv\t{irqbalance.ONLINE}\trw\t\n@@NF\tvals\tbegin\t \t\n"
           f"{irqbalance.ONLINE}:0-3,6\n@@NF\tvals\tend\t \t\n"
           f"@@NF\thost\tcpus\t\t0-3,6\n")
    f = parse("n", out)
    f.files = {irqbalance.DEBIAN: None, irqbalance.RHEL: None}
    assert irqbalance.diff({"banned_cpus": "6"}, f, CTX)[0].action == UPDATE
    assert ERROR in irqbalance.diff({"banned_cpus": "4"}, f, CTX)[0].flags


def test_config_step_writes_both_ways_and_reads_back_the_hash(tmp_path):
    path = tmp_path / "irqbalance"
    path.write_bytes(DEBIAN_DEFAULTS)
    new = irqbalance.edit(DEBIAN_DEFAULTS, "0", CTX)
    sha_old, sha_new = (hashlib.sha256(b).hexdigest() for b in (DEBIAN_DEFAULTS, new))
    set_sh = irqbalance._write_sh(str(path), {sha_old: DEBIAN_DEFAULTS, sha_new: new})

    def run(value: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", f"f() {{ {set_sh}\n}}; f \"$1\"", "sh", value],
                              capture_output=True, text=True)

    assert run(sha_new).returncode == 0 and path.read_bytes() == new
    assert run(sha_old).returncode == 0 and path.read_bytes() == DEBIAN_DEFAULTS
    bad = run("0" * 64)
    assert bad.returncode == 1 and "unknown content" in bad.stderr
    assert path.read_bytes() == DEBIAN_DEFAULTS
    created = tmp_path / "new"
    set_sh = irqbalance._write_sh(str(created), {"absent": None, sha_new: new})
    subprocess.run(["sh", "-c", f"f() {{ {set_sh}\n}}; f {sha_new}; f absent"], check=True)
    assert not created.exists()
