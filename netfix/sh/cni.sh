# shellcheck shell=sh
# CNI agents' fact snippet (after writers.sh): their processes and command lines.
# calico-node runs felix in-process; flanneld, weaver (Weave Net's router), kube-router
# and cilium-agent by their own names.
w_procs calico-node calico-felix cilium-agent flanneld weaver kube-router
