# shellcheck shell=sh
# shellcheck disable=SC2034
# (SC2034: this fragment sets variables the script parts after it read: ARMED, rc, NORM, S, R)
# The start of /etc/netfix/nic.sh (after prelude.sh): `nic.sh [IFACE]`. The generated
# part follows: one function s<N> per setting (its journal set snippet), then per
# interface `if want IFACE; then s<N> VALUE || fail 'IFACE what'; ...; fi`, `exit "$rc"`.
rc=0
only=${1:-}
# want IFACE: IFACE is the one asked for (or all are) and it exists now.
want() { { [ -z "$only" ] || [ "$only" = "$1" ]; } && [ -e "/sys/class/net/$1" ]; }
fail() { echo "netfix-nic: $1 failed" >&2; rc=1; }
