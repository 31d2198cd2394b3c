# shellcheck shell=sh
# Confirm (after tx.sh and disarm.sh, under the lock): TX, or every applied-unconfirmed
# transaction when TX is empty. Prints CONFIRMED/REVERTING/STATUS/NOTFOUND lines; the
# journal listing follows (journal.sh).
one() {
  st=$(head -n1 "$TXD/$1.status" 2>/dev/null)
  case "$st" in
    applied-unconfirmed*)
      if disarm "$1"; then status "$1" "applied confirmed" && echo "CONFIRMED $1"
      else echo "REVERTING $1"; fi ;;
    *) printf 'STATUS %s %s\n' "$1" "$st" ;;
  esac
}
if [ -n "$TX" ]; then
  if [ -f "$TXD/$TX.json" ]; then one "$TX"; else echo "NOTFOUND $TX"; fi
else
  for f in "$TXD"/*.status; do
    [ -f "$f" ] || continue
    case "$(head -n1 "$f")" in applied-unconfirmed*) one "$(basename "$f" .status)" ;; esac
  done
fi
echo @@JOURNAL
