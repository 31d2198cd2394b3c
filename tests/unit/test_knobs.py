"""Diff logic of the sysctl and conntrack knobs, fed with parsed fact-script output."""

from __future__ import annotations

import base64

from netfix.facts import DirEntry, Facts, Value, parse
from netfix.knobs import Context, conntrack, sysctl
from netfix.plan import NOT_SETTABLE, OK, OTHER_WRITER, SHADOWED, SKIP, UPDATE
from netfix.sysctlfiles import resolve
from netfix.util import normalize_key, sysctl_path
from netfix.writers import kubeproxy

CTX = Context("test")


def facts(values: dict[str, tuple[str | None, bool]], **kw) -> Facts:
    f = Facts(host="h", cpus=4, mem_bytes=8 * 2**30, **kw)
    for key, (value, writable) in values.items():
        path = key if key.startswith("/") else sysctl_path(key)
        f.values[path] = Value(value is not None or writable, writable, value)
    return f


def by_target(changes):
    return {c.target: c for c in changes}


def test_sysctl_path_and_key_forms():
    assert sysctl_path("net.ipv4.conf.eth0/100.rp_filter") == \
        "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    assert normalize_key("net/ipv4/conf/eth0.100/rp_filter") == "net.ipv4.conf.eth0/100.rp_filter"
    assert normalize_key("-net.core.somaxconn ") == "net.core.somaxconn"


def test_sysctl_update_ok_and_multi_value_normalised():
    f = facts({"net.core.somaxconn": ("4096", True),
               "net.ipv4.tcp_rmem": ("4096\t131072  6291456", True)})
    ch = by_target(sysctl.diff({"net.core.somaxconn": 8192,
                                "net.ipv4.tcp_rmem": "4096 131072 6291456"}, f, CTX))
    assert ch["net.core.somaxconn"].action == UPDATE
    assert ch["net.core.somaxconn"].ops[0].new == "8192"
    assert ch["net.ipv4.tcp_rmem"].action == OK
    persist = ch[sysctl.PERSIST]
    new = base64.b64decode(persist.ops[0].new).decode()
    assert "net.core.somaxconn = 8192\n" in new and "net.ipv4.tcp_rmem = 4096 131072 6291456" in new


def test_only_raise_and_only_lower():
    f = facts({"net.core.somaxconn": ("8192", True),
               "net.ipv4.tcp_max_syn_backlog": ("512", True)})
    ch = by_target(sysctl.diff({"net.core.somaxconn": ">=4096",
                                "net.ipv4.tcp_max_syn_backlog": ">=4096"}, f, CTX))
    assert ch["net.core.somaxconn"].action == OK  # already higher: left alone
    assert ch["net.ipv4.tcp_max_syn_backlog"].desired == "4096"
    assert resolve("<=100", "200") == ("100", None)
    assert resolve("<=100", "50") == ("50", None)
    assert resolve(">=5", "bbr")[0] is None


def test_absent_and_read_only_keys_are_reported_not_applied():
    f = facts({"net.core.netdev_max_backlog": (None, False),
               "net.netfilter.nf_conntrack_max": ("262144", False)})
    ch = by_target(sysctl.diff({"net.core.netdev_max_backlog": 5000,
                                "net.netfilter.nf_conntrack_max": 1}, f, CTX))
    for key in ("net.core.netdev_max_backlog", "net.netfilter.nf_conntrack_max"):
        assert ch[key].action == SKIP and NOT_SETTABLE in ch[key].flags and not ch[key].ops
    assert "absent" in ch["net.core.netdev_max_backlog"].notes[0]
    assert "read-only" in ch["net.netfilter.nf_conntrack_max"].notes[0]
    assert ch[sysctl.PERSIST].desired == "absent"  # nothing settable, nothing persisted


def test_shadowed_by_later_sorting_file():
    dirs = {"/etc/sysctl.d": {"99-kubespray.conf": DirEntry(b"net.core.somaxconn=1024\n")},
            "/usr/lib/sysctl.d": {"99-kubespray.conf": DirEntry(b"net.core.somaxconn=1\n")}}
    f = facts({"net.core.somaxconn": ("128", True)}, dirs=dirs)
    ch = by_target(sysctl.diff({"net.core.somaxconn": 4096}, f, CTX))
    c = ch["net.core.somaxconn"]
    assert SHADOWED in c.flags and c.boot == "1024"
    assert "/etc/sysctl.d/99-kubespray.conf" in c.notes[0]


def test_conntrack_auto_max_and_buckets():
    value, why = conntrack.auto_max({}, cpus=8, mem_bytes=64 * 2**30)
    assert value == 262144 and "32768 x 8" in why
    value, why = conntrack.auto_max({"auto": {"max_memory_percent": 1}}, 8, 2**30)
    assert value < 262144 and "capped" in why and value % 4 == 0


def test_conntrack_in_namespace_applies_timeouts_only():
    f = facts({conntrack.MAX: ("262144", False), conntrack.BUCKETS: ("65536", False),
               conntrack.TIMEOUTS["udp"]: ("30", True), conntrack.HASHSIZE: ("65536", False),
               conntrack.COUNT: ("12", False)})
    ch = by_target(conntrack.diff({"max": 524288, "timeouts": {"udp": 15}}, f, CTX))
    assert ch[conntrack.MAX].action == SKIP and NOT_SETTABLE in ch[conntrack.MAX].flags
    assert "read-only (host-global" in ch[conntrack.BUCKETS].notes[0]
    assert ch[conntrack.BUCKETS].action == SKIP
    assert ch[conntrack.TIMEOUTS["udp"]].action == UPDATE
    assert ch[conntrack.MODPROBE].desired == "absent"  # hashsize not settable here
    assert ch[conntrack.MODULES_LOAD].action == UPDATE  # timeouts need the module at boot
    content = base64.b64decode(ch[conntrack.PERSIST].ops[0].new).decode()
    assert "udp_timeout = 15" in content and "nf_conntrack_max" not in content


def test_conntrack_module_not_loaded_says_so_and_what_to_do():
    # No nf_conntrack: none of its keys exist (a fresh node before kube-proxy starts).
    f = facts({conntrack.HASHSIZE: (None, False)})
    ch = by_target(conntrack.diff({"max": 262144, "timeouts": {"udp": 15}}, f, CTX))
    for key in (conntrack.MAX, conntrack.BUCKETS, conntrack.TIMEOUTS["udp"]):
        assert ch[key].action == SKIP and NOT_SETTABLE in ch[key].flags
        assert ch[key].notes[0].startswith("not settable here: nf_conntrack is not loaded")
        assert "modprobe nf_conntrack" in ch[key].notes[0]
        assert not any("read-only" in n or "absent" in n for n in ch[key].notes)
    # Nothing persisted for keys that were never compared.
    assert ch[conntrack.PERSIST].desired == "absent"


def test_conntrack_host_uses_hashsize_param_when_buckets_sysctl_read_only():
    f = facts({conntrack.MAX: ("65536", True), conntrack.BUCKETS: ("16384", False),
               conntrack.HASHSIZE: ("16384", True), conntrack.COUNT: ("60000", False)})
    ch = by_target(conntrack.diff({"max": 262144}, f, CTX))
    assert ch[conntrack.HASHSIZE].ops[0].new == "65536"
    assert ch[conntrack.MAX].ops[0].new == "262144"
    notes = " ".join(ch[conntrack.MAX].notes)
    assert "MiB" in notes and "above 75%" in notes
    mod = base64.b64decode(ch[conntrack.MODPROBE].ops[0].new).decode()
    assert "options nf_conntrack hashsize=65536" in mod


KP_OUTPUT = """PID 4242
ARG /usr/local/bin/kube-proxy
ARG --config=/var/lib/kube-proxy/config.conf
ARG --conntrack-max-per-core=0
CONFIG /var/lib/kube-proxy/config.conf
| apiVersion: kubeproxy.config.k8s.io/v1alpha1
| conntrack:
|   maxPerCore: 65536
|   min: 131072
|   tcpEstablishedTimeout: 24h0m0s
|   tcpCloseWaitTimeout: 0s
| mode: iptables
"""


def test_kube_proxy_config_beats_flags_and_is_flagged():
    # The model lives in netfix/writers/kubeproxy.py (tests/unit/test_writer_kubeproxy.py);
    # this keeps the knob + writer pair honest on the conntrack rows.
    kp = kubeproxy.parse(KP_OUTPUT)
    assert kubeproxy.conntrack_max(kp, cpus=4) == 262144 and kp.pid == "4242"
    assert (kp.settings["tcpEstablishedTimeout"], kp.settings["tcpCloseWaitTimeout"]) == \
        ("24h0m0s", "0s")
    f = facts({conntrack.MAX: ("131072", True), conntrack.BUCKETS: ("32768", True),
               conntrack.TIMEOUTS["tcp_established"]: ("432000", True),
               conntrack.TIMEOUTS["tcp_close_wait"]: ("60", True)},
              scripts={"kube-proxy": KP_OUTPUT})
    changes = conntrack.diff({"max": 524288, "timeouts": {"tcp_established": 3600,
                                                          "tcp_close_wait": 60}}, f, CTX)
    kubeproxy.annotate(changes, f)
    ch = by_target(changes)
    assert OTHER_WRITER in ch[conntrack.MAX].flags
    assert "pid 4242" in " ".join(ch[conntrack.MAX].notes)
    assert OTHER_WRITER in ch[conntrack.TIMEOUTS["tcp_established"]].flags
    assert OTHER_WRITER not in ch[conntrack.TIMEOUTS["tcp_close_wait"]].flags  # 0s: hands off


def test_kube_proxy_max_per_core_zero_leaves_max_alone():
    kp = kubeproxy.parse("PID 1\nARG kube-proxy\nARG --conntrack-max-per-core=0\n")
    assert kubeproxy.conntrack_max(kp, 4) == 0


def test_parse_recorded_fact_output():
    blob = base64.b64encode(b"a=1\nxyz").decode()
    out = "\n".join([
        "@@NF\thost\thostname\t\tnode1", "@@NF\thost\tcpus\t\t0-3,6", "@@NF\thost\tuid\t\t0",
        "@@NF\thost\tmem_kb\t\t2048", "@@NF\ttool\tethtool\tno\t",
        "@@NF\tv\t/proc/sys/net/ipv4/tcp_rmem\trw\t", "@@NF\tv\t/proc/sys/x\tabsent\t",
        "@@NF\tvals\tbegin\t \t", "/proc/sys/net/ipv4/tcp_rmem:4096\t131072\t6291456",
        "@@NF\tvals\tend\t \t",
        "@@NF\tf\t/etc/sysctl.d/10-m.conf\tmasked\t", "@@NF\tf\t/etc/x.conf\tabsent\t",
        "@@NF\tsize\t/etc/sysctl.d/a.conf\t4\t", "@@NF\tsize\t/etc/b\t3\t",
        f"@@NF\tblob\t\t\t{blob}", "@@NF\td\t/run/sysctl.d\tlisted\t",
    ])
    f = parse("node1", out)
    assert (f.hostname, f.cpus, f.uid, f.mem_bytes) == ("node1", 5, 0, 2048 * 1024)
    assert f.tools == {"ethtool": False}
    assert f.sysctl("net.ipv4.tcp_rmem").value == "4096 131072 6291456"
    assert not f.sysctl("x").exists
    assert f.files["/etc/sysctl.d/a.conf"] == b"a=1\n" and f.files["/etc/b"] == b"xyz"
    assert f.files["/etc/x.conf"] is None
    assert f.dirs["/etc/sysctl.d"]["10-m.conf"].masked
    assert f.dirs["/run/sysctl.d"] == {}
