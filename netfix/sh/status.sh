# shellcheck shell=sh
# Read-only: the status line of transaction TX (what apply's reconnect asks).
: "${TXD:?}" "${TX:?}"
head -n1 "$TXD/$TX.status"
