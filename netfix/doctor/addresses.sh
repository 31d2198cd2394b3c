# netfix doctor detector `addresses`: the interfaces' addresses (read once).

once_addresses() {
  ip -j addr show 2>/dev/null
}

sample_addresses() {
  :
}
