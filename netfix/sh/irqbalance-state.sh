# shellcheck shell=sh
# irqbalance's fact snippet: what PID 1 is (service state needs systemd as PID 1;
# elsewhere systemctl would reach the host's systemd), the service's state, and whether
# this is a RHEL-style node (/etc/sysconfig). Input: NF_SERVICE, the unit.
: "${NF_SERVICE:?}"
read -r c < /proc/1/comm || c=unknown
echo "pid1 $c"
if [ "$c" = systemd ] && command -v systemctl >/dev/null; then
  echo "enabled $(systemctl is-enabled "$NF_SERVICE" 2>/dev/null | head -n1)"
  echo "active $(systemctl is-active "$NF_SERVICE" 2>/dev/null)"
fi
[ -d /etc/sysconfig ] && echo "sysconfig yes"
