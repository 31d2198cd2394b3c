# shellcheck shell=sh
# Right after the `v` lines: all values from one grep (dash's `read` reads byte by byte,
# and procfs sysctls return EOF at offset 1). Before the /proc scan of the writers, not
# after: a writer that starts and sets a value between the two would be seen as a value
# changed by no process (the agent named the writer of such a conflict "unknown").
# V is a newline-separated path list, split on newlines only (set -f: no globs).
if [ -n "$V" ]; then
  IFS="$NL"; echo '@@NF	vals	begin	 	'
  # shellcheck disable=SC2086 # one argument per path in V
  grep -H '' -- $V 2>/dev/null; echo '@@NF	vals	end	 	'; unset IFS
fi
