"""Differential test of netfix's boot-time sysctl model against the real appliers.

In a lab node (its own netns; /etc/sysctl.d, /usr/lib/sysctl.d and /etc/sysctl.conf are
private to it), each case builds a sysctl.d tree, netfix applies a profile (so its own
/etc/sysctl.d/90-netfix.conf is part of the tree), the keys are reset to sentinel
values (a fresh boot), and the real /usr/lib/systemd/systemd-sysctl or procps
`sysctl --system` runs inside the node. Invariant: for every key, the value netfix
predicted (`netfix plan --json`, field `boot`, or netfix's model on the facts it read
from the node, for keys only globs touch) is the value the binary left; a key the
model says the applier leaves alone keeps its sentinel.

Only per-network-namespace keys are used: the appliers write /proc/sys, and in a node
everything outside /proc/sys/net is read-only, so the vendor files' host-global keys
(kernel.pid_max, fs.protected_*) fail there instead of changing the host.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from netfix.plan import load_plan
from netfix.sysctld import Applier

NODE = "node1"
SYSTEMD_SYSCTL = Path("/usr/lib/systemd/systemd-sysctl")
PERSIST = "/etc/sysctl.d/90-netfix.conf"
SOMAX, FIN, KEEP = "net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_time"
PORTS, SYN = "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syn_retries"
RP = "net.ipv4.conf.{}.rp_filter"
# The profile netfix applies: every key is in 90-netfix.conf, so a case shows which
# files the applier reads after it.
PROFILE = {SOMAX: 4096, FIN: 30, KEEP: 3000, PORTS: "20000 60000", SYN: 5}
# A fresh boot: what the keys hold before the applier runs (differs from every file's).
SENTINEL = {SOMAX: "123", FIN: "45", KEEP: "6789", PORTS: "40000 50000", SYN: "3"}
RP_SENTINEL = "0"
APPLIED: dict[tuple[str, Applier], dict[str, str]] = {}  # what the binaries left, per case
LINK = object()  # the 99-sysctl.conf -> ../sysctl.conf symlink Debian and RHEL ship
MASK = object()  # a symlink to /dev/null

SYSCTL_CONF = (f"{SOMAX} = 1111\n{FIN} = 11\n{PORTS} = 1111 61111\n").encode()
CASES = {
    # The case: 99-zz.conf and sysctl.conf set the same key; a file sorting
    # before 90-netfix loses to it, the symlink sorts after it.
    "symlink-present": {
        "/etc/sysctl.conf": SYSCTL_CONF,
        "/etc/sysctl.d/99-sysctl.conf": LINK,
        "/etc/sysctl.d/99-zz.conf": f"{SOMAX} = 2222\n".encode(),
        "/etc/sysctl.d/10-early.conf": f"{KEEP} = 1010\n{FIN} = 10\n".encode(),
    },
    "symlink-absent": {
        "/etc/sysctl.conf": SYSCTL_CONF,
        "/etc/sysctl.d/99-zz.conf": f"{SOMAX} = 2222\n".encode(),
        "/etc/sysctl.d/95-mid.conf": f"{KEEP} = 9500\n".encode(),
    },
    "mask-and-hide": {
        "/usr/lib/sysctl.d/95-vendor.conf": f"{SOMAX} = 9595\n{FIN} = 95\n".encode(),
        "/etc/sysctl.d/95-vendor.conf": MASK,
        "/usr/lib/sysctl.d/96-vendor.conf": f"{KEEP} = 9696\n".encode(),
        "/etc/sysctl.d/96-vendor.conf": f"{KEEP} = 6969\n".encode(),
        "/usr/lib/sysctl.d/05-vendor.conf": f"{SYN} = 2\n".encode(),
    },
    "globs-minus-slashes": {
        "/etc/sysctl.d/10-explicit.conf": b"net.ipv4.conf.default.rp_filter = 2\n",
        "/etc/sysctl.d/20-glob.conf": b"net.ipv4.conf.*.rp_filter = 1\n",
        "/etc/sysctl.d/30-glob.conf": b"net/ipv4/conf/l*/rp_filter = 2\n",
        "/etc/sysctl.d/95-minus.conf": (
            f"-{SYN} = 7\n-{SOMAX}\n-net.ipv4.conf.all.rp_filter\n"
            "net/ipv4/tcp_keepalive_time = 7777\n-net.ipv4.no_such_key = 1\n").encode(),
    },
    "same-value-reassigned": {
        "/etc/sysctl.d/10-a.conf": b"net.ipv4.conf.*.rp_filter = 1\n",
        "/etc/sysctl.d/20-b.conf": b"net.ipv4.conf.l*.rp_filter = 2\n",
        "/etc/sysctl.d/30-c.conf": b"net.ipv4.conf.*.rp_filter = 1\n",
        "/etc/sysctl.d/99-zz.conf": f"{FIN} = 99\n".encode(),
        "/etc/sysctl.conf": f"{FIN} = 98\n".encode(),
    },
}


@pytest.fixture(scope="module")
def node(lab, tmp_path_factory):
    """node1 with the profile applied; its trees, keys and /run/systemd put back after."""
    if not SYSTEMD_SYSCTL.exists():
        pytest.skip(f"{SYSTEMD_SYSCTL} is not installed")
    rps = lab.sh(NODE, "ls /proc/sys/net/ipv4/conf").split()
    keys = [*PROFILE, *(RP.format(i) for i in rps)]
    before = {k: lab.sysctl(NODE, k) for k in keys}
    saved_conf = lab.sh(NODE, "base64 -w0 /etc/sysctl.conf")
    profile = tmp_path_factory.mktemp("boot") / "boot.yaml"
    profile.write_text("description: boot-applier differential test\nsysctl:\n" + "".join(
        f"  {k}: {v!r}\n" if isinstance(v, str) else f"  {k}: {v}\n" for k, v in PROFILE.items()))
    lab.netfix("apply", "--profile", str(profile), "--limit", NODE, "--yes")
    try:
        yield lab, profile, rps
    finally:
        lab.sh(NODE, "umount /run/systemd 2>/dev/null; true")
        _clear_tree(lab)
        lab.sh(NODE, f"echo {saved_conf} | base64 -d > /etc/sysctl.conf; rm -f {PERSIST}")
        _set(lab, before)
        assert lab.sh(NODE, "ls /etc/sysctl.d") == ""


def _clear_tree(lab) -> None:
    names = {Path(p).name for case in CASES.values() for p in case if "sysctl.d" in p}
    lab.sh(NODE, "cd /etc/sysctl.d && rm -f " + " ".join(sorted(names)) +
           " && cd /usr/lib/sysctl.d && rm -f " + " ".join(sorted(names)))


def _set(lab, values: dict[str, str]) -> None:
    lab.sh(NODE, " && ".join(f"sysctl -q -w {shlex.quote(f'{k}={v}')}" for k, v in values.items()))


def _build(lab, case: dict) -> None:
    _clear_tree(lab)
    lab.sh(NODE, ": > /etc/sysctl.conf")
    for path, content in case.items():
        if content is LINK:
            lab.sh(NODE, f"ln -s ../sysctl.conf {path}")
        elif content is MASK:
            lab.sh(NODE, f"ln -s /dev/null {path}")
        else:
            lab.sh(NODE, f"printf %s {shlex.quote(content.decode())} > {path}")


def _boot_as(lab, applier: Applier) -> None:
    """Make the node look booted by systemd (sd_booted: /run/systemd/system, on a tmpfs
    private to the node's mount namespace) or not."""
    lab.sh(NODE, "umount /run/systemd 2>/dev/null; true")
    if applier is Applier.SYSTEMD:
        lab.sh(NODE, "mount -t tmpfs nfboot /run/systemd && mkdir /run/systemd/system")


def _model(lab, keys: list[str]) -> dict[str, str | None]:
    """netfix's model on the facts netfix's own fact script read from the node."""
    from netfix import engine
    from netfix.inventory import load_inventory
    from netfix.sysctld import SYSCTL_CONF, boot_values, detect
    from netfix.sysctlfiles import BOOT_SCRIPT, persist_needs

    host = load_inventory(str(lab.inventory)).select(NODE)[0]
    facts = engine.gather(host, persist_needs(set(keys), PERSIST))
    boot = detect(facts.scripts[BOOT_SCRIPT])
    found = boot_values(boot.applier, facts.dirs, facts.files.get(SYSCTL_CONF), {}, set(keys))
    return {k: v.value for k, v in found.items()}


@pytest.mark.parametrize("applier", [Applier.SYSTEMD, Applier.PROCPS], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_predicted_boot_value_is_what_the_real_applier_writes(node, case, applier):
    lab, profile, rps = node
    _build(lab, CASES[case])
    _boot_as(lab, applier)
    plan = lab.plan_json("--profile", str(profile), "--limit", NODE)
    rows = {c["target"]: c for c in plan["hosts"][0]["changes"]}
    predicted = {k: rows[k]["boot"] for k in PROFILE}
    for k in PROFILE:  # the plan says which applier, and reads the node's files
        assert [w["name"] for w in rows[k]["writers"]][:1] == [str(applier)], rows[k]
    rp_keys = [RP.format(i) for i in rps]
    predicted |= _model(lab, rp_keys)

    _set(lab, SENTINEL | {k: RP_SENTINEL for k in rp_keys})
    cmd = str(SYSTEMD_SYSCTL) if applier is Applier.SYSTEMD else "sysctl --system"
    run = lab._labmod.node_exec(lab.nodes[NODE], cmd, check=False)
    applied = {k: lab.sysctl(NODE, k) for k in predicted}
    expected = {k: v if v is not None else (SENTINEL | {r: RP_SENTINEL for r in rp_keys})[k]
                for k, v in predicted.items()}
    APPLIED[case, applier] = applied
    assert applied == expected, f"{cmd} in {case}:\n{run.stdout}\n{run.stderr}"


def test_the_appliers_really_differ_on_these_trees():
    """Guard: the differential cases would also pass if both models agreed with one wrong
    reading; the two real binaries left different values on these trees."""
    if len(APPLIED) < 2 * len(CASES):
        pytest.skip("needs every case of the differential test in this run")
    sd, pp = Applier.SYSTEMD, Applier.PROCPS
    assert APPLIED["symlink-present", sd][SOMAX] == "2222"  # the case
    assert APPLIED["symlink-present", pp][SOMAX] == "1111"
    assert APPLIED["symlink-absent", sd][FIN] == "30"  # sysctl.conf not read at all
    assert APPLIED["globs-minus-slashes", sd][SOMAX] == SENTINEL[SOMAX]  # `-key` drops it
    assert APPLIED["globs-minus-slashes", pp][SOMAX] == "4096"
    lo = RP.format("lo")
    assert (APPLIED["same-value-reassigned", sd][lo],
            APPLIED["same-value-reassigned", pp][lo]) == ("2", "1")


# --------------------------------------------------------------------------- kubelet
# A fake kubelet (a sh script named kubelet: its /proc/PID/comm is "kubelet") runs in a
# lab node with real flags and a real KubeletConfiguration file. Only the plan is looked
# at: vm.* and kernel.* are host-global, read-only in a node, and never written by a
# test (apply's refusal of error rows is tests/unit/test_writer_kubelet.py).

KUBELET_CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
protectKernelDefaults: {protect}
"""


@pytest.fixture
def fake_kubelet(lab):
    """start(protect, *flags) -> runs the fake kubelet in node2; stopped by pid after."""
    exe = lab.dir / "kubelet"
    exe.write_text("#!/bin/sh\nwhile :; do sleep 1; done\n")  # killed by pid: gone in 1 s
    exe.chmod(0o755)
    pids = []

    def start(protect: bool, *flags: str) -> None:
        conf = KUBELET_CONFIG.format(protect=str(protect).lower())
        lab.sh("node2", f"mkdir -p /etc/kubernetes && printf %s {shlex.quote(conf)} > "
               "/etc/kubernetes/kubelet-config.yaml")
        args = " ".join(shlex.quote(a) for a in
                        ("--config=/etc/kubernetes/kubelet-config.yaml", "--v=2", *flags))
        pids.append(lab.sh("node2", f"setsid {exe} {args} >/dev/null 2>&1 < /dev/null & "
                                    "echo $!").strip())

    yield start
    for pid in pids:
        lab.sh("node2", f"kill {pid} 2>/dev/null; true")
    lab.sh("node2", "rm -rf /etc/kubernetes")
    exe.unlink()  # so that lab down removes the lab's dir


def _kubelet_rows(lab, tmp_path) -> dict[str, dict]:
    profile = tmp_path / "kubelet.yaml"
    profile.write_text("description: kubelet test\nsysctl:\n  vm.overcommit_memory: 2\n"
                       "  kernel.panic: 10\n  net.core.somaxconn: 4096\n")
    out = lab.netfix("plan", "--json", "--profile", str(profile), "--limit", "node2",
                     check_rc=None).stdout
    (tmp_path / "plan.json").write_text(out)
    load_plan(tmp_path / "plan.json")  # the writers and error rows fit the plan schema
    return {c["target"]: c for c in json.loads(out)["hosts"][0]["changes"]}


def test_protected_kubelet_makes_the_plan_an_error_row(lab, fake_kubelet, tmp_path):
    host_value = Path("/proc/sys/vm/overcommit_memory").read_text()
    fake_kubelet(True)
    rows = _kubelet_rows(lab, tmp_path)
    om = rows["vm.overcommit_memory"]
    assert "error" in om["flags"], om
    assert {"code": "error", "detail": "kubelet"}.items() <= \
        next(r for r in om["reasons"] if r["code"] == "error").items()
    assert "/etc/kubernetes/kubelet-config.yaml: protectKernelDefaults: true" in \
        " ".join(om["notes"])
    assert {"name": "kubelet", "when": "start", "value": None}.items() <= \
        next(w for w in om["writers"] if w["name"] == "kubelet").items()
    assert "error" not in rows["kernel.panic"]["flags"]  # the value kubelet requires
    assert not any(w["name"] == "kubelet" for w in rows["net.core.somaxconn"]["writers"])
    assert Path("/proc/sys/vm/overcommit_memory").read_text() == host_value


def test_unprotected_kubelet_is_another_writer_not_an_error(lab, fake_kubelet, tmp_path):
    fake_kubelet(True, "--protect-kernel-defaults=false")  # the flag beats the file
    om = _kubelet_rows(lab, tmp_path)["vm.overcommit_memory"]
    assert "error" not in om["flags"] and "other-writer" in om["flags"], om
    assert om["wins"] == "kubelet"
    assert "flag --protect-kernel-defaults=false" in " ".join(om["notes"])
