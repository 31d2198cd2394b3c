# shellcheck shell=sh
# shellcheck disable=SC2034
# (SC2034: this fragment sets variables the script parts after it read: ARMED, rc, NORM, S, R)
# After tx.sh and the undo_I functions, in apply and recovery scripts.
# undo_from K: undo steps K..1, newest first; R=1 when one of them failed.
undo_from() {
  R=0; i=$1
  while [ "$i" -ge 1 ]; do
    "undo_$i" || { R=1; printf 'UNDO-FAILED\t%s\t%s\n' "$i" "$(cat "$E.why")"; }
    i=$((i-1))
  done
}
