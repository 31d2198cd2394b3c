# shellcheck shell=sh
# The boot-time sysctl applier's facts (netfix.sysctld.detect): pid 1's name, whether
# systemd booted this machine (sd_booted(3): /run/systemd/system exists), the
# systemd-sysctl binary and the version of the applier that boots this node, and where
# each symlinked *.conf in the sysctl.d dirs points (Debian's 99-sysctl.conf ->
# ../sysctl.conf).
# Input: NF_DIRS, the sysctl.d dirs (words without blanks).
#
# Every plan runs this, so it forks as little as it can: only the applier that boots the
# node is asked its version, systemd's from the name of the libsystemd-shared-NNN.so that
# systemd-sysctl is linked with (a glob; `--version` only when there is not exactly one).
: "${NF_DIRS?}"
c=""; read -r c < /proc/1/comm; echo "PID1 $c"
booted=""; [ "$c" = systemd ] && booted=1
[ -d /run/systemd/system ] && booted=1 && echo BOOTED
applier=procps
for x in /usr/lib/systemd/systemd-sysctl /lib/systemd/systemd-sysctl; do
  [ -x "$x" ] || continue
  echo "SYSTEMD_SYSCTL $x"
  [ -n "$booted" ] && applier=$x
  break
done
if [ "$applier" = procps ]; then
  v=$(sysctl --version 2>/dev/null) && case $v in
    *procps-ng\ *) echo "PROCPS_VERSION ${v##*procps-ng }" ;;
  esac
else
  v=""
  for l in /usr/lib/systemd/libsystemd-shared-*.so /usr/lib/*/systemd/libsystemd-shared-*.so \
      /usr/lib64/systemd/libsystemd-shared-*.so /lib/systemd/libsystemd-shared-*.so; do
    [ -e "$l" ] || continue
    [ -z "$v" ] || { v=""; break; }  # more than one: ask the binary
    v=${l##*/libsystemd-shared-}
    v=${v%%[!0-9]*}
  done
  [ -n "$v" ] || v=$("$applier" --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
  echo "SYSTEMD_VERSION $v"
fi
# NF_DIRS: dir names, one word each, split deliberately
for d in $NF_DIRS; do
  for x in "$d"/*.conf; do
    [ -L "$x" ] && echo "LINK $x $(readlink "$x")"
  done
done
true
