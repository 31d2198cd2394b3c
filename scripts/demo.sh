#!/usr/bin/env bash
# Set up netfix, start one lab node (a network namespace with its own sshd) and show the
# plan of the shipped public-vds profile against it. Read-only: nothing is applied.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
inv=$(.venv/bin/netfix lab up --nodes 1)
echo "== netfix plan -i $inv --profile public-vds"
.venv/bin/netfix plan -i "$inv" --profile public-vds || rc=$?
echo "== the lab node keeps running; remove it with: .venv/bin/netfix lab down"
exit "${rc:-0}"
