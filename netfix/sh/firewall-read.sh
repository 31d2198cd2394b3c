# shellcheck shell=sh
# The firewall's state (a journal `read` step and a fact snippet): table inet netfix as
# nft prints it, normalised (leading/trailing blanks and empty lines dropped: they vary
# between nft versions and mean nothing), base64 on one line; "absent" when netfix has no
# table; "nft-unavailable" when nft cannot even list tables.
if t=$(nft list tables inet 2>/dev/null); then
  if printf '%s\n' "$t" | grep -qx 'table inet netfix'; then
    nft -s list table inet netfix | sed 's/^[[:space:]]*//; s/[[:space:]]*$//; /^$/d' | base64 -w0; echo
  else echo absent; fi
else echo nft-unavailable; fi
