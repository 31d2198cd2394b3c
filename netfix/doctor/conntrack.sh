# conntrack detector: table size, settings and per-CPU statistics (per netns, except
# nf_conntrack_max and buckets, which a netns may read). Read-only.
#
# /proc/sys files cannot be read with the shell's `read`: dash reads byte by byte and the
# kernel's sysctl handlers return EOF for any read at an offset. One grep per call reads
# them all and prints `path:value`.

# Settings read once: bucket count, the timeouts the remedy may shorten, and RAM for the
# memory cost of a larger table.
once_conntrack() {
  _ct_d=/proc/sys/net/netfilter
  [ -r "$_ct_d/nf_conntrack_max" ] || return 0
  echo "== settings"
  grep -H . "$_ct_d/nf_conntrack_buckets" "$_ct_d/nf_conntrack_tcp_timeout_established" \
    "$_ct_d/nf_conntrack_tcp_timeout_syn_sent" "$_ct_d/nf_conntrack_tcp_timeout_syn_recv" \
    "$_ct_d/nf_conntrack_udp_timeout" "$_ct_d/nf_conntrack_udp_timeout_stream" 2>/dev/null
  while read -r _ct_k _ct_v _ct_rest; do
    [ "$_ct_k" = MemTotal: ] && echo "mem_total_kb:$_ct_v" && break
  done < /proc/meminfo
  return 0
}

# Counters read twice: fill and the per-CPU statistics (hex, summed by the parser).
sample_conntrack() {
  _ct_d=/proc/sys/net/netfilter
  if [ -r "$_ct_d/nf_conntrack_count" ]; then
    echo "== counts"
    grep -H . "$_ct_d/nf_conntrack_count" "$_ct_d/nf_conntrack_max" 2>/dev/null
  fi
  if [ -r /proc/net/stat/nf_conntrack ]; then
    echo "== stat"
    cat /proc/net/stat/nf_conntrack 2>/dev/null
  fi
  return 0
}
