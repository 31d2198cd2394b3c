# shellcheck shell=sh
# shellcheck disable=SC2034
# (SC2034: this fragment sets variables the script parts after it read: ARMED, rc, NORM, S, R)
# The prelude of every script netfix runs on a node, and of the boot script nic.sh: a
# known PATH and locale, and the few functions every writer shares. Builtins only, except
# where a file is written (base64, chmod, sync, mv: the same commands as ever).
#
# Functions set their results in upper-case variables (NF_DIR, NF_TMP, NORM) rather than
# printing them: $(...) would cost a fork each time.
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# nf_norm VALUE: VALUE's words joined by one space, into NORM. Words are split on blanks
# and newlines (the default IFS) without globbing: the kernel's "4096\t16384  6291456\n"
# is "4096 16384 6291456", as netfix.util.norm makes it on the controller.
nf_norm() {
  # shellcheck disable=SC2086 # splitting $1 into its words is the point; set -f: no globs
  case $- in
    *f*) set -- $1 ;;
    *) set -f; set -- $1; set +f ;;
  esac
  NORM="$*"
}

# nf_dir PATH: PATH's directory into NF_DIR (/ for /x, . for a bare name), no fork.
nf_dir() {
  case $1 in
    */*) NF_DIR=${1%/*}; NF_DIR=${NF_DIR:-/} ;;
    *) NF_DIR=. ;;
  esac
}

# nf_tmp PATH: a temporary name next to PATH (same directory: the rename is atomic) into
# NF_TMP; hidden, and with this shell's pid, so a leftover of a killed run is recognisable.
nf_tmp() {
  nf_dir "$1"
  NF_TMP="$NF_DIR/.${1##*/}.netfix.$$"
}

# nf_commit TMP PATH: TMP becomes PATH atomically and durably: PATH's mode is kept, TMP
# is fsync'd before the rename and the directory after it. TMP is removed on failure.
nf_commit() {
  { { [ ! -e "$2" ] || chmod --reference="$2" "$1"; } && sync "$1" && mv -f "$1" "$2" &&
    nf_dir "$2" && sync "$NF_DIR"; } || { rm -f "$1"; return 1; }
}

# nf_write PATH BASE64: PATH holds the decoded bytes, written atomically (nf_commit).
nf_write() {
  nf_tmp "$1"
  { printf '%s' "$2" | base64 -d > "$NF_TMP"; } || { rm -f "$NF_TMP"; return 1; }
  nf_commit "$NF_TMP" "$1"
}

# nf_rm PATH: PATH removed (no error when it is absent), the removal fsync'd.
nf_rm() {
  rm -f "$1" && nf_dir "$1" && sync "$NF_DIR"
}

# nf_systemd_pid1: true where systemd is PID 1, i.e. where systemctl manages this node
# (in a container or lab node it would reach the host's systemd, or nothing).
nf_systemd_pid1() {
  _nf_c=""
  read -r _nf_c 2>/dev/null < /proc/1/comm
  [ "$_nf_c" = systemd ]
}
