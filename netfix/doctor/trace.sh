# netfix doctor: --trace-drops only (the runner appends this file to the script after
# common.sh only when --trace-drops SECONDS is not 0; without it the script writes nothing).
# POSIX sh.
#
# --trace-drops: the skb:kfree_skb tracepoint, with the kernel's drop reason (5.17+),
# for ND_TRACE seconds. The only thing doctor changes on a node, so:
# - in a tracefs instance of its own (instances/netfix-doctor-PID-CLOCK): its own ring
#   buffer, enable switch and options; the operator's tracing (the top-level buffer,
#   other instances) is never touched, and removing the instance turns everything off;
# - capped: ND_TRACE_KB of ring buffer per CPU with overwrite off (once full, further
#   events are counted as dropped, not stored), the buffer read once at the end (no
#   per-event process, no trace_pipe reader), at most ND_TRACE_LINES lines, at nice 19;
# - always off again: a trap on EXIT, HUP, INT, TERM and PIPE disables it and removes the
#   instance; and a guard started with setsid (its own session, ignoring HUP, so neither
#   a dead SSH connection, nor a killed controller, nor a SIGKILLed script takes it
#   along) disables it ND_TRACE + 20 s after the start whatever happened to this shell.
# In a network namespace the tracepoint sees the whole host's kernel: not traced.
ND_TRACE_KB=512
ND_TRACE_GUARD_SLACK=20
ND_TRACE_LINES=20000
nd_tr_state=off
nd_tr_i=
nd_tr_guard=
nd_tr_start=
nd_tr_stop=

nd_trace_cleanup() {
  if [ -n "$nd_tr_i" ]; then
    echo 0 > "$nd_tr_i/events/skb/kfree_skb/enable" 2>/dev/null
    rmdir "$nd_tr_i" 2>/dev/null
    nd_tr_i=
  fi
  if [ -n "$nd_tr_guard" ]; then
    kill "$nd_tr_guard" 2>/dev/null
    nd_tr_guard=
  fi
  return 0
}

# The guard: sleeps in its own session, then disables and removes the instance (retrying
# the removal while a reader still holds a file of it). A TERM (the normal end: the
# script's cleanup) does the same at once; it is idempotent.
# shellcheck disable=SC2016  # the guard's own $1 and $2: expanded by the guard's sh
ND_TRACE_GUARD='d=$2
off() { echo 0 > "$d/events/skb/kfree_skb/enable"; n=0
  while [ -d "$d" ] && [ "$n" -lt 12 ]; do rmdir "$d" && break; n=$((n + 1)); sleep 5; done
  exit 0; }
trap "" HUP INT; trap off TERM; sleep "$1" & wait $!; off'

nd_trace_start() {
  nd_tr_state=off
  # nd_common's network-namespace test: net.core's host-global sysctls are absent there.
  [ -e /proc/sys/net/core/netdev_max_backlog ] || { nd_tr_state=netns; return 0; }
  _tr_top=
  for _tr_d in /sys/kernel/tracing /sys/kernel/debug/tracing; do
    if [ -d "$_tr_d/instances" ] && [ -r "$_tr_d/events/skb/kfree_skb/format" ]; then
      _tr_top=$_tr_d
      break
    fi
  done
  [ -n "$_tr_top" ] || { nd_tr_state=notracefs; return 0; }
  grep -q 'enum skb_drop_reason reason;' "$_tr_top/events/skb/kfree_skb/format" 2>/dev/null ||
    { nd_tr_state=noreason; return 0; }
  _tr_name="netfix-doctor-$$-$(date +%s)"
  mkdir "$_tr_top/instances/$_tr_name" 2>/dev/null || { nd_tr_state=noinstance; return 0; }
  nd_tr_i="$_tr_top/instances/$_tr_name"
  trap 'nd_trace_cleanup' EXIT
  trap 'nd_trace_cleanup; exit 129' HUP
  trap 'nd_trace_cleanup; exit 130' INT
  trap 'nd_trace_cleanup; exit 141' PIPE
  trap 'nd_trace_cleanup; exit 143' TERM
  _tr_deadline=$((${ND_TRACE%.*} + ND_TRACE_GUARD_SLACK))
  if command -v setsid >/dev/null 2>&1; then
    setsid sh -c "$ND_TRACE_GUARD" nd-trace-guard "$_tr_deadline" "$nd_tr_i" \
      < /dev/null > /dev/null 2>&1 &
  else
    sh -c "$ND_TRACE_GUARD" nd-trace-guard "$_tr_deadline" "$nd_tr_i" \
      < /dev/null > /dev/null 2>&1 &
  fi
  nd_tr_guard=$!
  echo "$ND_TRACE_KB" > "$nd_tr_i/buffer_size_kb" 2>/dev/null
  echo 0 > "$nd_tr_i/options/overwrite" 2>/dev/null
  # hash-ptr stays on (the default): with it off, 6.1 prints an empty `reason:` (measured
  # on Debian's 6.1.0-50). So kernels printing `location=%p` (before about 6.4) give a
  # hashed address, looked up in /proc/kallsyms only in case it is a raw one.
  nd_tr_start=$(nd_uptime)
  if echo 1 > "$nd_tr_i/events/skb/kfree_skb/enable" 2>/dev/null; then
    nd_tr_state=on
  else
    nd_tr_state=noenable
  fi
}

# The end of the trace window: the event off (the buffer stays for nd_trace_read).
nd_trace_off() {
  [ "$nd_tr_state" = on ] || return 0
  echo 0 > "$nd_tr_i/events/skb/kfree_skb/enable" 2>/dev/null
  nd_tr_stop=$(nd_uptime)
  nd_tr_state=stopped
}

# Hex locations (kernels printing `location=%p`, where the address is raw: hash-ptr off
# for the whole tracefs) -> the kernel symbol they are in, from
# /proc/kallsyms in one pass (addresses compared as 16-digit strings; only the symbols in
# the same 16 MiB block as a wanted address are looked at). Input and output rows:
# `COUNT REASON LOCATION`, output with the symbol (or -) appended.
nd_trace_syms() {
  # shellcheck disable=SC2016  # an awk program
  nd_nice awk 'NR == FNR { row[NR] = $0; rows = NR; a = tolower($3); sub(/^0x/, "", a)
         if (a ~ /^[0-9a-f]+$/ && length(a) <= 16) {
           while (length(a) < 16) a = "0" a
           addr[NR] = a; want[substr(a, 1, 10)] = 1 }
         next }
       { p = substr($1, 1, 10); if (!(p in want) || $2 !~ /^[tTwW]$/) next
         for (i = 1; i <= rows; i++)
           if ((i in addr) && substr(addr[i], 1, 10) == p && $1 "" <= addr[i] && $1 "" > best[i]) {
             best[i] = $1 ""; sym[i] = $3 } }
       END { for (i = 1; i <= rows; i++) print row[i], ((i in sym) ? sym[i] : "-") }' \
    - "${ND_KALLSYMS:-/proc/kallsyms}" 2>/dev/null
}

nd_nice() {
  if command -v nice > /dev/null 2>&1; then nice -n 19 "$@"; else "$@"; fi
}

# Right after nd_trace_off (well before the guard's deadline): the per-CPU counts, the
# buffer read once and aggregated by reason and location, then the instance removed.
nd_trace_read() {
  nd_mark trace -
  printf 'state %s\n' "$nd_tr_state"
  if [ "$nd_tr_state" != stopped ]; then
    nd_trace_cleanup
    return 0
  fi
  printf 'start %s\nstop %s\ncap %s\nbuffer_kb %s\n' "$nd_tr_start" "$nd_tr_stop" \
    "$ND_TRACE_LINES" "$ND_TRACE_KB"
  cat "$nd_tr_i"/per_cpu/cpu*/stats 2>/dev/null | awk -F': *' '
    $1 == "entries" { e += $2 } $1 == "overrun" { o += $2 } $1 == "dropped events" { d += $2 }
    END { printf "entries %d\noverrun %d\ndropped %d\n", e, o, d }'
  # shellcheck disable=SC2016  # an awk program
  _tr_agg=$(nd_nice grep -v '^#' "$nd_tr_i/trace" 2>/dev/null | head -n "$ND_TRACE_LINES" |
    nd_nice awk '
    { r = "?"; l = "?"
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^location=/) l = substr($i, 10)
        else if ($i == "reason:") r = $(i + 1) }
      n++; c[r " " l]++ }
    END { printf "lines %d\n", n; for (k in c) print c[k], k }')
  nd_trace_cleanup
  printf '%s\n' "$_tr_agg" | head -n 1
  echo "== events"
  printf '%s\n' "$_tr_agg" | tail -n +2 | sort -rn | head -n 200 | nd_trace_syms
}
