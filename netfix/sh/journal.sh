# shellcheck shell=sh
# The node's journal: per transaction a "TX <id> <status line>" line, then its record in
# base64 on one line. Input: TXD, the tx dir (also a fact snippet: drift reads it).
: "${TXD:?}"
for f in "$TXD"/*.json; do
  [ -f "$f" ] || continue
  s=$(head -n1 "${f%.json}.status" 2>/dev/null) || s=never-started
  b=${f##*/}; echo "TX ${b%.json} $s"
  base64 -w0 < "$f"; echo
done
