# shellcheck shell=sh
# The recovery of a transaction found "applying" (after tx.sh: under the lock, so it is
# not running any more): nothing to do unless it is still "applying".
read -r st _ < "$TXD/$TX.status" 2>/dev/null || st=""
[ "$st" = applying ] || { echo "NOT-INTERRUPTED $TX $st"; exit 0; }
