# shellcheck shell=sh
# The boot-time sysctl applier's facts (netfix.sysctld.detect): pid 1's name, whether
# systemd booted this machine (sd_booted(3): /run/systemd/system exists), the
# systemd-sysctl binary and its version, procps' version, and where each symlinked
# *.conf in the sysctl.d dirs points (Debian's 99-sysctl.conf -> ../sysctl.conf).
# Input: NF_DIRS, the sysctl.d dirs (words without blanks).
: "${NF_DIRS?}"
c=""; read -r c < /proc/1/comm; echo "PID1 $c"
[ -d /run/systemd/system ] && echo BOOTED
for x in /usr/lib/systemd/systemd-sysctl /lib/systemd/systemd-sysctl; do
  [ -x "$x" ] || continue
  echo "SYSTEMD_SYSCTL $x"
  "$x" --version | sed -n '1s/^systemd \([0-9]*\).*/SYSTEMD_VERSION \1/p'
  break
done
command -v sysctl >/dev/null && sysctl --version | sed -n '1s/.* procps-ng /PROCPS_VERSION /p'
# NF_DIRS: dir names, one word each, split deliberately
for d in $NF_DIRS; do
  for x in "$d"/*.conf; do
    [ -L "$x" ] && echo "LINK $x $(readlink "$x")"
  done
done
true
