# shellcheck shell=sh
# The NIC knobs' fact snippet. It runs before the controller knows which interfaces exist,
# so it reads all links with one `ip -j -d addr` and runs ethtool only for interfaces some
# profile block may match (excludes are left to the controller). Records: "== kind args"
# lines, each followed by its payload lines.
# Inputs (space-separated word lists, validated names):
#   NF_GLOBS    name globs of the blocks          NF_DRIVERS  driver names of the blocks
#   NF_SUBS     ethtool show flags to run (l g c k)
#   NF_BYROUTE  1: a block matches the default route's interfaces
#   NF_BYDRIVER 1: a block matches by driver (ask ethtool -i where sysfs does not say)
#   NF_QUEUES   1: a block sets RPS/XPS (list the queues and read their masks)
: "${NF_GLOBS?}" "${NF_DRIVERS?}" "${NF_SUBS?}" "${NF_BYROUTE?}" "${NF_BYDRIVER?}" "${NF_QUEUES?}"
set -f
NFNL='
'
echo '== cpus'; read -r x < /sys/devices/system/cpu/online; echo "$x"
s=${SSH_CONNECTION:-}
if [ -z "$s" ] && [ -n "${SUDO_USER:-}" ]; then
  # sudo drops SSH_CONNECTION: take it from the nearest ancestor that still has it
  p=$PPID; n=0
  while [ -z "$s" ] && [ "${p:-1}" -gt 1 ] && [ $n -lt 4 ]; do
    s=$(tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | sed -n 's/^SSH_CONNECTION=//p')
    read -r l < "/proc/$p/stat" || break
    # shellcheck disable=SC2086 # the fields of /proc/PID/stat after "(comm) "
    set -- ${l##*) }
    p=$2; n=$((n+1))
  done
fi
printf '== ssh\n%s\n' "$s"
# Two ip processes (were five). `ip -j -d addr` prints every field of `ip -j -d link` that
# netfix reads (all but linkmode and inet6_addr_gen_mode) and the addresses.
echo '== link'; ip -j -d addr show 2>/dev/null; echo
# One batch for the routes: the default routes of both families (`table all`: v4 and v6
# in one command; lines of a table other than main say "table N" and are dropped) and the
# route to the SSH client. -force: a route get the kernel refuses does not end the batch;
# a word ip cannot parse would, so only an address goes in, and after the defaults.
g=""
if [ -n "$s" ]; then
  # shellcheck disable=SC2086 # SSH_CONNECTION's four words: client port server port
  set -- $s
  case "$1" in *[!0-9A-Fa-f.:]*|"") ;; *) g="route get $1" ;; esac
fi
r=$(printf 'route show default table all\n%s\n' "$g" | ip -o -force -b - 2>/dev/null)
# A line is a default route when its destination (the first word, or the second after a
# type such as `unreachable`) is "default"; the route get's destination is the address.
R=""; M=""
IFS=$NFNL
for l in $r; do
  case "$l" in *" table main "*|*" table main") ;; *" table "*) continue ;; esac
  w=${l%% *}; x=${l#"$w" }
  case "$w" in default|*[!a-z]*) x=$l ;; esac
  case "$x" in default|"default "*) R="$R$l$NFNL" ;; *) M="$M$l$NFNL" ;; esac
done
unset IFS
[ -z "$s" ] || printf '== mgmt\n%s' "$M"
printf '== route\n%s' "$R"
# The word after each "dev" of the default routes.
DEF=""; n=0
for w in $R; do [ $n = 1 ] && DEF="$DEF $w"; n=0; [ "$w" = dev ] && n=1; done
# et SUB IF: `ethtool --json -SUB IF`, or its text form where this ethtool has no JSON for
# SUB (remembered per SUB in NFJ_SUB, so the fallback costs one try per host).
et() {
  eval "m=\${NFJ_$1:-json}"
  if [ "$m" = json ]; then
    o=$(ethtool --json "-$1" "$2" 2>&1); rc=$?
    case "$o" in *"bad command line"*|*"nrecognized option"*|*"nvalid option"*)
      m=text; eval "NFJ_$1=text" ;;
    esac
  fi
  if [ "$m" = text ]; then o=$(ethtool "-$1" "$2" 2>&1); rc=$?; fi
  printf '== ethtool %s %s %s %s\n%s\n' "$2" "$1" "$m" "$rc" "$o"
}
Q=""
set +f
for d in /sys/class/net/*; do
  set -f; i=${d##*/}; [ "$i" = lo ] && continue
  w=0
  # NF_GLOBS: one glob per word, split deliberately (set -f: not expanded here)
  # shellcheck disable=SC2254 # $p unquoted: it is matched as a glob pattern
  for p in $NF_GLOBS; do case "$i" in $p) w=1 ;; esac; done
  if [ "$NF_BYROUTE" = 1 ]; then for p in $DEF; do [ "$p" = "$i" ] && w=1; done; fi
  v=""; if cd -P "$d/device/driver" 2>/dev/null; then v=${PWD##*/}; cd /; fi
  if [ -z "$v" ] && { [ $w = 1 ] || [ "$NF_BYDRIVER" = 1 ]; }; then
    v=$(ethtool -i "$i" 2>/dev/null); v=${v#driver: }; v=${v%%"$NFNL"*}
  fi
  # NF_DRIVERS: one driver name per word, split deliberately
  for p in $NF_DRIVERS; do [ "$p" = "$v" ] && w=1; done
  [ $w = 1 ] || continue
  printf '== driver %s\n%s\n' "$i" "$v"
  # NF_SUBS: one ethtool flag letter per word, split deliberately
  for c in $NF_SUBS; do et "$c" "$i"; done
  if [ "$NF_QUEUES" = 1 ]; then
    printf '== queues %s\n' "$i"; set +f
    for q in "$d"/queues/*; do
      q=${q##*/}; echo "$q"
      case "$q" in
        rx-*) Q="$Q $d/queues/$q/rps_cpus $d/queues/$q/rps_flow_cnt" ;;
        tx-*) Q="$Q $d/queues/$q/xps_cpus" ;;
      esac
    done
    set -f
  fi
done
set -f
if [ -n "$Q" ]; then
  echo '== qvalues'
  # shellcheck disable=SC2086 # Q: the queue files, one word each (sysfs names, no blanks)
  grep -H '' $Q 2>/dev/null
fi
