# netfix doctor `fleet`: what only the fleet comparison needs besides what the other
# detectors read (kernel, MTU, drivers, rings, sysctls): driver/firmware versions and
# offloads of the interfaces backed by a device (`ethtool -i`, `ethtool -k`: two processes
# per such interface, none for veths, bridges and tunnels). Read-only.

once_fleet() {
  command -v ethtool >/dev/null 2>&1 || return 0
  for _fl_d in /sys/class/net/*; do
    _fl_if=${_fl_d##*/}
    case $_fl_if in lo|-*|'*') continue ;; esac  # -*: never pass an option to ethtool
    [ -e "$_fl_d/device" ] || continue
    echo "== info $_fl_if"
    ethtool -i "$_fl_if" 2>/dev/null
    echo "== offload $_fl_if"
    ethtool -k "$_fl_if" 2>/dev/null
  done
  return 0
}

sample_fleet() {
  :
}
