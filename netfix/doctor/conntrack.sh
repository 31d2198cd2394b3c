# conntrack detector: table size, settings and per-CPU statistics (per netns, except
# nf_conntrack_max and buckets, which a netns may read). Read-only.
#
# The /proc files are read by the runner's one grep for all detectors (ONCE_FILES and
# SAMPLE_FILES in conntrack.py); here only RAM, for the memory cost of a larger table.
once_conntrack() {
  [ -r /proc/sys/net/netfilter/nf_conntrack_max ] || return 0
  echo "== settings"
  while read -r _ct_k _ct_v _ct_rest; do
    [ "$_ct_k" = MemTotal: ] && echo "mem_total_kb:$_ct_v" && break
  done < /proc/meminfo
  return 0
}

# counts and stat: SAMPLE_FILES in conntrack.py
sample_conntrack() {
  :
}
