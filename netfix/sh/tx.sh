# shellcheck shell=sh
# A transaction on the node (apply, rollback, the automatic revert, recovery, confirm),
# after prelude.sh. Inputs: D (state dir), TXD (its tx dir), TX (the transaction id; empty
# for a confirm of every unconfirmed one). Takes the node lock on fd 9 for the whole run.
# Exit codes (netfix.journal): 10 setup, 11 locked; the steps' are in tx-steps.sh.
: "${D?}" "${TXD?}" "${TX?}"
set -u
umask 022
E="$D/.err.$$"
{ mkdir -p "$TXD" && chmod 700 "$D"; } || { echo "ERROR cannot create $D"; exit 10; }
command -v flock >/dev/null 2>&1 || { echo "ERROR flock not found (install util-linux)"; exit 10; }
exec 9>>"$D/lock"
flock -w 30 9 || { echo "LOCKED another netfix run holds $D/lock"; exit 11; }
# Under the lock no error file is in use: what is left is from a killed run.
rm -f "$D"/.err.*
# Staged scripts and outputs of runs killed on the node (no run lasts an hour).
find "$D/run" -type f -mmin +60 -delete 2>/dev/null
# shellcheck disable=SC2034 # read by the step lines of apply and recovery (not confirm)
P="$TXD/$TX.progress"

# curv PATH: PATH's value into CUR, normalised (nf_norm), with one fork (cat).
curv() {
  CUR=$(cat -- "$1") || CUR=""
  nf_norm "$CUR"
  CUR=$NORM
}

# fsum PATH: what a file step compares: sha256 of the content, "absent", or "masked".
fsum() {
  if [ -L "$1" ] && [ "$(readlink "$1")" = /dev/null ]; then echo masked
  elif [ -f "$1" ]; then sha256sum < "$1" | cut -c1-64; else echo absent; fi
}

# wval PATH VALUE: write a kernel value and read it back (the kernel may keep another).
wval() {
  { { printf '%s\n' "$2" > "$1"; } 2>"$E" && curv "$1" && [ "$CUR" = "$2" ]; } || {
    curv "$1" 2>/dev/null
    echo "$1: kernel kept '$CUR' instead of '$2': $(cat "$E" 2>/dev/null)" > "$E.why"
    return 1; }
}

# mkd DIR: DIR and its missing parents, each one created listed in <id>.dirs (a rollback
# removes them again once they are empty).
mkd() {
  [ -d "$1" ] && return 0
  nf_dir "$1"
  mkd "$NF_DIR" && mkdir "$1" && printf '%s\n' "$1" >> "$TXD/$TX.dirs"
}

# rmdirs ID: the directories transaction ID created, deepest first, where empty.
rmdirs() {
  [ -f "$TXD/$1.dirs" ] && sort -r "$TXD/$1.dirs" | while read -r d; do
    rmdir "$d" 2>/dev/null; done
  return 0
}

# wfile PATH BASE64: a file step (nf_write, its directory made first).
wfile() {
  nf_dir "$1"
  { mkd "$NF_DIR" && nf_write "$1" "$2"; } 2>"$E" || {
    echo "$1: $(cat "$E")" > "$E.why"; return 1; }
}

# wcmd I STATE: a cmd step: set_I to STATE, then read_I must print STATE (normalised).
wcmd() {
  { ( "set_$1" "$2" ) >"$E" 2>&1 && { _x=$("read_$1"); nf_norm "$_x"; [ "$NORM" = "$2" ]; }; } || {
    echo "step $1: state is '$("read_$1" 2>/dev/null)' instead of '$2': $(cat "$E" 2>/dev/null)" > "$E.why"
    return 1; }
}

# rmfile PATH: a file step to "absent".
rmfile() {
  nf_rm "$1" 2>"$E" || { echo "$1: $(cat "$E")" > "$E.why"; return 1; }
}

# status ID WORDS: the first line of <ID>.status, with the time, written atomically.
status() {
  nf_tmp "$TXD/$1.status"
  printf '%s %s\n' "$2" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$NF_TMP" &&
    nf_commit "$NF_TMP" "$TXD/$1.status"
}
