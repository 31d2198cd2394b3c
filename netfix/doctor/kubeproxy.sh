# netfix doctor detector `kubeproxy`: kubelet, kube-proxy and its replacements among the
# node's processes (by name), kube-proxy's mode flag, and the size of the rule sets
# (read once; iptables-save and nft only where installed, and only where kubelet or a
# kube-proxy not in IPVS/nftables mode runs).

# The process scan also notes irqbalance in _nd_irqbalance (0/1), which once_nic and
# once_softnet then use instead of scanning /proc again.
once_kubeproxy() {
  _nd_irqbalance=0
  _kp_dump=0
  for p in /proc/[0-9]*; do
    c=""
    read -r c < "$p/comm" 2>/dev/null || continue
    case $c in
      irqbalance) _nd_irqbalance=1 ;;
      kubelet|kube-proxy|cilium-agent|kube-router|antrea-agent|calico-node)
        _kp_cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null | cut -c1-2000)
        printf 'proc %s %s\n' "$c" "$_kp_cmd"
        case $_kp_dump/$c in 0/kubelet|0/kube-proxy) _kp_dump=1 ;; esac
        case $c/$_kp_cmd in  # kube-proxy says it is not in iptables mode: nothing to count
          kube-proxy/*--proxy-mode[=\ ]ipvs*|kube-proxy/*--proxy-mode[=\ ]nftables*)
            _kp_dump=2 ;;
        esac
        ;;
    esac
  done
  # The rule count matters only with kube-proxy in iptables mode (its flag's default), or
  # its chains left by a kubelet node's kube-proxy gone missing: no dump on a node that
  # runs neither (two to four processes, and with a large ruleset the most expensive part
  # of the whole script), nor when kube-proxy runs in IPVS or nftables mode.
  [ "$_kp_dump" = 1 ] || { echo "rules skipped"; return 0; }
  # One iptables-save (all tables; the KUBE- chains counted in *nat) and one nft.
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
