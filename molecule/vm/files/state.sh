# shellcheck shell=sh
# The VM lab node's state as key=value lines, read in one SSH session: by prepare.yml
# (the originals, before netfix) and by tests/test_vm.py (every verify phase), so both
# sides compare the same representation. Plain POSIX sh: the VM has no Python.
# STATE_MODPROBE=1 loads nf_conntrack after recording whether it was loaded already.
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
if [ -d /sys/module/nf_conntrack ]; then echo conntrack_loaded=1; else echo conntrack_loaded=0; fi
if [ "${STATE_MODPROBE:-}" = 1 ]; then modprobe nf_conntrack; fi
for k in nf_conntrack_max nf_conntrack_buckets nf_conntrack_tcp_timeout_syn_sent \
    nf_conntrack_tcp_timeout_syn_recv nf_conntrack_udp_timeout nf_conntrack_udp_timeout_stream \
    nf_conntrack_generic_timeout nf_conntrack_icmp_timeout; do
  echo "net.netfilter.$k=$(cat /proc/sys/net/netfilter/$k 2>/dev/null || echo absent)"
done
echo "hashsize=$(cat /sys/module/nf_conntrack/parameters/hashsize 2>/dev/null || echo absent)"
# NICs by driver, not by name.
for dev in /sys/class/net/*; do
  link=$(readlink "$dev/device/driver") || continue
  drv=${link##*/}
  case $drv in e1000e|virtio_net) ;; *) continue ;; esac
  echo "${drv}_iface=${dev##*/}"
  ethtool -g "${dev##*/}" | awk -v d="$drv" '/^Current hardware settings/ {c = 1}
    c && /^RX:/ {print d "_rx=" $2} c && /^TX:/ {print d "_tx=" $2}'
  ethtool -c "${dev##*/}" 2>/dev/null | awk -v d="$drv" '/^rx-usecs:/ {print d "_rx_usecs=" $2}'
  echo "${drv}_txqueuelen=$(cat "$dev/tx_queue_len")"
done
echo "irqbalance_enabled=$(systemctl is-enabled irqbalance.service 2>&1)"
echo "irqbalance_active=$(systemctl is-active irqbalance.service 2>&1)"
pid=$(systemctl show -p MainPID --value irqbalance.service)
echo "irqbalance_pid=$pid"
if [ "${pid:-0}" -gt 0 ]; then
  echo "irqbalance_comm=$(cat "/proc/$pid/comm")"
  # The running daemon's own environment: what it really got from /etc/default/irqbalance.
  echo "irqbalance_env=$(tr '\0' '\n' < "/proc/$pid/environ" | grep '^IRQBALANCE_' | tr '\n' ' ')"
fi
echo "irqbalance_default_sha256=$(sha256sum < /etc/default/irqbalance | cut -d' ' -f1)"
echo "irqbalance_default_banned=$(grep '^IRQBALANCE_BANNED_CPULIST=' /etc/default/irqbalance)"
# Every file netfix may own on this node (the globs also catch files nobody expects).
# shellcheck disable=SC2012  # netfix names its files plainly; ls -d keeps one line each
echo "netfix_files=$(ls -d /etc/sysctl.d/*netfix* /etc/modprobe.d/*netfix* \
  /etc/modules-load.d/*netfix* /etc/udev/rules.d/*netfix* /etc/systemd/system/*netfix* \
  /etc/systemd/system/*/*netfix* /etc/netfix/* 2>/dev/null | tr '\n' ' ')"
# netfix's journal: per transaction its kind (apply, rollback) and its status line.
for f in /var/lib/netfix/tx/*.json; do
  [ -f "$f" ] || continue
  id=$(basename "$f" .json)
  kind=$(grep -m1 '^ "kind":' "$f" | cut -d'"' -f4)
  echo "tx.$id=$kind $(head -n1 "/var/lib/netfix/tx/$id.status" 2>/dev/null)"
done
echo "end=ok"
