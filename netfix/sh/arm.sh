# shellcheck shell=sh
# shellcheck disable=SC2034
# (SC2034: this fragment sets variables the script parts after it read: ARMED, rc, NORM, S, R)
# `apply --confirm N`: arm, run by the apply script after its last step, leaves a revert
# armed that needs neither Python nor the controller: the inverse transaction, written to
# <id>.revert.sh and run after N seconds by a systemd timer where systemd is PID 1, else by
# a detached sleeper. On success ARMED says how, for the status line.
# Inputs: NF_ARM_SH, NF_ARM_PID, NF_ARM_UNITF (the <id>.revert.sh/.pid/.unit paths),
# NF_ARM_REVERT (the revert script, base64), NF_ARM_SECONDS, NF_ARM_UNIT (the systemd unit
# name), NF_ARM_RUNNER (sh that renames .revert.sh away and runs it: whoever renames first
# wins) and NF_ARM_SLEEPER (sh that writes its pid, sleeps, then runs the runner).
: "${NF_ARM_SH:?}" "${NF_ARM_PID:?}" "${NF_ARM_UNITF:?}" "${NF_ARM_REVERT:?}"
: "${NF_ARM_SECONDS:?}" "${NF_ARM_UNIT:?}" "${NF_ARM_RUNNER:?}" "${NF_ARM_SLEEPER:?}"
armfail() {
  echo "cannot arm the automatic revert: $1" > "$E.why"; rm -f "$NF_ARM_SH"; return 1
}
arm() {
  wfile "$NF_ARM_SH" "$NF_ARM_REVERT" || return 1
  if [ -d /run/systemd/system ] && nf_systemd_pid1 && command -v systemd-run >/dev/null 2>&1; then
    systemd-run --quiet --collect --unit="$NF_ARM_UNIT" --on-active="${NF_ARM_SECONDS}s" \
      --timer-property=AccuracySec=100ms /bin/sh -c "$NF_ARM_RUNNER" 2>"$E" ||
      { armfail "systemd-run: $(cat "$E")"; return 1; }
    echo "$NF_ARM_UNIT.timer" > "$NF_ARM_UNITF"
    ARMED="revert in ${NF_ARM_SECONDS}s by $NF_ARM_UNIT.timer"
  else
    command -v setsid >/dev/null 2>&1 || { armfail "setsid not found (util-linux)"; return 1; }
    rm -f "$NF_ARM_PID"
    # The sleeper must not keep fd 9: it holds the node lock, which the revert itself and
    # any confirm need, and it must not keep the SSH session's pipes open either.
    setsid sh -c "$NF_ARM_SLEEPER" </dev/null >/dev/null 2>&1 9>&- &
    n=0
    while [ ! -s "$NF_ARM_PID" ] && [ $n -lt 50 ]; do
      sleep 0.1 2>/dev/null || sleep 1; n=$((n+1))
    done
    [ -s "$NF_ARM_PID" ] || { armfail "the detached sleeper did not start"; return 1; }
    ARMED="revert in ${NF_ARM_SECONDS}s by pid $(cat "$NF_ARM_PID")"
  fi
}
