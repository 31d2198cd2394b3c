# shellcheck shell=sh
# The kube-proxy writer's fact snippet (netfix/writers/kubeproxy.py): the kube-proxy
# process (if any), its arguments, its config file (read through /proc/PID/root, so a
# config inside the kube-proxy container is found from the host), its version and its
# start time.
#
# The version comes from `kube-proxy --version` of the running binary (/proc/PID/exe, or
# the kube-proxy path in its command line when the exe is an interpreter), else from an
# image tag (kube-proxy:vX.Y.Z) in its or its parent's command line. A binary is run only
# when the process runs as root and the file is root's and writable by no one else:
# anyone can name a process kube-proxy, and netfix must never run their file as root.
kp_version() {
  [ -f "$1" ] || return 1
  case "$(stat -L -c '%u %A' "$1" 2>/dev/null)" in 0\ -????-??-?) ;; *) return 1 ;; esac
  v=$(timeout 2 "$1" --version </dev/null 2>/dev/null | head -n1)
  case "$v" in *Kubernetes\ v*) echo "VERSION $v" ;; *) return 1 ;; esac
}
nf_pids kube-proxy
for p in $NF_PIDS; do
  echo "PID ${p#/proc/}"
  tr '\0' '\n' < "$p/cmdline" | sed 's/^/ARG /'
  cfg=$(tr '\0' '\n' < "$p/cmdline" | sed -n 's/^--config=//p; /^--config$/{n;p;}' | head -n1)
  [ -n "$cfg" ] && echo "CONFIG $cfg" && sed 's/^/| /' "$p/root$cfg"
  # starttime is field 22 of stat; the command name (field 2) may hold spaces: cut after ')'
  echo "START $(sed 's/.*) //' "$p/stat" | cut -d' ' -f20)"
  echo "BTIME $(sed -n 's/^btime //p' /proc/stat)"
  echo "HZ $(getconf CLK_TCK 2>/dev/null || echo 100)"
  if grep -q '^Uid:[[:space:]]*0[[:space:]]' "$p/status" && command -v timeout >/dev/null; then
    bin=$(tr '\0' '\n' < "$p/cmdline" | grep '^/.*/kube-proxy$' | head -n1)
    kp_version "$p/root$(readlink "$p/exe")" || { [ -n "$bin" ] && kp_version "$p/root$bin"; }
  fi
  pp=$(sed -n 's/^PPid:[[:space:]]*//p' "$p/status")
  cat "$p/cmdline" "/proc/$pp/cmdline" 2>/dev/null | tr '\0' '\n' \
    | grep -o 'kube-proxy[a-z-]*:v[0-9][0-9.]*' | head -n1 | sed 's/^/IMAGE /'
  break
done
