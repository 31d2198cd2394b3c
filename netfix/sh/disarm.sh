# shellcheck shell=sh
# disarm ID (after tx.sh, under the lock): 0 = the armed revert of ID is disarmed; 1 =
# nothing armed any more (the revert started, or ran). The rename is atomic: a revert
# runs completely or not at all, and never after a confirm succeeded.
disarm() {
  mv "$TXD/$1.revert.sh" "$TXD/$1.revert.off" 2>/dev/null || return 1
  if [ -f "$TXD/$1.revert.unit" ]; then
    systemctl stop "$(cat "$TXD/$1.revert.unit")" >/dev/null 2>&1
  fi
  p=$(cat "$TXD/$1.revert.pid" 2>/dev/null)
  # Only our sleeper: after a reboot the pid may be anyone's.
  case "$p" in ""|*[!0-9]*) ;; *)
    tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF "$1.revert" && kill -- "-$p" 2>/dev/null ;;
  esac
  rm -f "$TXD/$1.revert.off" "$TXD/$1.revert.pid" "$TXD/$1.revert.unit"
}
