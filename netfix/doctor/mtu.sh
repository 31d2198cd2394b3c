# netfix doctor detector `mtu`: links (with their kind and tunnel data) and addresses, read
# once, in the records netfix.ifaces.parse reads; the default routes are /proc/net/route and
# /proc/net/ipv6_route in the runner's one grep (mtu.py's ONCE_FILES), not two `ip route`. With --probe-mtu,
# $ND_PROBE holds the other nodes' addresses: one small and one full-size ping with the
# don't-fragment bit to each (ping is read-only; it only sends to those addresses).

once_mtu() {
  if [ -n "${_nd_addr+set}" ]; then  # once_addresses ran `ip -j -d addr` already
    printf '== link\n%s\n== addr\n%s\n' "$_nd_addr" "$_nd_addr"
  else
    echo "== link"
    ip -j -d link show 2>/dev/null
    echo "== addr"
    ip -j addr show 2>/dev/null
  fi
  [ -n "${ND_PROBE:-}" ] || return 0
  command -v ping >/dev/null 2>&1 || { echo "== probe-unavailable"; return 0; }
  own=$(ip -o addr show 2>/dev/null)
  for a in $ND_PROBE; do
    case $own in *" $a/"*) continue ;; esac
    dev=$(ip -o route get "$a" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
    [ -n "$dev" ] || continue
    read -r m < "/sys/class/net/$dev/mtu" 2>/dev/null || continue
    s=fail; b=fail
    ping -n -q -c 1 -W 1 -s 56 "$a" >/dev/null 2>&1 && s=ok
    ping -n -q -M "do" -c 1 -W 1 -s "$((m - 28))" "$a" >/dev/null 2>&1 && b=ok
    echo "== probe $a $dev $m $s $b"
  done
}

sample_mtu() {
  :
}
