# shellcheck shell=sh
# The node's journal: per transaction a "TX <id> <status line>" line; then, when there is
# any, a "SIZE <bytes>" line per record (one stat) and "BLOB " + every record, in the same
# order, in one base64 (one cat): three processes however long the history is (a base64
# per transaction grew with every apply and rollback). Input: TXD, the tx dir (also a fact
# snippet: drift, history and rollback read it).
: "${TXD:?}"
_jl=""
_jnl='
'
for f in "$TXD"/*.json; do
  [ -f "$f" ] || continue
  # its first line, read by the builtin (head would be a fork per transaction)
  s=never-started; [ ! -f "${f%.json}.status" ] || IFS= read -r s < "${f%.json}.status"
  b=${f##*/}; echo "TX ${b%.json} $s"
  _jl="$_jl$f$_jnl"
done
if [ -n "$_jl" ]; then
  set -f; IFS=$_jnl
  # shellcheck disable=SC2086 # one argument per record path (ids are plain names)
  stat -c 'SIZE %s' -- $_jl
  printf 'BLOB '
  # shellcheck disable=SC2086 # the same paths, in the same order
  cat -- $_jl | base64 -w0; echo
  unset IFS; set +f
fi
