# shellcheck shell=sh
# Staged delivery of a write script (apply, rollback, confirm), run as
# `sh -c STAGE netfix-stage LENGTH SHA256 STATE_DIR` with the script on stdin. A write
# script must never run in part: the node first stores it whole and checks its sha256
# (and, to say how much arrived, its length), so a connection cut mid-transfer runs
# nothing (exit 16). It then runs detached, in its own session with its output in files:
# a controller killed or an SSH session cut mid-run cannot stop it half-way, and the
# controller reads the outcome from the node's journal when it reconnects. Exit 17: the
# detached run ended without an exit code.
# Every process here is paid on each node of a fleet: the file is made by the shell
# (noclobber: O_EXCL, mktemp only if a dead run left that name), the length is counted only
# when the hash is wrong, the script runs in a subshell of the detached shell (a fork, not
# another sh), and an empty stderr is not cat'ed.
set -u; umask 077; r="$3/run"
{ { [ -d "$r" ] || mkdir -p "$r"; } &&
  { f="$r/s.$$"; { set -C; : > "$f"; } 2>/dev/null || f=$(mktemp "$r/s.XXXXXXXX"); }; } ||
  { echo "ERROR cannot stage the script in $r"; exit 10; }
set +C
cat > "$f"; h=$(sha256sum < "$f"); h=${h%%[!0-9a-f]*}
if [ "$h" != "$2" ]; then n=$(wc -c < "$f"); rm -f "$f"
  echo "ERROR the script arrived incomplete ($n of $1 bytes): nothing was run"; exit 16; fi
# shellcheck disable=SC2016 # $1/$2 are the inner sh's: the staged script and our pid
setsid sh -c 'trap "" HUP PIPE; NF_SELF=$1; (. "$1") > "$1.out" 2> "$1.err" < /dev/null; echo $? > "$1.rc"
  kill -0 "$2" 2>/dev/null || rm -f "$1" "$1.out" "$1.err" "$1.rc"' netfix-run "$f" $$ < /dev/null &
wait $!; cat "$f.out"; [ ! -s "$f.err" ] || cat "$f.err" >&2
{ read -r rc < "$f.rc"; } 2>/dev/null || rc=17
rm -f "$f" "$f.out" "$f.err" "$f.rc"; exit "$rc"
