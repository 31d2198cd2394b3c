# shellcheck shell=sh
# The firewall's setter (a journal `set` step): loads state "$1", the whole table in ONE
# `nft -f` of "table inet netfix / delete table inet netfix / <listing>" (atomic, and the
# add makes the delete safe when the table is missing), or deletes it for "absent". Never
# a flush: kube-proxy's and the CNI's tables are not touched.
if [ "$1" = absent ]; then
  if nft list tables inet | grep -qx 'table inet netfix'; then nft delete table inet netfix; fi
else
  f=$(mktemp) || return 1
  { printf 'table inet netfix\ndelete table inet netfix\n' && printf '%s' "$1" | base64 -d; } > "$f" && nft -f "$f"; r=$?; rm -f "$f"
  [ "$r" = 0 ]
fi
