# shellcheck shell=sh
# A NIC setting's reader (a journal `read` step, and inside the setter): the current state
# of the keys NF_KEYS of group NF_GROUP on NF_IF, printed as netfix.ethtool.state() does
# ("rx=2 tx=2"), from ethtool's text output, which every ethtool release prints; the
# same numbers netfix.ethtool's Python parsers compute from the facts (a unit test feeds
# both the recorded outputs). NF_NAMES: the name ethtool prints for each key, in order
# (offloads: `-K gro` is printed as generic-receive-offload). NF_SHOW: the show flag.
: "${NF_GROUP:?}" "${NF_SHOW:?}" "${NF_IF:?}" "${NF_KEYS:?}" "${NF_NAMES:?}"
ethtool "-$NF_SHOW" "$NF_IF" 2>/dev/null | awk -v g="$NF_GROUP" -v keys="$NF_KEYS" -v names="$NF_NAMES" '
  g == "channels" || g == "rings" {
    if ($0 ~ /^Current hardware settings/) { c = 1; next }
    if (c) { k = tolower($0); sub(/:.*/, "", k); gsub(/ /, "-", k); v[k] = $NF }
    next
  }
  g == "coalesce" && /^Adaptive RX:/ { v["adaptive-rx"] = $3; v["adaptive-tx"] = $5; next }
  { k = $1; sub(/:$/, "", k); v[k] = $2 }
  END {
    n = split(keys, key, " "); split(names, name, " "); out = ""
    for (i = 1; i <= n; i++) out = out (i > 1 ? " " : "") key[i] "=" v[name[i]]
    print out
  }'
