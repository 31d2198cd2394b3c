# shellcheck shell=sh
# fail I: step I failed: undo it (best effort: a failed write or mv leaves its target as it
# was) and every step before it, then record the outcome and exit (13, or 14).
fail() {
  printf 'FAILED\t%s\t%s\n' "$1" "$(cat "$E.why" 2>/dev/null)"
  "undo_$1" 2>/dev/null
  undo_from $(($1-1)); rmdirs "$TX"
  if [ "$R" = 0 ]; then status "$TX" failed-restored; rm -f "$E" "$E.why"; exit 13; fi
  status "$TX" failed-restore-incomplete; exit 14
}
