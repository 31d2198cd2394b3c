# shellcheck shell=sh
# Run by a rollback of an unconfirmed transaction NF_DISARM (after disarm.sh, under the
# lock, before its journal is written): take over from the armed revert, or stop with
# REVERTING (exit 15) when the node is already reverting it. .revert.run exists from the
# moment the timer took the script until the revert is done; the revert may be waiting
# for the lock this script holds.
: "${NF_DISARM:?}"
if [ -f "$TXD/$NF_DISARM.revert.sh" ]; then
  disarm "$NF_DISARM" || { echo "REVERTING $NF_DISARM"; exit 15; }
elif [ -f "$TXD/$NF_DISARM.revert.run" ]; then
  echo "REVERTING $NF_DISARM"; exit 15
fi
