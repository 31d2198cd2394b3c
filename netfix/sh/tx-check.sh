# shellcheck shell=sh
# shellcheck disable=SC2034
# (SC2034: this fragment sets variables the script parts after it read: ARMED, rc, NORM, S, R)
# The before-state check of an apply script (after tx.sh): the generated lines that follow
# compare each target with what the plan saw, then `[ "$S" = 0 ] || exit 12`.
NL='
'
# gv PATH: PATH's value out of $G (`grep -aH '' -- paths`: one "path:line" per line) into
# CUR, normalised as curv does, with builtins only.
gv() {
  CUR=""; _r="${G-}"
  while [ -n "$_r" ]; do
    _l=${_r%%"$NL"*}
    case $_r in *"$NL"*) _r=${_r#*"$NL"} ;; *) _r="" ;; esac
    case $_l in "$1:"*) CUR="$CUR ${_l#"$1:"}" ;; esac
  done
  nf_norm "$CUR"
  CUR=$NORM
}
# stale PATH FOUND: PATH changed since the plan.
S=0
stale() { printf 'STALE\t%s\t%s\n' "$1" "$2"; S=1; }
