# shellcheck shell=sh
# Read-only, after waiting for the node lock (a detached run may still hold it): the
# status line of transaction TX, "absent" when the node never started it. Inputs: D, TXD.
: "${D:?}" "${TXD:?}" "${TX:?}"
exec 9>>"$D/lock" 2>/dev/null && flock -w 300 9
if [ -f "$TXD/$TX.status" ]; then head -n1 "$TXD/$TX.status"; else echo absent; fi
