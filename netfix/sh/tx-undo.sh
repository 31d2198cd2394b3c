# shellcheck shell=sh
# shellcheck disable=SC2034
# (SC2034: this fragment sets variables the script parts after it read: ARMED, rc, NORM, S, R)
# After tx.sh and the undo_I functions, in apply and recovery scripts.
# undo_from K [L]: undo steps K..L+1 (L: 0 when not given), newest first; R=1 when one of
# them failed (R is not reset: the caller sets R=0 first).
undo_from() {
  i=$1
  while [ "$i" -gt "${2:-0}" ]; do
    "undo_$i" || { R=1; printf 'UNDO-FAILED\t%s\t%s\n' "$i" "$(cat "$E.why")"; }
    i=$((i-1))
  done
}
