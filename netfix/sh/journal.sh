# shellcheck shell=sh
# The node's journal: per transaction a "TX <id> <status line>" line, then its record in
# base64 on one line. Input: TXD, the tx dir (also a fact snippet: drift reads it).
: "${TXD:?}"
for f in "$TXD"/*.json; do
  [ -f "$f" ] || continue
  # its first line, read by the builtin (head would be a fork per transaction)
  s=never-started; [ ! -f "${f%.json}.status" ] || IFS= read -r s < "${f%.json}.status"
  b=${f##*/}; echo "TX ${b%.json} $s"
  base64 -w0 < "$f"; echo
done
