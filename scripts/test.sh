#!/usr/bin/env bash
# Set up everything the tests need, then run lint, unit and integration tests (as root:
# the integration tests start real lab nodes). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
sh scripts/vm-deps.sh  # debootstrap and QEMU for the VM lab node's tests
.venv/bin/ruff check netfix lab/netfix_lab tests bench molecule
if ! command -v shellcheck >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi
shellcheck .ci/run scripts/*.sh molecule/vm/files/state.sh
shellcheck -s sh netfix/doctor/*.sh netfix/sh/*.sh
# The sh the nodes run: every netfix/sh file, and whole generated scripts (fact, apply,
# rollback, recovery, confirm, nic.sh, the cmd steps) rendered into a temp dir.
.venv/bin/python scripts/sh-samples.py --check
# Leftovers of an interrupted earlier run would collide with the lab's names.
flock /run/netfix-lab-tests.lock .venv/bin/netfix lab down >/dev/null 2>&1 || true
# Molecule first, so that pytest's summary is the last line of the run. Same lab lock as
# the pytest fixtures: lab node names are global on the machine.
PATH="$PWD/.venv/bin:$PATH" flock /run/netfix-lab-tests.lock \
  .venv/bin/molecule test -s default
# The VM scenario: apply, reboot, rollback, reboot on the QEMU VM lab node (its own VM dir,
# /run/netfix-vm-molecule; about 5 min under software emulation).
PATH="$PWD/.venv/bin:$PATH" flock /run/netfix-lab-tests.lock \
  .venv/bin/molecule test -s vm
# The VM lab node's tests too: builds a Debian image once (cached in /var/cache/netfix-vm,
# about 2 min) and boots it under QEMU (TCG where KVM does not work: ~40 s a boot).
export NETFIX_VM_TESTS=1
# The 25 slowest tests in the log: what to look at when a cold run nears 45 min.
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "$@" tests
