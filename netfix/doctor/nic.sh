# nic detector: per-interface drop counters (sysfs for every interface: the runner's one
# grep, nic.py's SAMPLE_FILES; `ethtool -S` for interfaces backed by a device), ring sizes
# and irqbalance. Read-only.

# Which interfaces are hardware (have a device) and their driver, their rings, irqbalance.
once_nic() {
  echo "== ifaces"
  for _nc_d in /sys/class/net/*; do
    _nc_if=${_nc_d##*/}
    case $_nc_if in lo|-*|'*') continue ;; esac  # -*: never pass an option to ethtool
    if [ -e "$_nc_d/device" ]; then
      echo "$_nc_if kind hw"
      [ -r "$_nc_d/device/uevent" ] && while IFS='=' read -r _nc_k _nc_v; do
        [ "$_nc_k" = DRIVER ] && echo "$_nc_if driver $_nc_v"
      done < "$_nc_d/device/uevent"
    else
      echo "$_nc_if kind virtual"
    fi
  done
  if command -v ethtool >/dev/null 2>&1; then
    for _nc_d in /sys/class/net/*; do
      _nc_if=${_nc_d##*/}
      case $_nc_if in lo|-*|'*') continue ;; esac
      [ -e "$_nc_d/device" ] || continue
      echo "== ring $_nc_if"
      ethtool -g "$_nc_if" 2>&1
    done
  fi
  echo "== irqbalance"
  _nc_run=${_nd_irqbalance:-}  # once_kubeproxy's process scan, if it ran
  if [ -z "$_nc_run" ]; then
    _nc_run=0
    for _nc_p in /proc/[0-9]*; do
      _nc_c=""
      read -r _nc_c 2>/dev/null < "$_nc_p/comm"
      [ "$_nc_c" = irqbalance ] && _nc_run=1 && break
    done
  fi
  echo "running $_nc_run"
}

# One grep for the sysfs statistics of every interface (`path:value`); `ethtool -S` (one
# process each) only for the few interfaces with a device.
sample_nic() {
  command -v ethtool >/dev/null 2>&1 || return 0
  for _nc_d in /sys/class/net/*; do
    _nc_if=${_nc_d##*/}
    case $_nc_if in lo|-*|'*') continue ;; esac
    [ -e "$_nc_d/device" ] || continue
    echo "== ethtool $_nc_if"
    ethtool -S "$_nc_if" 2>/dev/null
  done
  return 0
}
