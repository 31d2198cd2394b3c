# shellcheck shell=sh
# After recover-check.sh, the undo_I functions and tx-undo.sh: undo every step the
# progress file says may have been made, newest first. Input: NF_NSTEPS, the number of
# steps (all of them may have been made when there is no progress file: a netfix that
# kept none wrote the transaction).
: "${NF_NSTEPS:?}"
K=$NF_NSTEPS
if [ -f "$P" ]; then
  K=0
  while read -r k; do case "$k" in *[!0-9]*|"") ;; *) K=$k ;; esac; done < "$P"
fi
R=0; undo_from "$K"; rmdirs "$TX"; rm -f "$E" "$E.why" "$M" "$TXD/$TX.paused"
if [ "$R" = 0 ]; then status "$TX" interrupted-restored; echo "RECOVERED $TX $K"
else status "$TX" interrupted-restore-incomplete; echo "RECOVER-INCOMPLETE $TX $K"; fi
