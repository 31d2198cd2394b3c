# netfix doctor: the part every host runs once, before the detectors' functions.
# Read-only: it reads /proc and the kernel log and writes nothing. POSIX sh.
#
# Output, after a `@@ND common -` marker, one `key value` line each:
#   uptime SECONDS     /proc/uptime (kernel log times are uptimes)
#   clock EPOCH        the node's wall clock (seconds since 1970, UTC), right after; only
#                      where the kernel log is read (it dates its lines)
#   cpus N, kernel RELEASE, uid N
#   netns 0|1          1: a network namespace (or container) of a larger kernel
#   klog SOURCE        dmesg, kmsg, skipped (netns: the log is the host's) or none
# then, after `@@ND klog -`, the kernel log lines detectors care about, each as
# `UPTIME MESSAGE` (seconds since boot, as the kernel stamped it).

# Kernel messages the detectors read: conntrack table full (and the ratelimit lines that
# say how many were suppressed), SYN floods, OOM kills.
ND_KLOG='nf_conntrack: (nf_conntrack: )?table full|callbacks suppressed|Possible SYN flooding|Out of memory|oom-kill:|Killed process|oom_reaper'
ND_KLOG_MAX=2000
ND_NL='
'

nd_mark() {
  printf '\n@@ND %s %s\n' "$1" "$2"
}

# Online CPUs and the uid without a process each (builtins over /sys and /proc), falling
# back to getconf and id.
nd_cpus() {
  _nd_n=0
  if read -r _nd_l < /sys/devices/system/cpu/online 2>/dev/null && [ -n "$_nd_l" ]; then
    _nd_ifs=$IFS; IFS=,
    for _nd_r in $_nd_l; do
      case $_nd_r in
        *-*) _nd_n=$((_nd_n + ${_nd_r#*-} - ${_nd_r%-*} + 1)) ;;
        *) _nd_n=$((_nd_n + 1)) ;;
      esac
    done
    IFS=$_nd_ifs
  fi
  if [ "$_nd_n" -gt 0 ]; then
    echo "$_nd_n"
  else
    getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c '^processor' /proc/cpuinfo
  fi
}

nd_uid() {
  while read -r _nd_k _nd_v _nd_rest; do
    [ "$_nd_k" = Uid: ] && echo "$_nd_v" && return 0
  done < /proc/self/status
  id -u
}

nd_uptime() {
  read -r u _ < /proc/uptime && printf '%s\n' "$u"
}

# The kernel log: `dmesg` ("[  12.345678] msg"), else /dev/kmsg records
# ("PRIO,SEQ,USEC,FLAGS;msg", read without blocking); both turned into "12.345678 msg".
nd_klog_read() {
  if command -v dmesg >/dev/null 2>&1 && dmesg > /dev/null 2>&1; then
    echo dmesg
    dmesg 2>/dev/null | grep -E "$ND_KLOG" | tail -n "$ND_KLOG_MAX" |
      sed -n 's/^\[ *\([0-9][0-9]*\.[0-9]*\)\] \(.*\)$/\1 \2/p'
  elif [ -r /dev/kmsg ] && command -v dd >/dev/null 2>&1; then
    echo kmsg
    dd if=/dev/kmsg iflag=nonblock bs=16384 2>/dev/null | grep -E "$ND_KLOG" |
      tail -n "$ND_KLOG_MAX" |
      awk -F';' '/^[0-9]+,[0-9]+,[0-9]+/ { split($1, h, ","); m = substr($0, length($1) + 2);
        printf "%d.%06d %s\n", h[3] / 1000000, h[3] % 1000000, m }'
  else
    echo none
  fi
}

nd_common() {
  nd_mark common -
  printf 'uptime '; nd_uptime
  printf 'cpus '; nd_cpus
  read -r k < /proc/sys/kernel/osrelease && printf 'kernel %s\n' "$k"
  printf 'uid '; nd_uid
  # net.core's host-global sysctls (netdev_max_backlog, netdev_budget, rmem_max...) are
  # registered for the initial network namespace only: absent anywhere else.
  if [ -e /proc/sys/net/core/netdev_max_backlog ]; then netns=0; else netns=1; fi
  printf 'netns %s\n' "$netns"
  if [ "$netns" = 1 ]; then
    printf 'klog skipped\n'
    nd_mark klog -
    return 0
  fi
  # The clock only dates kernel log lines (a `date` process): not read where the log is not.
  printf 'clock %s\n' "$(date +%s)"
  nd_tmp=$(nd_klog_read)
  # first line: the source; the rest: the log lines (split by the shell, no head/tail)
  printf 'klog %s\n' "${nd_tmp%%"$ND_NL"*}"
  nd_mark klog -
  case $nd_tmp in *"$ND_NL"*) printf '%s\n' "${nd_tmp#*"$ND_NL"}" ;; esac
}
