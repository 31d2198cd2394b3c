# memory detector: OOM kill count and pressure stall information (host-global: the
# detector skips them inside a network namespace). The OOM log lines come from the
# runner's kernel log read. Read-only.

once_memory() {
  return 0
}

sample_memory() {
  if [ -r /proc/vmstat ]; then
    echo "== vmstat"
    grep -E '^(oom_kill|allocstall|pgscan_direct|compact_stall) ' /proc/vmstat 2>/dev/null
  fi
  # Absent without CONFIG_PSI, or unreadable with psi=0 on the kernel command line;
  # /proc/pressure/irq also needs CONFIG_IRQ_TIME_ACCOUNTING (6.1+).
  for _mm_k in memory irq; do
    [ -r "/proc/pressure/$_mm_k" ] || continue
    echo "== psi_$_mm_k"
    cat "/proc/pressure/$_mm_k" 2>/dev/null
  done
  return 0
}
