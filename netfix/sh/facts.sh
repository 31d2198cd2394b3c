# shellcheck shell=sh
# The fact script (after prelude.sh): the host records, transactions left "applying" and
# the tools; then the generated `v` lines and facts-values.sh, the `f`/`d`/`j` lines, the
# knobs' snippets and facts-files.sh.
# Every record is one line: @@NF<TAB>kind<TAB>name<TAB>state<TAB>payload.
# Input: NF_TOOLS, the commands whose presence is reported.
#
# Builtins only where it matters: on a lab machine 20 nodes run this at once on 2 cores,
# so each fork counts. Values use `read`; all files go through one stat and one base64.
: "${NF_TOOLS?}"
set -f
NL='
'
F=""
V=""
# shellcheck disable=SC2034 # the snippets' outputs, read by facts-files.sh
NF_SOUT=""
NF_PROCS=""
# v PATH: a single-value file: absent, read-only or writable (its value comes from the
# one grep of facts-values.sh).
v() {
  if [ -e "$1" ]; then
    if [ -w "$1" ]; then s=rw; else s=ro; fi
    printf '@@NF\tv\t%s\t%s\t\n' "$1" "$s"; V="$V$1$NL"
  else printf '@@NF\tv\t%s\tabsent\t\n' "$1"; fi
}
# f PATH: a whole file (content from facts-files.sh), masked or absent.
f() {
  if [ -L "$1" ] && [ "$(readlink "$1")" = /dev/null ]; then
    printf '@@NF\tf\t%s\tmasked\t\n' "$1"
  elif [ -f "$1" ] && [ -r "$1" ]; then F="$F$1$NL"
  else printf '@@NF\tf\t%s\tabsent\t\n' "$1"; fi
}
# nf_pids NAME...: the /proc/PID dirs of the processes named NAME, into NF_PIDS, in the
# order of /proc's glob. From NF_PROCS, the fact script's one scan of /proc/*/comm
# (`path:comm` lines, only the wanted names, so no blanks): one grep for every writer,
# where a loop of `read`s per writer cost a syscall per byte of every process's name.
nf_pids() {
  NF_PIDS=""
  for _l in $NF_PROCS; do
    for _n in "$@"; do
      [ "${_l#*:}" = "$_n" ] && NF_PIDS="$NF_PIDS ${_l%/comm:*}"
    done
  done
  return 0
}
# d DIR: every *.conf in DIR, as f.
d() {
  set +f
  for x in "$1"/*.conf; do { [ -e "$x" ] || [ -L "$x" ]; } && f "$x"; done
  set -f
  printf '@@NF\td\t%s\tlisted\t\n' "$1"
}
# j DIR: netfix's journal in DIR: per transaction a `tx` record with its status line
# (read by the builtin) and its record among the files, so the whole history costs no
# process of its own (journal.sh, for confirm, costs three).
j() {
  set +f
  for x in "$1"/*.json; do
    [ -f "$x" ] || continue
    s=never-started; [ ! -f "${x%.json}.status" ] || IFS= read -r s < "${x%.json}.status"
    printf '@@NF\ttx\t%s\t\t%s\n' "$x" "$s"; F="$F$x$NL"
  done
  set -f
}
# J DIR: as j, for drift and the agent: only the records of transactions that may still be
# in force. One undone (rolled back, reverted, restored after a failure or a cut) and the
# rollback or revert its status names (complete: its mark is written) are listed by
# status alone (`tx-undone`): every record holds the bytes of the files it wrote, and
# reading them all made each drift check grow with the node's history.
J() {
  set +f
  _u=" "
  for x in "$1"/*.status; do
    [ -f "$x" ] || continue
    s=""; IFS= read -r s < "$x"
    _i=${x##*/}; _i=${_i%.status}
    case $s in
      rolled-back\ * | reverted-unconfirmed\ *) _r=${s#* }; _u="$_u$_i ${_r%% *} " ;;
      interrupted-restored | interrupted-restored\ * | failed-restored | failed-restored\ *)
        _u="$_u$_i " ;;
    esac
  done
  for x in "$1"/*.json; do
    [ -f "$x" ] || continue
    s=never-started; [ ! -f "${x%.json}.status" ] || IFS= read -r s < "${x%.json}.status"
    _i=${x##*/}
    case $_u in
      *" ${_i%.json} "*) printf '@@NF\ttx-undone\t%s\t\t%s\n' "$x" "$s" ;;
      *) printf '@@NF\ttx\t%s\t\t%s\n' "$x" "$s"; F="$F$x$NL" ;;
    esac
  done
  set -f
}
read -r x < /proc/sys/kernel/hostname; printf '@@NF\thost\thostname\t\t%s\n' "$x"
read -r x < /proc/sys/kernel/osrelease; printf '@@NF\thost\tkernel\t\t%s\n' "$x"
read -r x < /sys/devices/system/cpu/online; printf '@@NF\thost\tcpus\t\t%s\n' "$x"
while read -r k x _; do [ "$k" = MemTotal: ] && break; done < /proc/meminfo
printf '@@NF\thost\tmem_kb\t\t%s\n' "$x"
while read -r k x _; do [ "$k" = Uid: ] && break; done < /proc/self/status
printf '@@NF\thost\tuid\t\t%s\n' "$x"
x=""; read -r x < /etc/machine-id 2>/dev/null; printf '@@NF\thost\tmachine_id\t\t%s\n' "$x"
# Transactions left "applying": the engine recovers them (builtins unless one is).
set +f
for x in /var/lib/netfix/tx/*.status; do
  [ -f "$x" ] || continue
  read -r s _ < "$x"
  [ "$s" = applying ] || continue
  x=${x%.status}; printf '@@NF\tpending\t%s\t\t' "${x##*/}"
  base64 -w0 < "$x.json" 2>/dev/null; echo
done
set -f
# NF_TOOLS: command names, one word each, split deliberately (set -f: no globs)
for t in $NF_TOOLS; do
  if command -v "$t" >/dev/null 2>&1; then s=yes; else s=no; fi
  printf '@@NF\ttool\t%s\t%s\t\n' "$t" "$s"
done
