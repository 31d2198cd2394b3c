#!/bin/sh
# Installs what the netfix VM lab node needs on Debian/Ubuntu: debootstrap builds the image,
# qemu-system-x86 runs it, qemu-utils makes the per-run overlay.
set -eu
missing=""
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing="$missing debootstrap"
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
command -v qemu-img >/dev/null 2>&1 || missing="$missing qemu-utils"
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || missing="$missing e2fsprogs"
if [ -n "$missing" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086  # $missing is a word list on purpose
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
