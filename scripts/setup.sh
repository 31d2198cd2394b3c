#!/usr/bin/env bash
# Install what netfix and its lab need on a fresh Debian/Ubuntu machine (run as root):
# system tools from apt (only the missing ones), netfix and netfix-lab into ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "setup: run as root (the lab creates network namespaces and starts sshd)" >&2
    exit 1
  fi
}
need_root

PKGS=(openssh-server openssh-client nftables ethtool iproute2 conntrack procps kmod sudo
      util-linux coreutils python3 python3-venv iptables iputils-ping
      strace)  # strace: the doctor's process-count test
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# promtool (checks the agent's alert rules, dashboard queries and /metrics) comes with
# Debian's prometheus server package. Installing it must not start that server: without
# a policy-rc.d, invoke-rc.d would run its init script on a machine without systemd.
if ! command -v promtool >/dev/null; then
  echo "setup: apt-get install prometheus (for promtool; its service is not started)"
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# netfix setup: no service starts while promtool is installed\nexit 101\n' \
      > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# Conntrack sysctls exist only once the module is loaded (built in on some kernels).
modprobe nf_conntrack 2>/dev/null || true

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# netfix itself, and its test lab as a distribution of its own (lab/: netfix_lab, which adds
# `netfix lab ...`), so that the netfix wheel an operator installs does not carry the lab.
.venv/bin/python -m pip install -q -e ".[test]" -e ./lab
echo "setup: ok ($(.venv/bin/netfix --version))"
