# netfix doctor detector `synflood`: the SYN-flood sysctls and the listeners' backlogs
# (once), /proc/net/netstat (both samples: TcpExt ListenOverflows, ListenDrops,
# TCPReqQFullDoCookies, TCPReqQFullDrop). All per network namespace.

once_synflood() {
  for k in ipv4/tcp_syncookies ipv4/tcp_max_syn_backlog core/somaxconn ipv4/tcp_synack_retries; do
    # cat, not read: dash reads byte by byte and numeric sysctls return EOF at offset 1
    v=$(cat "/proc/sys/net/$k" 2>/dev/null) && printf 'sysctl %s %s\n' "$k" "$v"
  done
  if command -v ss >/dev/null 2>&1; then
    ss -Hltn 2>/dev/null | while read -r _ recvq sendq local _; do
      printf 'listen %s %s %s\n' "$local" "$recvq" "$sendq"
    done
  fi
}

sample_synflood() {
  grep '^TcpExt:' /proc/net/netstat 2>/dev/null
}
