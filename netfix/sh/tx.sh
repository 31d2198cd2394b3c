# shellcheck shell=sh
# A transaction on the node (apply, rollback, the automatic revert, recovery, confirm),
# after prelude.sh. Inputs: D (state dir), TXD (its tx dir), TX (the transaction id; empty
# for a confirm of every unconfirmed one). Takes the node lock on fd 9 for the whole run.
# Exit codes (netfix.journal): 10 setup, 11 locked; the steps' are in tx-steps.sh.
: "${D?}" "${TXD?}" "${TX?}"
set -u
umask 022
E="$D/.err.$$"
# Made once (the first run): a mkdir and a chmod on every run would be two forks each.
[ -d "$TXD" ] || { mkdir -p "$TXD" && chmod 700 "$D"; } || { echo "ERROR cannot create $D"; exit 10; }
command -v flock >/dev/null 2>&1 || { echo "ERROR flock not found (install util-linux)"; exit 10; }
exec 9>>"$D/lock"
flock -w 30 9 || { echo "LOCKED another netfix run holds $D/lock"; exit 11; }
# Under the lock no error file is in use: what is left is from a killed run.
# rm and find only when there is something for them: the globs are builtins, forks are not.
for f in "$D"/.err.*; do [ -e "$f" ] && rm -f "$D"/.err.*; break; done
# Staged scripts and outputs of runs killed on the node (no run lasts an hour): only files
# other than this run's own (NF_SELF, the staged file stage.sh sources; else $0, the
# script sh was given) and its .out/.err can be that old.
NF_SELF=${NF_SELF:-$0}
for f in "$D"/run/*; do
  case $f in "$NF_SELF" | "$NF_SELF".*) ;; *) [ -e "$f" ] && find "$D/run" -type f -mmin +60 -delete 2>/dev/null; break ;; esac
done
NL='
'
# shellcheck disable=SC2034 # read by the step lines of apply and recovery (not confirm)
P="$TXD/$TX.progress"
# A rollback's or revert's marks (what its target's status becomes), from its begin until
# they are written (see the end of this file).
M="$TXD/$TX.marks"

# curv PATH: PATH's value into CUR, normalised (nf_norm), with one fork (cat).
curv() {
  CUR=$(cat -- "$1") || CUR=""
  nf_norm "$CUR"
  CUR=$NORM
}

# gv PATH: PATH's value out of $G (`grep -aH '' -- paths`: one "path:line" per line) into
# CUR, normalised as curv does, with builtins only: one grep reads a run of values.
gv() {
  CUR=""; _r="${G-}"
  while [ -n "$_r" ]; do
    _l=${_r%%"$NL"*}
    case $_r in *"$NL"*) _r=${_r#*"$NL"} ;; *) _r="" ;; esac
    case $_l in "$1:"*) CUR="$CUR ${_l#"$1:"}" ;; esac
  done
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

# fh PATH: fsum PATH, for a regular file out of $H (`sha256sum -- paths`: "hash  path"
# lines, one sha256sum for every file of the check) into CUR. The check calls fh in the
# order of sha256sum's arguments, so the line after the last one found (HR) is nearly
# always this file's: a scan of all of H per file made a rollback of the agent's 342-file
# install O(files^2), 15 s here and over 2 minutes on an emulated VM. Else (a file
# sha256sum could not read, one checked twice) the whole scan, as before.
HR=""
fh() {
  _l=${HR%%"$NL"*}
  if [ "${_l#*"  "}" = "$1" ]; then
    case $HR in *"$NL"*) HR=${HR#*"$NL"} ;; *) HR="" ;; esac
    if [ -L "$1" ]; then CUR=$(fsum "$1"); else CUR=${_l%%" "*}; fi
    return
  fi
  if [ -L "$1" ]; then CUR=$(fsum "$1"); return; fi
  [ -f "$1" ] || { CUR=absent; return; }
  CUR=""; _r="${H-}"
  while [ -n "$_r" ]; do
    _l=${_r%%"$NL"*}
    case $_r in *"$NL"*) _r=${_r#*"$NL"} ;; *) _r="" ;; esac
    [ "${_l#*"  "}" = "$1" ] && CUR=${_l%%" "*}
  done
}

# wv PATH VALUE: a value step's write; its read-back (vchk) comes once the run of value
# steps it is in is written, for the whole run with one grep.
wv() {
  { printf '%s\n' "$2" > "$1"; } 2>"$E" || {
    curv "$1" 2>/dev/null
    echo "$1: kernel kept '$CUR' instead of '$2': $(cat "$E" 2>/dev/null)" > "$E.why"
    return 1; }
}

# vchk PATH VALUE: PATH (out of $G) holds VALUE: the kernel may keep another.
vchk() {
  gv "$1"
  [ "$CUR" = "$2" ] || { echo "$1: kernel kept '$CUR' instead of '$2'" > "$E.why"; return 1; }
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
  _f="$TXD/$1.dirs"
  [ -f "$_f" ] || return 0
  # Newest first (children were listed after their parents), by builtins, one rmdir.
  set --
  while IFS= read -r _d; do set -- "$_d" "$@"; done < "$_f"
  [ $# = 0 ] || rmdir -- "$@" 2>/dev/null
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

# fstage PATH CONTENT: the temp file of a file step (NF_TMP) holds CONTENT, its directory
# made first; the target is not touched yet. CONTENT is the bytes themselves, quoted by the
# controller: printf '%s' writes them exactly, with no fork (fstage64: not text, base64).
fstage() {
  nf_dir "$1"
  { mkd "$NF_DIR" && nf_tmp "$1" && printf '%s' "$2" > "$NF_TMP"; } 2>"$E" || {
    echo "$1: $(cat "$E")" > "$E.why"; return 1; }
}
fstage64() {
  nf_dir "$1"
  { mkd "$NF_DIR" && nf_tmp "$1" && printf '%s' "$2" | base64 -d > "$NF_TMP"; } 2>"$E" || {
    echo "$1: $(cat "$E")" > "$E.why"; return 1; }
}

# fput PATH: the staged temp file becomes PATH (its mode kept): the step's change. One sync
# puts the temp file and the step's progress mark on disk before the rename; PATH's
# directory is synced once for the run of file steps it is in (dsync).
fput() {
  { { [ ! -e "$1" ] || chmod --reference="$1" "$NF_TMP"; } && sync "$P" "$NF_TMP" &&
    mv -f "$NF_TMP" "$1"; } 2>"$E" || { echo "$1: $(cat "$E")" > "$E.why"; rm -f "$NF_TMP"; return 1; }
}

# wf PATH CONTENT, wf64 PATH BASE64: a file step.
wf() { fstage "$1" "$2" && fput "$1"; }
wf64() { fstage64 "$1" "$2" && fput "$1"; }

# frm PATH: a file step to "absent", its progress mark on disk first.
frm() {
  { sync "$P" && rm -f "$1"; } 2>"$E" || { echo "$1: $(cat "$E")" > "$E.why"; return 1; }
}

# dsync DIR...: the renames and removals of a run of file steps on disk, with one sync.
dsync() {
  sync "$@" 2>"$E" || { echo "sync $*: $(cat "$E")" > "$E.why"; return 1; }
}

# now: the time of this run into NOW, from one date for all its status lines.
now() {
  [ -n "${NOW-}" ] || NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
}

# stw ID WORDS: the temp file of <ID>.status holds WORDS and the time (see status).
stw() {
  now; nf_tmp "$TXD/$1.status"
  printf '%s %s\n' "$2" "$NOW" > "$NF_TMP"
}

# status ID WORDS: the first line of <ID>.status, with the time, written atomically and
# durably (nf_commit, less its chmod: a status file always has the mode umask gives).
status() {
  { stw "$1" "$2" && sync "$NF_TMP" && mv -f "$NF_TMP" "$TXD/$1.status" && sync "$TXD"; } ||
    { rm -f "$NF_TMP"; return 1; }
}

# begin RECORD [MARKS]: the journal record (its bytes) and the status "applying" on disk
# before the first change: the progress file, the record and the status with one sync, then
# their directory with one. The record is renamed first (a record without status reads
# "never-started", as before the status was ever written). MARKS ("ID WORDS" lines: a
# rollback's or revert's target and its status to be) go to $M in the same sync.
begin() {
  { : > "$P" && { [ -z "${2-}" ] || printf '%s' "$2" > "$M"; }; } 2>/dev/null ||
    { echo "ERROR cannot write $P"; exit 10; }
  fstage "$TXD/$TX.json" "$1" || { echo "ERROR journal: $(cat "$E.why")"; exit 10; }
  _j=$NF_TMP; _s=""
  { stw "$TX" applying && _s=$NF_TMP && sync "$P" ${2:+"$M"} "$_j" "$_s" && mv -f "$_j" "$TXD/$TX.json" &&
    mv -f "$_s" "$TXD/$TX.status" && sync "$TXD"; } 2>"$E" ||
    { rm -f "$_j" "$_s"; echo "ERROR cannot write the journal in $TXD: $(cat "$E")"; exit 10; }
}

# Under the lock, before anything else: a rollback or revert cut off after its own final
# status "applied" and before its marks left <id>.marks; write what it did not get to.
# One of another end (cut off while applying: recovery undoes it; failed) marks nothing.
# Builtins only, unless there is such a file.
for _m in "$TXD"/*.marks; do
  [ -f "$_m" ] || break
  _st=""; read -r _st _ < "${_m%.marks}.status" 2>/dev/null
  case $_st in
    applying) continue ;;
    applied)
      _ok=1
      while read -r _id _w; do
        _a=""; _b=""; read -r _a _b _ < "$TXD/$_id.status" 2>/dev/null
        [ "$_a $_b" = "$_w" ] || status "$_id" "$_w" || _ok=0
      done < "$_m"
      [ "$_ok" = 1 ] && rm -f "$_m" ;;
    *) rm -f "$_m" ;;
  esac
done
