# netfix doctor detector `kubeproxy`: kubelet, kube-proxy and its replacements among the
# node's processes (by name), kube-proxy's mode flag, and the size of the rule sets
# (read once; iptables-save and nft only where installed).

# The process scan also notes irqbalance in _nd_irqbalance (0/1), which once_nic and
# once_softnet then use instead of scanning /proc again.
once_kubeproxy() {
  _nd_irqbalance=0
  for p in /proc/[0-9]*; do
    c=""
    read -r c < "$p/comm" 2>/dev/null || continue
    case $c in
      irqbalance) _nd_irqbalance=1 ;;
      kubelet|kube-proxy|cilium-agent|kube-router|antrea-agent|calico-node)
        printf 'proc %s %s\n' "$c" "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null | cut -c1-2000)"
        ;;
    esac
  done
  # One iptables-save (all tables; the KUBE- chains counted in *nat) and one nft: with a
  # large ruleset each dump is the expensive part of the whole script.
  if command -v iptables-save >/dev/null 2>&1; then
    iptables-save 2>/dev/null | awk '/^\*/ { t = $0 } /^-A/ { n++ }
      t == "*nat" && /^:KUBE-/ { k++ } END { printf "iptables %d\nkube-chains %d\n", n, k }'
  fi
  if command -v nft >/dev/null 2>&1; then
    nft -a list ruleset 2>/dev/null | awk '/# handle/ && !/^[[:space:]]*(table|chain) / { n++ }
      END { printf "nft %d\n", n }'
  fi
}

sample_kubeproxy() {
  :
}
