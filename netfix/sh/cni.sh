# shellcheck shell=sh
# CNI agents' fact snippet (after writers.sh): their processes and command lines.
# calico-node runs felix in-process; flanneld, weaver (Weave Net's router), kube-router
# and cilium-agent by their own names. For cilium-agent also the options netfix models
# from its --config-dir (one file per option, the ConfigMap mounted in its container),
# read through /proc/PID/root: "CFG pid option value".
w_procs calico-node calico-felix cilium-agent flanneld weaver kube-router
nf_pids cilium-agent
for p in $NF_PIDS; do
  dir=$(tr '\0' '\n' < "$p/cmdline" | sed -n 's/^--config-dir=//p; /^--config-dir$/{n;p;}' \
    | head -n1)
  [ -n "$dir" ] || continue
  for o in enable-ipv4 enable-ipv6; do
    v=""
    [ -f "$p/root$dir/$o" ] && read -r v < "$p/root$dir/$o"
    [ -n "$v" ] && echo "CFG ${p#/proc/} $o $v"
  done
done
