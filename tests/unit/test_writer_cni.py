"""CNI agents' writer model on recorded process listings (netfix/sh/cni.sh's records)."""

from __future__ import annotations

from netfix.facts import Facts
from netfix.plan import Change
from netfix.writers import cni

# Recorded on nodes: cilium-agent in its pod, calico-node running felix, flanneld.
CILIUM = "PROC 2211 cilium-agent\nARG cilium-agent\nARG --config-dir=/tmp/cilium/config-map\n"
CALICO = "PROC 1873 calico-node\nARG calico-node\nARG -felix\n"
FLANNEL = "PROC 990 flanneld\nARG /opt/bin/flanneld\nARG --ip-masq\nARG --kube-subnet-mgr\n"


def run(listing: str, **desired: str) -> dict[str, Change]:
    changes = [Change("sysctl", k.replace("__", "."), "1", v) for k, v in desired.items()]
    f = Facts(host="n1")
    f.scripts[cni.SCRIPT] = listing
    cni.annotate(changes, f)
    return {c.target: c for c in changes}


def test_cilium_undoes_rp_filter_all_and_keeps_ip_forward():
    ch = run(CILIUM, net__ipv4__conf__all__rp_filter="1", net__ipv4__ip_forward="1",
             net__core__somaxconn="4096")
    rp = ch["net.ipv4.conf.all.rp_filter"]
    assert rp.wins == "cilium" and rp.reason("other-writer").detail == "cilium"
    assert "pid 2211" in rp.reason("other-writer").message
    (w,) = rp.writers
    assert (w.name, w.when, w.value, w.wins) == ("cilium", "start", "0", True)
    fwd = ch["net.ipv4.ip_forward"]
    assert fwd.wins == "netfix" and "other-writer" not in fwd.flags and fwd.writers
    assert not ch["net.core.somaxconn"].writers  # not a key cilium writes


def test_cilium_own_devices():
    ch = run(CILIUM, net__ipv4__conf__cilium_host__rp_filter="2")
    assert ch["net.ipv4.conf.cilium_host.rp_filter"].wins == "cilium"


def test_calico_writes_rp_filter_on_cali_interfaces_when_they_come_up():
    ch = run(CALICO, net__ipv4__conf__cali12ab34cd__rp_filter="2",
             net__ipv4__conf__eth0__rp_filter="2")
    cali = ch["net.ipv4.conf.cali12ab34cd.rp_filter"]
    assert cali.wins == "calico" and cali.writers[0].when == "link-add"
    assert not ch["net.ipv4.conf.eth0.rp_filter"].writers


def test_flannel_is_detected_but_writes_nothing_modelled():
    assert set(cni.agents(FLANNEL)) == {"flannel"}
    ch = run(FLANNEL, net__ipv4__ip_forward="0")
    assert not ch["net.ipv4.ip_forward"].writers


def test_no_agent_no_writer_and_other_processes_ignored():
    ch = run("PROC 1 systemd\nARG /sbin/init\nPROC 77 cilium\n",
             net__ipv4__conf__all__rp_filter="1")
    assert not ch["net.ipv4.conf.all.rp_filter"].writers


def test_calico_counted_once_whatever_its_process_names():
    ch = run(CALICO + "PROC 1874 calico-felix\n", net__ipv4__ip_forward="0")
    assert len(ch["net.ipv4.ip_forward"].writers) == 1


def test_needs():
    assert not cni.needs({"nic": {"interfaces": []}}).scripts
    assert cni.SCRIPT in cni.needs({"sysctl": {"net.ipv4.ip_forward": 1}}).scripts


def test_cilium_ipv6_forwarding_only_with_ipv6_on():
    v4 = run(CILIUM, net__ipv6__conf__all__forwarding="0")
    assert not v4["net.ipv6.conf.all.forwarding"].writers
    v6 = run(CILIUM + "ARG --enable-ipv6=true\n", net__ipv6__conf__all__forwarding="0")
    assert v6["net.ipv6.conf.all.forwarding"].wins == "cilium"


def test_cilium_ipv6_from_its_config_dir_and_the_command_line_wins():
    cfg = run(CILIUM + "CFG 2211 enable-ipv6 true\n", net__ipv6__conf__all__forwarding="0")
    assert cfg["net.ipv6.conf.all.forwarding"].wins == "cilium"
    off = run(CILIUM + "ARG --enable-ipv6=false\nCFG 2211 enable-ipv6 true\n",
              net__ipv6__conf__all__forwarding="0")
    assert not off["net.ipv6.conf.all.forwarding"].writers
    other = run(CILIUM + "CFG 999 enable-ipv6 true\n", net__ipv6__conf__all__forwarding="0")
    assert not other["net.ipv6.conf.all.forwarding"].writers  # another process's config
