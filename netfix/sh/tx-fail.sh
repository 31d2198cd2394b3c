# shellcheck shell=sh
# fail I [K]: step I failed, and steps up to K may have been made (K: I when not given; more
# for a run of values, read back once all of it was written). Undo K..1 newest first, step
# I's own undo best effort (a failed write or mv leaves its target as it was), then record
# the outcome and exit (13, or 14).
fail() {
  printf 'FAILED\t%s\t%s\n' "$1" "$(cat "$E.why" 2>/dev/null)"
  R=0; undo_from "${2:-$1}" "$1"; "undo_$1" 2>/dev/null
  undo_from $(($1-1)); rmdirs "$TX"
  if [ "$R" = 0 ]; then status "$TX" failed-restored; rm -f "$E" "$E.why" "$M"; exit 13; fi
  status "$TX" failed-restore-incomplete; exit 14
}
