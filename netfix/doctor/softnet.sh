# softnet detector: backlog drops, budget squeezes and NET_RX per CPU. Host-global files
# (the detector ignores them inside a network namespace). Read-only.

# The sysctls the remedy raises, softnet_stat and softirqs are the runner's one grep
# (softnet.py's ONCE_FILES, SAMPLE_FILES). Here: RPS masks of the default-route interfaces
# (is RPS already on?) and whether irqbalance runs (builtins only: no process per file).
once_softnet() {
  echo "== rps"
  # /proc/net/route: Iface Destination ...; destination 00000000 is a default route.
  while read -r _sn_if _sn_dst _sn_rest; do
    [ "$_sn_dst" = 00000000 ] || continue
    for _sn_q in "/sys/class/net/$_sn_if/queues/"rx-*; do
      [ -r "$_sn_q/rps_cpus" ] || continue
      read -r _sn_v < "$_sn_q/rps_cpus" && echo "$_sn_if ${_sn_q##*/} $_sn_v"
    done
  done < /proc/net/route
  echo "== irqbalance"
  _sn_run=${_nd_irqbalance:-}  # once_kubeproxy's process scan, if it ran
  if [ -z "$_sn_run" ]; then
    _sn_run=0
    for _sn_p in /proc/[0-9]*; do
      _sn_c=""
      read -r _sn_c 2>/dev/null < "$_sn_p/comm"
      [ "$_sn_c" = irqbalance ] && _sn_run=1 && break
    done
  fi
  echo "running $_sn_run"
}

sample_softnet() {
  :
}
