# shellcheck shell=sh
# conntrack's fact snippet: the kube-proxy process (if any), its arguments and its config
# file, read through /proc/PID/root so a config inside the kube-proxy container is found
# from the host.
for p in /proc/[0-9]*; do
  c=""; read -r c < "$p/comm" 2>/dev/null; [ "$c" = kube-proxy ] || continue
  echo "PID ${p#/proc/}"
  tr '\0' '\n' < "$p/cmdline" | sed 's/^/ARG /'
  cfg=$(tr '\0' '\n' < "$p/cmdline" | sed -n 's/^--config=//p; /^--config$/{n;p;}' | head -n1)
  [ -n "$cfg" ] && echo "CONFIG $cfg" && sed 's/^/| /' "$p/root$cfg"
  break
done
