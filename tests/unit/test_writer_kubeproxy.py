"""The kube-proxy version model (netfix/writers/kubeproxy.py) against every row of the
table in docs/writers.md "kube-proxy", the fact parser, the plan annotation, the table's
writers note, and drift naming the writer (and the flip-back conflict)."""

from __future__ import annotations

import pytest

from netfix import drift, review
from netfix.facts import Facts, Value
from netfix.journal import Step, Tx
from netfix.knobs import Context, conntrack
from netfix.plan import OTHER_WRITER, HostPlan, Plan
from netfix.render import writers_note
from netfix.util import sysctl_path
from netfix.writers import kubeproxy as kp

CTX = Context("test")
MAX, BUCKETS, HASHSIZE = kp.MAX, kp.BUCKETS, kp.HASHSIZE
EST, CW, UDP, UDPS, LIB = kp.EST, kp.CLOSE_WAIT, kp.UDP, kp.UDP_STREAM, kp.BE_LIBERAL


def output(version: str = "", *args: str, config: str = "", start: int | None = None,
           image: str = "") -> str:
    lines = ["PID 4242", "ARG /usr/local/bin/kube-proxy", *(f"ARG {a}" for a in args)]
    if config:
        lines += ["ARG --config=/var/lib/kube-proxy/config.conf",
                  "CONFIG /var/lib/kube-proxy/config.conf",
                  *(f"| {line}" for line in config.strip("\n").splitlines())]
    if start is not None:
        lines += [f"START {start}", "BTIME 1764460800", "HZ 100"]  # boot 2025-11-30T00:00Z
    if version:
        lines.append(f"VERSION Kubernetes v{version}")
    if image:
        lines.append(f"IMAGE {image}")
    return "\n".join(lines) + "\n"


def model(version: str, *args: str, config: str = "", cpus: int = 4,
          state: dict[str, int] | None = None) -> dict[str, tuple[int, bool]]:
    k = kp.parse(output(version, *args, config=config))
    return {key: (w.value, w.writes) for key, w in kp.writes(k, cpus, state or {}).items()}


# netfix has applied: max 262144, buckets 65536, established 3600, close_wait 7200, udp 20.
NETFIX = {MAX: 262144, BUCKETS: 65536, HASHSIZE: 65536, EST: 3600, CW: 7200, UDP: 20,
          UDPS: 60, LIB: 0}
UDP_CONFIG = """
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  udpTimeout: 45s
  udpStreamTimeout: 2m0s
  tcpBeLiberal: true
mode: iptables
"""


# ------------------------------------------------------------------ the version table


def test_before_1_22_writes_everything_that_differs_and_knows_no_udp():
    m = model("1.21.14", "--conntrack-udp-timeout=45s", state=NETFIX)
    assert m[MAX] == (131072, True)  # max(32768 x 4, 131072), lowers netfix's 262144
    assert m[EST] == (86400, True) and m[CW] == (3600, True)  # lowers close_wait 7200
    assert m[BUCKETS] == (32768, False)  # hashsize only ever raised: 65536 stays
    assert UDP not in m and LIB not in m


def test_1_22_to_1_28_only_raise_every_key():
    m = model("1.25.16", state=NETFIX)
    assert m[MAX] == (131072, False)  # 262144 is higher: left alone
    assert m[EST] == (86400, True)  # 3600 is lower: raised to 86400
    assert m[CW] == (3600, False)  # 7200 is higher: left alone
    assert model("1.22.0", state=NETFIX)[CW] == (3600, False)
    assert model("1.28.15", state=NETFIX)[CW] == (3600, False)


def test_1_29_to_1_35_write_whenever_they_differ_and_add_udp():
    m = model("1.31.2", config=UDP_CONFIG, state=NETFIX)
    assert m[MAX] == (131072, True) and m[CW] == (3600, True)
    assert m[UDP] == (45, True) and m[UDPS] == (120, True) and m[LIB] == (1, True)
    assert model("1.29.0", "--conntrack-udp-timeout=20s", state=NETFIX)[UDP] == (20, False)
    assert UDP not in model("1.35.1", state=NETFIX)  # udpTimeout defaults to 0: hands off


def test_1_36_caps_max_and_still_lowers_it():
    big = {**NETFIX, MAX: 2097152}
    assert model("1.36.0", cpus=64, state=big)[MAX] == (1048576, True)  # 64 x 32768 capped
    assert model("1.35.4", cpus=64, state=big)[MAX] == (2097152, False)  # no cap before 1.36
    assert model("1.37.2", cpus=4, state=NETFIX)[MAX] == (131072, True)


def test_cap_is_checked_before_the_floor_as_the_source_does():
    assert model("1.36.0", "--conntrack-min=2000000", cpus=64)[MAX][0] == kp.CAP
    assert model("1.36.0", "--conntrack-min=2000000", cpus=2)[MAX][0] == 2000000


def test_1_38_caps_and_raises_max_only_but_timeouts_still_differ():
    assert model("1.38.0", cpus=64, state={**NETFIX, MAX: 2097152})[MAX] == (1048576, False)
    assert model("1.38.0", cpus=64, state={**NETFIX, MAX: 524288})[MAX] == (1048576, True)
    m = model("1.38.1", state=NETFIX)
    assert m[MAX] == (131072, False) and m[CW] == (3600, True) and m[EST] == (86400, True)


def test_hashsize_is_raised_to_max_over_4_only_when_smaller():
    assert model("1.31.2", state={BUCKETS: 262144})[BUCKETS] == (32768, False)
    assert model("1.31.2", state={BUCKETS: 16384})[BUCKETS] == (32768, True)
    assert model("1.25.0", "--conntrack-max-per-core=262144", state={HASHSIZE: 65536})[
        HASHSIZE] == (262144, True)


def test_unknown_version_is_modelled_as_always_writing():
    k = kp.parse(output(""))
    assert k.version == "" and k.behaviour is kp.UNKNOWN
    assert kp.writes(k, 4, NETFIX)[MAX].writes


def test_max_per_core_zero_and_zero_durations_leave_keys_alone():
    m = model("1.31.2", "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0s",
              state=NETFIX)
    assert MAX not in m and BUCKETS not in m and EST not in m and CW in m


# ------------------------------------------------------------------ reading the facts


def test_config_file_beats_flags_and_newer_linux_block_is_read():
    cfg = "kind: KubeProxyConfiguration\nlinux:\n  conntrack:\n    maxPerCore: 65536\n" \
          "    tcpCloseWaitTimeout: 0s\nmode: nftables\n"
    k = kp.parse(output("1.33.0", "--conntrack-max-per-core=1", config=cfg))
    assert k.settings["maxPerCore"] == "65536" and k.settings["tcpCloseWaitTimeout"] == "0s"
    assert k.settings["tcpEstablishedTimeout"] == "24h0m0s"  # default
    assert k.source == "pid 4242, /var/lib/kube-proxy/config.conf"


def test_version_from_image_tag_and_start_time_from_stat():
    k = kp.parse(output("", image="registry.k8s.io/kube-proxy:v1.30.4", start=3612300))
    assert k.version == "1.30.4" and k.minor == (1, 30)
    assert drift.stamp(k.started) == "2025-11-30T10:02Z"  # btime + 36123 s


@pytest.mark.parametrize(("text", "seconds"), [("24h0m0s", 86400), ("1h", 3600),
                                               ("90s", 90), ("3600", 3600), ("2m0s", 120),
                                               ("bogus", None), ("1x", None)])
def test_go_durations(text, seconds):
    assert kp.duration(text) == seconds


def test_needs_reads_kube_proxy_only_when_the_profile_sets_what_it_writes():
    assert kp.NAME in kp.needs({"conntrack": {"max": 131072}}).scripts
    assert kp.NAME in kp.needs({"sysctl": {"net/netfilter/nf_conntrack_tcp_be_liberal": 1}}).scripts
    assert not kp.needs({"sysctl": {"net.core.somaxconn": 4096}}).scripts


# ------------------------------------------------------------------ plan annotation


def node(kube_proxy: str, values: dict[str, str]) -> Facts:
    f = Facts(host="n1", cpus=4, mem_bytes=8 * 2**30, kernel="6.18.0",
              scripts={kp.NAME: kube_proxy})
    for key, value in values.items():
        path = key if key.startswith("/") else sysctl_path(key)
        f.values[path] = Value(True, True, value)
    return f


LIVE = {MAX: "262144", BUCKETS: "65536", conntrack.COUNT: "10", EST: "432000",
        CW: "60", UDP: "30"}
SECTION = {"max": 262144, "timeouts": {"tcp_established": 3600, "tcp_close_wait": 7200,
                                       "udp": 20}}


def planned(version: str, *args: str, config: str = "", values=None):
    f = node(output(version, *args, config=config, start=3612300), values or LIVE)
    changes = conntrack.diff(SECTION, f, CTX)
    kp.annotate(changes, f)
    return {c.target: c for c in changes}, f


def mine(c):
    return [w for w in c.writers if w.name == kp.NAME]


def test_raise_only_kube_proxy_is_not_flagged_for_a_max_it_leaves_alone():
    ch, _ = planned("1.38.0")
    mx = ch[MAX]
    assert OTHER_WRITER not in mx.flags and mx.wins == "netfix"
    assert [(w.name, w.when, w.value, w.version, w.wins) for w in mine(mx)] == \
        [("kube-proxy", "start", "131072", "1.38.0", False)]
    assert OTHER_WRITER in ch[CW].flags and ch[CW].wins == "kube-proxy"  # 3600 over 7200


def test_always_writing_version_is_flagged_with_version_pid_and_fix():
    ch, _ = planned("1.31.2", config=UDP_CONFIG)
    mx, udp = ch[MAX], ch[UDP]
    assert OTHER_WRITER in mx.flags and mx.wins == "kube-proxy"
    reason = mx.reason(OTHER_WRITER)
    assert reason.detail == "kube-proxy" and "kube-proxy 1.31.2 (pid 4242)" in reason.message
    assert "conntrack.maxPerCore: 0" in reason.message and "config.conf" in reason.message
    assert OTHER_WRITER in udp.flags and "udpTimeout: 0s" in udp.reason(OTHER_WRITER).message
    assert mine(udp)[0].source == "pid 4242, /var/lib/kube-proxy/config.conf"
    assert mine(ch[EST])[0].value == "86400"


def test_agreeing_values_are_not_flagged():
    ch, _ = planned("1.31.2", "--conntrack-tcp-timeout-established=1h0m0s",
                    "--conntrack-tcp-timeout-close-wait=2h0m0s", "--conntrack-min=262144")
    for key in (MAX, EST, CW):
        assert OTHER_WRITER not in ch[key].flags and ch[key].wins == "netfix", key
    assert UDP in ch and not mine(ch[UDP])  # udpTimeout 0: kube-proxy leaves it


def test_table_note_shows_the_verdict_and_the_writer():
    ch, _ = planned("1.38.0")
    for c in ch.values():  # only kube-proxy here: other writer models have tests of their own
        c.writers = mine(c)
    assert writers_note(ch[MAX]) == \
        "wins:netfix (kube-proxy 1.38.0 at start: 131072 (leaves netfix's))"
    assert writers_note(ch[CW]) == "wins:kube-proxy (kube-proxy 1.38.0 at start: 3600)"


# ------------------------------------------------------------------ drift naming


def apply_tx(when: float, target: str = EST) -> Tx:
    return Tx("20251130T090000Z-aaaaaa", "apply", "n1", "test",
              [Step("value", sysctl_path(target), "432000", "3600", knob="conntrack",
                    target=target)], time=when, status="applied 2025-11-30T09:00:00Z")


def drift_of(version: str, applied_at: float, live_est: str = "86400"):
    ch, f = planned(version, values={**LIVE, EST: live_est})
    hp = HostPlan("n1", "test", list(ch.values()))
    return drift.classify(hp, [apply_tx(applied_at)], started={kp.NAME: kp.started(f)})


def test_value_flipped_back_after_apply_is_one_conflict_with_the_fix():
    start = kp.parse(output("1.31.2", start=3612300)).started
    hd = drift_of("1.31.2", applied_at=start - 600)
    items = [i for i in hd.items if i.target == EST]
    assert [i.kind for i in items] == ["other-writer"]  # once, not also "live"
    d = items[0].detail
    assert d.startswith("conflict: netfix set 3600 at 2025-11-30T09:52Z")
    assert "kube-proxy 1.31.2 (pid 4242) started at 2025-11-30T10:02Z and wrote 86400" in d
    assert "tcpEstablishedTimeout: 0s" in d


def test_value_written_by_a_writer_started_before_apply_names_it_without_conflict():
    start = kp.parse(output("1.31.2", start=3612300)).started
    hd = drift_of("1.31.2", applied_at=start + 600)
    item = next(i for i in hd.items if i.target == EST)
    assert item.kind == "other-writer" and item.detail == \
        "kube-proxy 1.31.2 wrote 86400 at 2025-11-30T10:02Z (process start time)"


def test_live_value_no_writer_writes_stays_plain_live():
    hd = drift_of("1.31.2", applied_at=0, live_est="5000")
    kinds = [i.kind for i in hd.items if i.target == EST]
    assert kinds == ["live", "other-writer"]  # drifted by hand; kube-proxy will still undo
    assert hd.items[[i.target for i in hd.items].index(EST)].detail == \
        "live value differs from the profile"


def test_fleet_table_groups_hosts_by_writer_version_not_by_pid():
    def host(name: str, version: str, pid: str) -> HostPlan:
        f = node(output(version).replace("PID 4242", f"PID {pid}"), LIVE)
        changes = conntrack.diff(SECTION, f, CTX)
        kp.annotate(changes, f)
        return HostPlan(name, "test", changes)

    same = Plan([host("a", "1.31.2", "1"), host("b", "1.31.2", "2")])
    assert [len(g.plans) for g in review.group_hosts(same)] == [2]
    mixed = Plan([host("a", "1.31.2", "1"), host("b", "1.29.0", "1")])  # same flags
    assert [len(g.plans) for g in review.group_hosts(mixed)] == [1, 1]
