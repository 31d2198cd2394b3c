"""Other writers on real lab nodes: fake kube-proxy executables of three versions with
different behaviour (docs/writers.md "kube-proxy"), run with real flags and a real
KubeProxyConfiguration file, writing what that version writes into the node's /proc/sys.

Invariants: the plan names kube-proxy with the version its binary prints and flags
`other-writer` exactly on the keys that version undoes; after apply and a kube-proxy
restart, every timeout holds what the plan said would win; drift then names kube-proxy,
its version and the flip-back as one conflict per key. conntrack max and buckets are
host-global and read-only in a lab node's namespace (DOMAIN.md): for them only the plan's
modelled writer is asserted. Each test rolls back and proves the node is as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

NETFIX = str(Path(sys.executable).with_name("netfix"))
NODE = "node2"
_P = "net.netfilter.nf_conntrack_"
MAX, EST, CW = _P + "max", _P + "tcp_timeout_established", _P + "tcp_timeout_close_wait"
UDP, UDPS = _P + "udp_timeout", _P + "udp_timeout_stream"
TIMEOUTS = (EST, CW, UDP, UDPS)
PROFILE = """\
conntrack:
  max: 262144
  timeouts: {tcp_established: 3600, tcp_close_wait: 7200, udp: 20, udp_stream: 90}
"""
APPLIED = {EST: "3600", CW: "7200", UDP: "20", UDPS: "90"}

# A kube-proxy stand-in: `--version` like the real binary; otherwise it takes the real
# conntrack flags or a KubeProxyConfiguration (--config wins), writes the per-namespace
# timeouts the way its version does, and keeps running as a process named kube-proxy.
FAKE = r"""#!/bin/sh
V=@VERSION@
[ "$1" = --version ] && { echo "Kubernetes v$V"; exit 0; }
minor=${V#1.}; minor=${minor%%.*}
est=24h0m0s cw=1h0m0s udp=0s udps=0s cfg=
for a in "$@"; do
  case "$a" in
    --config=*) cfg=${a#--config=} ;;
    --conntrack-tcp-timeout-established=*) est=${a#*=} ;;
    --conntrack-tcp-timeout-close-wait=*) cw=${a#*=} ;;
    --conntrack-udp-timeout=*) udp=${a#*=} ;;
    --conntrack-udp-timeout-stream=*) udps=${a#*=} ;;
  esac
done
field() { sed -n "s/^ *$1: *//p" "$cfg" | head -n1; }
if [ -n "$cfg" ]; then
  est=$(field tcpEstablishedTimeout); est=${est:-24h0m0s}
  cw=$(field tcpCloseWaitTimeout); cw=${cw:-1h0m0s}
  udp=$(field udpTimeout); udp=${udp:-0s}
  udps=$(field udpStreamTimeout); udps=${udps:-0s}
fi
secs() {
  d=$1 t=0
  case "$d" in *h*) t=$((t + ${d%%h*} * 3600)); d=${d#*h} ;; esac
  case "$d" in *m*) t=$((t + ${d%%m*} * 60)); d=${d#*m} ;; esac
  case "$d" in *s) t=$((t + ${d%s})) ;; esac
  echo "$t"
}
put() {
  want=$(secs "$2"); [ "$want" -gt 0 ] || return 0
  f=/proc/sys/net/netfilter/nf_conntrack_$1; cur=$(cat "$f")
  if [ "$minor" -ge 22 ] && [ "$minor" -le 28 ]; then [ "$cur" -lt "$want" ] || return 0; fi
  [ "$cur" = "$want" ] || echo "$want" > "$f"
}
put tcp_timeout_established "$est"
put tcp_timeout_close_wait "$cw"
if [ "$minor" -ge 29 ]; then put udp_timeout "$udp"; put udp_timeout_stream "$udps"; fi
echo started > "$0.started"
while :; do sleep 60; done
"""


@dataclass
class Case:
    version: str
    flags: tuple[str, ...]
    config: str  # KubeProxyConfiguration body, "" for flags only
    undone: set[str]  # keys this version writes over netfix's values
    left: set[str]  # keys it has a value for but leaves as netfix set them
    max_leaves: bool  # raise-only for max (netfix's 262144 is above kube-proxy's max)


CASES = [
    # 1.22-1.28 raise every key only: established 3600 -> 86400, close_wait 7200 stays,
    # max 262144 stays; UDP timeouts are not in this version's config.
    Case("1.25.16", ("--conntrack-tcp-timeout-close-wait=1h0m0s",), "", {EST}, {CW}, True),
    # 1.29-1.35 write whatever differs, UDP included; established agrees with netfix.
    Case("1.31.2", (), """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpEstablishedTimeout: 1h0m0s
  tcpCloseWaitTimeout: 1h0m0s
  udpTimeout: 45s
""", {CW, UDP}, {EST}, False),
    # >= 1.38 caps and raises max only (so not flagged), timeouts whenever they differ.
    Case("1.38.0", ("--conntrack-tcp-timeout-established=99s",), """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  tcpEstablishedTimeout: 2h0m0s
  udpStreamTimeout: 2m0s
""", {EST, CW, UDPS}, set(), True),
]


def by_target(plan: dict) -> dict[str, dict]:
    return {c["target"]: c for c in plan["hosts"][0]["changes"]}


def kube_proxy(change: dict) -> list[dict]:
    return [w for w in change["writers"] if w["name"] == "kube-proxy"]


def start_fake(lab, path, case: Case) -> str:
    args = list(case.flags)
    if case.config:
        args.append(f"--config={path}.yaml")
    cmd = " ".join([str(path), *args])
    lab.sh(NODE, f"rm -f {path}.started")
    pid = lab.sh(NODE, f"setsid {cmd} >/dev/null 2>&1 </dev/null & echo $!").strip()
    for _ in range(100):  # until it has written its values, as kube-proxy does at start
        if lab.sh(NODE, f"test -e {path}.started && echo y", check=False).strip() == "y":
            return pid
        time.sleep(0.05)
    raise AssertionError(f"fake kube-proxy {case.version} did not start")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.version)
def test_kube_proxy_versions_planned_applied_and_drift_named(lab, tmp_path, case: Case):
    profile = tmp_path / "kp.yaml"
    profile.write_text(PROFILE)
    bindir = lab.dir / f"writers-{case.version}"  # the node sees the lab dir
    bindir.mkdir()
    fake = bindir / "kube-proxy"
    fake.write_text(FAKE.replace("@VERSION@", case.version))
    fake.chmod(0o755)
    if case.config:
        (bindir / "kube-proxy.yaml").write_text(case.config)
    before = {k: lab.sysctl(NODE, k) for k in TIMEOUTS}
    pid = ""
    try:
        pid = start_fake(lab, fake, case)
        lab.sh(NODE, " ; ".join(f"sysctl -qw {k}={v}" for k, v in before.items()))  # undo it
        plan = lab.plan_json("--profile", str(profile), "--limit", NODE)
        ch = by_target(plan)
        cpus = plan["hosts"][0]["info"]["cpus"]
        for key in TIMEOUTS + (MAX,):
            writers = kube_proxy(ch[key])  # other writer models (boot) may list theirs
            flagged = "other-writer" in ch[key]["flags"]
            assert flagged == (key in case.undone or (key == MAX and not case.max_leaves)), \
                (key, ch[key])
            if key in case.undone | case.left or key == MAX:
                [w] = writers
                assert (w["name"], w["version"], w["when"]) == ("kube-proxy", case.version,
                                                                 "start")
                assert w["source"].startswith(f"pid {pid}") and w["wins"] == flagged
                assert (ch[key]["wins"] == "kube-proxy") == flagged
            else:
                assert writers == [] and ch[key]["wins"] != "kube-proxy", (key, writers)
        # max is read-only here: the modelled writer only (max(32768 x CPUs, 131072)).
        assert kube_proxy(ch[MAX])[0]["value"] == str(max(32768 * cpus, 131072))
        assert ch[MAX]["action"] != "update"  # read-only (or already 262144) here
        table = lab.netfix("plan", "--profile", str(profile), "--limit", NODE,
                           check_rc=None).stdout
        assert f"kube-proxy {case.version} at start" in table and "wins:" in table

        lab.netfix("apply", "--yes", "--profile", str(profile), "--limit", NODE)
        assert {k: lab.sysctl(NODE, k) for k in TIMEOUTS} == APPLIED
        # kube-proxy "restarts": its start time must be after the transaction's, and
        # /proc/stat's btime counts whole seconds.
        lab.sh(NODE, f"kill -- -{pid}", check=False)
        time.sleep(1.5)
        pid = start_fake(lab, fake, case)
        live = {k: lab.sysctl(NODE, k) for k in TIMEOUTS}
        predicted = {k: next((w["value"] for w in kube_proxy(ch[k]) if w["wins"]), APPLIED[k])
                     for k in TIMEOUTS}
        assert live == predicted  # the plan's verdict is what the node ends with

        p = lab.netfix("drift", "--json", "--profile", str(profile), "--limit", NODE,
                       check_rc=2 if case.undone else 0)
        items = json.loads(p.stdout)["hosts"][0]["items"]
        found = {(i["target"], i["kind"]): i for i in items}
        for key in case.undone:
            item = found[(key, "other-writer")]
            assert item["detail"].startswith("conflict: netfix set"), item
            assert f"kube-proxy {case.version} (pid {pid}" in item["detail"]
            assert (key, "live") not in found  # reported once
            assert item["actual"] == live[key]
        assert not any(t in case.left for t, _ in found)
    finally:
        if pid:
            lab.sh(NODE, f"kill -- -{pid}", check=False)
        lab.netfix("rollback", "--yes", "--limit", NODE, "--force", check_rc=None)
        for path in sorted(bindir.iterdir()):
            path.unlink()
        bindir.rmdir()
    assert {k: lab.sysctl(NODE, k) for k in TIMEOUTS} == before


def test_buckets_raise_only_against_exact_4_to_1_on_the_host_namespace(tmp_path):
    """Read-only, on this machine's own namespace (where buckets is writable): exact 4:1
    with max unchanged plans a smaller table and says what that costs; raise-only keeps
    the table the kernel sized. Nothing is applied."""
    root = Path("/proc/sys/net/netfilter")
    if not (root / "nf_conntrack_buckets").exists():
        pytest.skip("nf_conntrack is not loaded on this machine")
    cur_max = int((root / "nf_conntrack_max").read_text())
    cur_buckets = int((root / "nf_conntrack_buckets").read_text())
    (tmp_path / "inv.yaml").write_text('hosts:\n  "@local": {}\n')

    def plan(extra: str) -> dict:
        (tmp_path / "p.yaml").write_text(f"conntrack:\n  max: {cur_max}\n{extra}")
        p = subprocess.run([NETFIX, "plan", "--json", "-i", str(tmp_path / "inv.yaml"),
                            "--profile", str(tmp_path / "p.yaml")],
                           capture_output=True, text=True)
        assert p.returncode in (0, 2), p.stderr
        return by_target(json.loads(p.stdout))

    exact = plan("")[_P + "buckets"]
    assert exact["desired"] == str(cur_max // 4)
    shrinks = cur_buckets > cur_max // 4
    notes = " ".join(exact["notes"])
    assert ("lowers buckets" in notes) == shrinks
    if shrinks:
        saved = (cur_buckets - cur_max // 4) * 8 / 2**20
        assert f"from {cur_buckets} to {cur_max // 4}" in notes and f"{saved:.1f} MiB" in notes
    kept = plan("  buckets: raise-only\n")[_P + "buckets"]
    assert kept["desired"] == str(max(cur_buckets, cur_max // 4))
    assert kept["action"] == ("ok" if shrinks else exact["action"])
