# shellcheck shell=sh
# TuneD's fact snippet (after writers.sh): the tuned daemon and, only while it runs, its
# main config, its active profile and every profile's tuned.conf in the profile dirs of
# TuneD's tuned/consts.py, old layout and new; the controller follows include= chains.
procs=$(w_procs tuned)
if [ -n "$procs" ]; then
  printf '%s\n' "$procs"
  w_dump /etc/tuned/tuned-main.conf /etc/tuned/active_profile \
    /etc/tuned/*/tuned.conf /etc/tuned/profiles/*/tuned.conf \
    /usr/lib/tuned/*/tuned.conf /usr/lib/tuned/profiles/*/tuned.conf
fi
