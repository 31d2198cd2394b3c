"""kube-proxy and rules: a node running kubelet with no kube-proxy and no kube-proxy
replacement cannot reach any Service from its pods (ClusterIPs are not translated there);
a kube-proxy in iptables mode with tens of thousands of rules spends seconds rewriting
them on every Service change and walks long chains for new connections."""

from __future__ import annotations

from netfix.doctor import Finding, Remedy, Sample, Severity

NAME = "kubeproxy"
CODES = {
    "kubeproxy-missing": "kubelet runs but neither kube-proxy nor a replacement (cilium-agent, "
                         "kube-router, antrea-agent): Services unreachable from this node",
    "kubeproxy-rule-bloat": "more than 20,000 iptables/nft rules with kube-proxy in iptables "
                            "mode: slow rule syncs and connection setup",
}
GAUGES = {"rules": ("iptables/nft rules on the node (the larger count)", None)}
RULES_THRESHOLD = 20_000
REPLACEMENTS = ("cilium-agent", "kube-router", "antrea-agent")


def _parse(text: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    procs: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "proc":
            comm, _, cmdline = rest.partition(" ")
            procs.setdefault(comm, []).append(cmdline.strip())
        elif word in ("iptables", "nft", "kube-chains") and rest.strip().isdigit():
            counts[word] = int(rest.strip())
    return procs, counts


def _mode(cmdlines: list[str]) -> str:
    """kube-proxy's --proxy-mode (iptables when not given, the Linux default)."""
    words = " ".join(cmdlines).replace("=", " ").split()
    for i, w in enumerate(words[:-1]):
        if w == "--proxy-mode":
            return words[i + 1] or "iptables"
    return "iptables"


def detect(sample: Sample) -> list[Finding]:
    procs, counts = _parse(sample.once.get(NAME, ""))
    findings = []
    replacement = [r for r in REPLACEMENTS if r in procs]
    if "kube-router" in procs and all("--run-service-proxy=false" in c
                                      for c in procs["kube-router"]):
        replacement.remove("kube-router")
    if "kubelet" in procs and "kube-proxy" not in procs and not replacement:
        findings.append(Finding(
            "kubeproxy-missing", Severity.CRITICAL, "kube-proxy",
            "Services unreachable from this node: kubelet runs, kube-proxy does not, and no "
            "kube-proxy replacement runs",
            "pods on this node resolve Service names but their ClusterIP traffic is never "
            "translated to an endpoint: every Service call from this node times out, while "
            "the same pods elsewhere work",
            evidence={"kubelet": len(procs["kubelet"]), "kube_proxy": 0,
                      "replacements_checked": ", ".join(REPLACEMENTS)},
            remedy=Remedy(action="bring kube-proxy back on this node: check its DaemonSet "
                          "(`kubectl -n kube-system get ds kube-proxy`, nodeSelector, "
                          "tolerations, evictions: `kubectl get events --field-selector "
                          "involvedObject.kind=Pod -n kube-system`), or run the CNI's "
                          "kube-proxy replacement"),
            now=True))
    rules = max(counts.get("iptables", 0), counts.get("nft", 0))
    iptables_mode = ("kube-proxy" in procs and _mode(procs["kube-proxy"]) == "iptables") or \
        counts.get("kube-chains", 0) > 0
    if rules > RULES_THRESHOLD and iptables_mode:
        findings.append(Finding(
            "kubeproxy-rule-bloat", Severity.WARNING, "rules",
            f"{rules:,} rules (iptables {counts.get('iptables', 0):,}, nft "
            f"{counts.get('nft', 0):,}) with kube-proxy in iptables mode; more than "
            f"{RULES_THRESHOLD:,}",
            "in iptables mode kube-proxy rewrites the whole table on every Service or "
            "endpoint change (seconds at this size, with packets held meanwhile) and the "
            "first packet of each connection walks the KUBE-SERVICES chains linearly",
            evidence={"rules": rules, "iptables_rules": counts.get("iptables", 0),
                      "nft_rules": counts.get("nft", 0), "threshold": RULES_THRESHOLD,
                      "kube_chains": counts.get("kube-chains", 0)},
            remedy=Remedy(action="switch kube-proxy to IPVS or nftables mode (kube-proxy "
                          "config `mode: ipvs` or `mode: nftables`, Kubernetes 1.31+), or "
                          "reduce the Services/endpoints per cluster"),
            now=True))
    return findings
