# netfix doctor detector `synflood`: the SYN-flood sysctls and /proc/net/netstat (TcpExt
# ListenOverflows, ListenDrops, TCPReqQFullDoCookies, TCPReqQFullDrop) are the runner's
# grep (synflood.py's ONCE_FILES, SAMPLE_FILES); here the listeners and their backlogs
# (`ss -Hltn` as it prints them: State Recv-Q Send-Q Local Peer). All per network namespace.

# The listeners are evidence of a finding only, and every finding needs one of those four
# counters above 0 (or the kernel's "SYN flooding" line, which comes with TCPReqQFull*).
# With --window 0 the counters read now are the ones the findings see: when all are 0, no
# `ss` (a process, the most expensive part of a lab node's script). With a window they may
# rise meanwhile: `ss` always (its cost is nothing next to the window's).
once_synflood() {
  command -v ss >/dev/null 2>&1 || return 0
  if [ "${ND_WINDOW:-0}" = 0 ] && ! nd_sf_counters; then
    echo "listeners skipped"
    return 0
  fi
  ss -Hltn 2>/dev/null
}

# 0 (true) when one of the counters is above 0 or unreadable. /proc/net/netstat starts with
# the TcpExt header and value lines: read up to them (builtins, by header name), no further.
nd_sf_counters() {
  _sf_v=
  while read -r _sf_h; do
    case $_sf_h in TcpExt:*) read -r _sf_v; break ;; esac
  done < "${ND_NETSTAT:-/proc/net/netstat}" 2>/dev/null
  [ -n "$_sf_v" ] || return 0
  # shellcheck disable=SC2086  # the values: one word each
  set -- $_sf_v
  for _sf_n in $_sf_h; do
    case $_sf_n in
      ListenOverflows|ListenDrops|TCPReqQFullDoCookies|TCPReqQFullDrop)
        [ "${1:-0}" = 0 ] || return 0 ;;
    esac
    [ $# -gt 0 ] && shift
  done
  return 1
}

sample_synflood() {
  :
}
