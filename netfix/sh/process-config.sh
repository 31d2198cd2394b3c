# shellcheck shell=sh
# A writer model's fact snippet: the first process named NF_COMM (if any), its arguments
# one a line (`ARG ...`) and its --config file (`CONFIG path`, then `| ` + each line),
# read through /proc/PID/root so a config inside the process's container is found from
# the host; a relative --config is resolved against the process's working directory.
# Input: NF_COMM, the process name (its /proc/PID/comm).
: "${NF_COMM?}"
nf_pids "$NF_COMM"
for p in $NF_PIDS; do
  echo "PID ${p#/proc/}"
  tr '\0' '\n' < "$p/cmdline" | sed 's/^/ARG /'
  cfg=$(tr '\0' '\n' < "$p/cmdline" | sed -n 's/^--config=//p; /^--config$/{n;p;}' | head -n1)
  [ -n "$cfg" ] || break
  echo "CONFIG $cfg"
  case $cfg in /*) at="$p/root$cfg" ;; *) at="$p/cwd/$cfg" ;; esac
  sed 's/^/| /' "$at" || echo "UNREADABLE $cfg"
  break
done
true
