# netfix doctor detector `addresses`: the interfaces' addresses (read once).

# The output is kept in _nd_addr: once_mtu prints it again instead of running ip twice.
once_addresses() {
  _nd_addr=$(ip -j addr show 2>/dev/null)
  printf '%s\n' "$_nd_addr"
}

sample_addresses() {
  :
}
