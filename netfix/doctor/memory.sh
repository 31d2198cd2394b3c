# memory detector: OOM kill count and pressure stall information (host-global: the
# detector skips them inside a network namespace). The OOM log lines come from the
# runner's kernel log read, /proc/vmstat and /proc/pressure from its one grep
# (memory.py's SAMPLE_FILES). Read-only.

once_memory() {
  return 0
}

sample_memory() {
  :
}
