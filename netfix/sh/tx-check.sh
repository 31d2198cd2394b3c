# shellcheck shell=sh
# shellcheck disable=SC2034
# (SC2034: this fragment sets variables the script parts after it read: ARMED, rc, NORM, S, R)
# The before-state check of an apply script (after tx.sh): the generated lines that follow
# compare each target with what the plan saw (values out of one grep, files out of one
# sha256sum: gv and fh in tx.sh), then `[ "$S" = 0 ] || exit 12`.
# stale PATH FOUND: PATH changed since the plan.
S=0
stale() { printf 'STALE\t%s\t%s\n' "$1" "$2"; S=1; }
