# shellcheck shell=sh
# Link configuration's fact snippet (after writers.sh): udev's .link and networkd's
# .network files in systemd's network dirs, NetworkManager keyfiles (only the lines that
# match a device and set MTU or ethtool values: keyfiles also hold secrets), whether
# networkd and NetworkManager run or are enabled, and each interface's match keys.
w_procs NetworkManager systemd-network systemd-udevd
for u in systemd-networkd NetworkManager; do
  for w in /etc/systemd/system/*.wants/"$u".service; do
    [ -e "$w" ] && echo "ENABLED $u" && break
  done
done
for ext in link network; do
  w_dump /etc/systemd/network/*."$ext" /run/systemd/network/*."$ext" \
    /usr/local/lib/systemd/network/*."$ext" /usr/lib/systemd/network/*."$ext" \
    /lib/systemd/network/*."$ext"
done
for f in /etc/NetworkManager/system-connections/*.nmconnection \
    /run/NetworkManager/system-connections/*.nmconnection; do
  [ -f "$f" ] || continue
  echo "F $f"
  grep -E '^[[:space:]]*(\[|(id|type|interface-name|mac-address|mtu|autoconnect|autoconnect-priority|ring-[a-z-]+|coalesce-[a-z-]+|feature-[a-z0-9-]+|channels-[a-z]+)[[:space:]]*=)' "$f" \
    | sed 's/^/| /'
done
# IF name mac driver type devtype id_path ("-" for an empty field)
for d in /sys/class/net/*; do
  n=${d##*/}
  [ "$n" = lo ] && continue
  a=-; t=-; i=0; drv=-; dt=-; pth=-
  read -r a < "$d/address" 2>/dev/null
  read -r t < "$d/type" 2>/dev/null
  read -r i < "$d/ifindex" 2>/dev/null
  if [ -e "$d/device/driver" ]; then drv=$(readlink "$d/device/driver"); drv=${drv##*/}; fi
  # builtins only: two files per interface
  while IFS= read -r x; do
    case $x in DEVTYPE=?*) dt=${x#DEVTYPE=} ;; esac
  done < "$d/uevent" 2>/dev/null
  if [ -f "/run/udev/data/n$i" ]; then
    while IFS= read -r x; do
      case $x in E:ID_PATH=?*) pth=${x#E:ID_PATH=} ;; esac
    done < "/run/udev/data/n$i"
  fi
  echo "IF $n ${a:--} ${drv:--} ${t:--} $dt $pth"
done
