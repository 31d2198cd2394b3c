# shellcheck shell=sh
# fail I [K]: step I failed, and steps up to K (I when not given) may have been made: a run
# of steps checked after all of them were made (K > I), or staged before any was (K < I).
# Undo K..1 newest first, step I's own undo best effort (a failed write or mv leaves its
# target as it was), then record the outcome and exit (13, or 14).
fail() {
  printf 'FAILED\t%s\t%s\n' "$1" "$(cat "$E.why" 2>/dev/null)"
  R=0; _k=${2:-$1}
  if [ "$_k" -ge "$1" ]; then undo_from "$_k" "$1"; "undo_$1" 2>/dev/null; _k=$(($1-1)); fi
  undo_from "$_k"; rmdirs "$TX"
  if [ "$R" = 0 ]; then status "$TX" failed-restored; rm -f "$E" "$E.why"; exit 13; fi
  status "$TX" failed-restore-incomplete; exit 14
}
