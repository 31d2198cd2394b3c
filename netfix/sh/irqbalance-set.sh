# shellcheck shell=sh
# nf_irqbalance_set SHA: irqbalance's defaults file NF_PATH gets the content whose sha256
# is SHA ("absent": removed), atomically (nf_write), then a running irqbalance (NF_SERVICE)
# is restarted where systemd is PID 1. One journal cmd step carries both contents, so a
# rollback restarts the daemon after the old file is back. NF_CONTENTS: "SHA:BASE64"
# words, one per content the step can write ("absent:" for none). No glob characters in
# them: sha256 hex or "absent", then base64.
nf_irqbalance_set() {
  for _nf_kv in $NF_CONTENTS; do
    [ "${_nf_kv%%:*}" = "$1" ] || continue
    if [ "$1" = absent ]; then nf_rm "$NF_PATH" || return 1
    else nf_write "$NF_PATH" "${_nf_kv#*:}" || return 1; fi
    if nf_systemd_pid1; then systemctl try-restart "$NF_SERVICE" || true; fi
    return 0
  done
  echo "unknown content $1" >&2
  return 1
}
