"""CNI agents that write sysctls on the node, detected by their running process.

What each writes, read from its source (docs/writers.md, "CNI agents", cites them):
- cilium-agent: at start and at every datapath re-initialisation (pkg/datapath/loader,
  `Reinitialize`): net.ipv4.conf.all.rp_filter=0 (it must, the kernel takes the maximum
  of `all` and the device), fib_multipath_use_neigh=1, kernel.unprivileged_bpf_disabled=1,
  kernel.timer_migration=0, net.core.bpf_jit_enable=1; on its own devices (bpf/init.sh
  `setup_dev`: cilium_host, cilium_net) forwarding=1, rp_filter=0, accept_local=1,
  send_redirects=0; forwarding on (pkg/datapath/iptables `enableIPForwarding`:
  net.ipv4.ip_forward, net.ipv4.conf.all.forwarding, and with IPv6 on, on its command
  line or in its --config-dir, net.ipv6.conf.all.forwarding, all 1).
- calico-node (felix): net.ipv4.ip_forward=1 at start (IPForwarding=Enabled, the
  default); on every cali* workload interface when it comes up (felix/dataplane/linux
  endpoint manager, `configureInterface`): rp_filter=1, route_localnet=1, proxy_arp=1,
  neigh proxy_delay=0, and for IPv6 proxy_ndp=1.
- flanneld, weaver (Weave Net), kube-router: detected and listed; netfix models no sysctl
  they write (none was found in the sources read), so they are never other-writer.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from netfix.facts import Facts, Needs
from netfix.plan import Change, When, Writer
from netfix.writers import _common as common

NAME = "cni"
SCRIPT = "cni"


@dataclass(frozen=True)
class Write:
    key: str  # a sysctl key; `*` in an interface part is that agent's device names
    value: str
    when: str  # a When
    source: str  # where in the agent's source
    only_if: str = ""  # a flag that must be `true` on the agent's command line


CILIUM = "cilium"
CALICO = "calico"
# comm -> (agent name as Writer.name shows it, what it writes)
AGENTS: dict[str, tuple[str, tuple[Write, ...]]] = {
    "cilium-agent": (CILIUM, (
        Write("net.ipv4.conf.all.rp_filter", "0", When.START, "loader.Reinitialize"),
        Write("net.ipv4.fib_multipath_use_neigh", "1", When.START, "loader.Reinitialize"),
        Write("kernel.unprivileged_bpf_disabled", "1", When.START, "loader.Reinitialize"),
        Write("kernel.timer_migration", "0", When.START, "loader.Reinitialize"),
        Write("net.core.bpf_jit_enable", "1", When.START, "loader.Reinitialize"),
        Write("net.ipv4.ip_forward", "1", When.START, "iptables.enableIPForwarding"),
        Write("net.ipv4.conf.all.forwarding", "1", When.START, "iptables.enableIPForwarding"),
        Write("net.ipv6.conf.all.forwarding", "1", When.START, "iptables.enableIPForwarding",
              only_if="enable-ipv6"),
        *(Write(f"net.ipv4.conf.{dev}.{k}", v, When.START, "bpf/init.sh setup_dev")
          for dev in ("cilium_host", "cilium_net")
          for k, v in (("forwarding", "1"), ("rp_filter", "0"), ("accept_local", "1"),
                       ("send_redirects", "0"))),
    )),
    "calico-node": (CALICO, (
        Write("net.ipv4.ip_forward", "1", When.START, "felix IPForwarding=Enabled"),
        *(Write(key, v, When.LINK_ADD, "felix endpoint manager configureInterface")
          for key, v in (("net.ipv4.conf.cali*.rp_filter", "1"),
                         ("net.ipv4.conf.cali*.route_localnet", "1"),
                         ("net.ipv4.conf.cali*.proxy_arp", "1"),
                         ("net.ipv4.neigh.cali*.proxy_delay", "0"),
                         ("net.ipv6.conf.cali*.proxy_ndp", "1"))),
    )),
    "flanneld": ("flannel", ()),
    "weaver": ("weave", ()),
    "kube-router": ("kube-router", ()),
}
AGENTS["calico-felix"] = AGENTS["calico-node"]


def needs(data: dict) -> Needs:
    if not any(data.get(s) for s in ("sysctl", "syn_flood", "conntrack")):
        return Needs()
    return common.needs(SCRIPT, "cni.sh", procs=set(AGENTS))


def agents(text: str) -> dict[str, common.Proc]:
    """Running agents by Writer name (the first process of each). An option read from
    the agent's config dir counts as given on its command line, which wins over it."""
    rec = common.records(text)
    out: dict[str, common.Proc] = {}
    for proc in rec.procs:
        if proc.comm in AGENTS:
            out.setdefault(AGENTS[proc.comm][0], proc)
    for words in rec.other:
        if words[0] == "CFG" and len(words) == 4 and words[1].isdigit():
            for proc in out.values():
                if proc.pid == int(words[1]) and proc.flag(words[2]) is None:
                    proc.args.append(f"--{words[2]}={words[3]}")
    return out


def annotate(changes: list[Change], facts: Facts) -> None:
    running = agents(facts.scripts.get(SCRIPT, ""))
    if not running:
        return
    keys = common.sysctl_changes(changes)
    for comm, (name, writes) in AGENTS.items():
        proc = running.get(name)
        if proc is None or proc.comm != comm:
            continue
        for write in writes:
            if write.only_if and (proc.flag(write.only_if) or "").lower() != "true":
                continue
            for key, c in keys.items():
                if fnmatch.fnmatchcase(key, write.key):
                    _one(c, name, proc, write)


def _one(c: Change, name: str, proc: common.Proc, write: Write) -> None:
    w = Writer(name, write.when, write.value, source=f"pid {proc.pid}: {write.source}",
               wins=write.value != c.desired)
    when = "when the interface comes up" if write.when == When.LINK_ADD else "at its start"
    common.add(c, w, name if w.wins else "netfix",
               f"{name} (pid {proc.pid}) writes the same {c.target} {when}",
               conflict=(f"{name} (pid {proc.pid}) writes {write.value} {when} "
                         f"({write.source}) and undoes this; it needs that value: drop the "
                         "key from the profile for this node") if w.wins else "")
