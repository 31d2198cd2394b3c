# shellcheck shell=sh
# The firewall's fact snippet: is nft usable, where is it, is there systemd, and the
# desired table as this node's nft prints it: NF_RULESET (base64; empty when the firewall
# is disabled) loaded into a throwaway network namespace (`unshare -n`) and listed there.
# The same round trip, the exact form the node will print (`priority -150` prints as
# `priority mangle` on some versions), and an nft syntax or kernel-support error is
# reported in the plan before anything is changed.
# NF_CACHE_RENDER: the render the controller kept from this node's last plan of the same
# ruleset (netfix/rendercache.py), made under nft NF_CACHE_NFT and kernel NF_CACHE_KERNEL;
# when this node's nft --version line and kernel release are those, it is printed back
# (RENDER-CACHED) instead of rendered again: no unshare, nft, sed, base64, mktemp or rm.
: "${NF_RULESET?}" "${NF_CACHE_NFT?}" "${NF_CACHE_KERNEL?}" "${NF_CACHE_RENDER?}"
n=$(command -v nft) || n=""
ok=0
if [ -z "$n" ]; then echo "NFT none"
elif v=$(nft --version 2>&1); then echo "NFT ok $n $v"; ok=1
else echo "NFT broken $n $(printf %s "$v" | head -c 200 | tr "\n" " ")"; fi
if [ -d /etc/systemd/system ]; then echo SYSTEMD yes; else echo SYSTEMD no; fi
k=""
if [ -n "$NF_CACHE_RENDER" ] && [ $ok = 1 ]; then read -r k < /proc/sys/kernel/osrelease; fi
if [ -z "$NF_RULESET" ]; then
  :
elif [ -n "$NF_CACHE_RENDER" ] && [ $ok = 1 ] && [ "$v" = "$NF_CACHE_NFT" ] && [ "$k" = "$NF_CACHE_KERNEL" ]; then
  printf 'RENDER-CACHED %s\n' "$NF_CACHE_RENDER"
elif [ -n "$n" ] && command -v unshare >/dev/null 2>&1; then
  d=$(mktemp -d) && printf %s "$NF_RULESET" | base64 -d > "$d/r.nft"
  # shellcheck disable=SC2016 # $1 is expanded by the inner sh: the ruleset's path
  if unshare -n sh -c 'nft -f "$1" && nft -s list table inet netfix' sh "$d/r.nft" > "$d/out" 2> "$d/err"; then
    printf 'RENDER %s\n' "$(sed 's/^[[:space:]]*//; s/[[:space:]]*$//; /^$/d' "$d/out" | base64 -w0)"
  else printf 'RENDER-ERROR %s\n' "$(head -c 2000 "$d/err" | base64 -w0)"; fi
  rm -rf "$d"
elif [ -n "$n" ]; then
  echo "RENDER-ERROR $(printf %s 'unshare (util-linux) not found: cannot render the ruleset on this node' | base64 -w0)"
fi
