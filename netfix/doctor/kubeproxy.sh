# netfix doctor detector `kubeproxy`: kubelet, kube-proxy and its replacements among the
# node's processes (by name), kube-proxy's mode flag, and the size of the rule sets
# (read once; iptables-save and nft only where installed).

once_kubeproxy() {
  for p in /proc/[0-9]*; do
    c=""
    read -r c < "$p/comm" 2>/dev/null || continue
    case $c in
      kubelet|kube-proxy|cilium-agent|kube-router|antrea-agent|calico-node)
        printf 'proc %s %s\n' "$c" "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null | cut -c1-2000)"
        ;;
    esac
  done
  if command -v iptables-save >/dev/null 2>&1; then
    printf 'iptables %s\n' "$(iptables-save 2>/dev/null | grep -c '^-A')"
    printf 'kube-chains %s\n' "$(iptables-save -t nat 2>/dev/null | grep -c '^:KUBE-')"
  fi
  if command -v nft >/dev/null 2>&1; then
    printf 'nft %s\n' "$(nft -a list ruleset 2>/dev/null |
      grep '# handle' | grep -cv -e '^[[:space:]]*table ' -e '^[[:space:]]*chain ')"
  fi
}

sample_kubeproxy() {
  :
}
