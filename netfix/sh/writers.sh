# shellcheck shell=sh
# The fact helpers of the writer models (netfix/writers): loaded before tuned.sh,
# linkfiles.sh and cni.sh, inside the fact script's subshell (globs on).
# Records, one a line: "PROC pid comm", "ARG word" (its command line, one word a line),
# "F path" then "| line" for each line of that file, "M path" for a file masked by a
# symlink to /dev/null. Nothing read here is ever run.

# w_procs NAME...: every process whose comm (15 chars at most) is one of NAME (found by
# the fact script's one scan, NF_PROCS: see nf_pids in facts.sh; the writer's needs name
# them).
w_procs() {
  for l in $NF_PROCS; do
    c=${l#*:}
    for n in "$@"; do
      [ "$c" = "$n" ] || continue
      p=${l%/comm:*}
      echo "PROC ${p#/proc/} $c"
      tr '\0' '\n' < "$p/cmdline" 2>/dev/null | sed 's/^/ARG /'
    done
  done
}

# w_dump FILE...: each FILE's lines without comment and blank lines; absent ones: nothing.
# One awk for all files (a fork per file costs more than the reading); an empty file
# still gets its "F" line, since it is a file that hides others of its name.
w_dump() {
  n=$#
  while [ "$n" -gt 0 ]; do
    f=$1
    shift
    n=$((n - 1))
    if [ -L "$f" ] && [ "$(readlink "$f")" = /dev/null ]; then
      echo "M $f"
    elif [ -f "$f" ] && [ -r "$f" ]; then
      [ -s "$f" ] || echo "F $f"
      set -- "$@" "$f"
    fi
  done
  [ "$#" -eq 0 ] || awk 'FNR == 1 { print "F " FILENAME }
    /^[[:space:]]*([#;]|$)/ { next }
    { print "| " $0 }' "$@"
}
