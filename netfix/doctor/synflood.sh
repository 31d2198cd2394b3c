# netfix doctor detector `synflood`: the SYN-flood sysctls and the listeners' backlogs
# (once), /proc/net/netstat (both samples: TcpExt ListenOverflows, ListenDrops,
# TCPReqQFullDoCookies, TCPReqQFullDrop). All per network namespace.

once_synflood() {
  # One grep for the four (not `read`: dash reads byte by byte and numeric sysctls return
  # EOF at offset 1), turned into `sysctl ipv4/tcp_syncookies 1` lines by the shell itself.
  _sf_d=/proc/sys/net
  _sf_v=$(grep -H . "$_sf_d/ipv4/tcp_syncookies" "$_sf_d/ipv4/tcp_max_syn_backlog" \
    "$_sf_d/core/somaxconn" "$_sf_d/ipv4/tcp_synack_retries" 2>/dev/null)
  while IFS=: read -r _sf_p _sf_x; do
    [ -n "$_sf_p" ] && printf 'sysctl %s %s\n' "${_sf_p#"$_sf_d"/}" "$_sf_x"
  done <<EOF
$_sf_v
EOF
  if command -v ss >/dev/null 2>&1; then
    ss -Hltn 2>/dev/null | while read -r _ recvq sendq local _; do
      printf 'listen %s %s %s\n' "$local" "$recvq" "$sendq"
    done
  fi
}

sample_synflood() {
  grep '^TcpExt:' /proc/net/netstat 2>/dev/null
}
