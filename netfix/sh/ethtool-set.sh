# shellcheck shell=sh
# A NIC setting's setter (a journal `set` step, and a function of nic.sh): sets the state
# "$1" ("rx=2 tx=2") of group NF_GROUP on NF_IF with ONE `ethtool NF_SET` call passing
# only the keys that differ from what nf_et_read (ethtool-read.sh) prints: some drivers
# reset the link on every -G/-L, and ethtool refuses a no-op ring change.
: "${NF_SET:?}" "${NF_IF:?}"
c=" $(nf_et_read) "; a=""
# "$1": key=value words, split deliberately
for kv in $1; do
  case "$c" in *" $kv "*) ;; *) a="$a ${kv%%=*} ${kv#*=}" ;; esac
done
# shellcheck disable=SC2086 # a: "key value" words, ethtool's arguments
[ -z "$a" ] || ethtool "$NF_SET" "$NF_IF" $a
