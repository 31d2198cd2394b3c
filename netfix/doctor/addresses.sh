# netfix doctor detector `addresses`: the interfaces' addresses (read once).

# With -d, each interface's record also has everything `ip -j -d link` prints that
# netfix.ifaces.parse reads (mtu, min/max_mtu, linkinfo): kept in _nd_addr, once_mtu
# prints it as its link and its addr records instead of running ip twice more.
once_addresses() {
  _nd_addr=$(ip -j -d addr show 2>/dev/null)
  printf '%s\n' "$_nd_addr"
}

sample_addresses() {
  :
}
