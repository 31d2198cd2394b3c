# shellcheck shell=sh
# After the `v`/`f`/`d` lines: all values from one grep (dash's `read` reads byte by
# byte, and procfs sysctls return EOF at offset 1); all files at once: sizes from one
# stat, one cat | base64, split by size on the controller.
# V and F are newline-separated path lists, split on newlines only (set -f: no globs).
if [ -n "$V" ]; then
  IFS="$NL"; echo '@@NF	vals	begin	 	'
  # shellcheck disable=SC2086 # one argument per path in V
  grep -H '' -- $V 2>/dev/null; echo '@@NF	vals	end	 	'; unset IFS
fi
if [ -n "$F" ]; then
  IFS="$NL"
  # shellcheck disable=SC2086 # one argument per path in F
  stat -L --printf '@@NF\tsize\t%n\t%s\t\n' -- $F
  printf '@@NF\tblob\t\t\t'
  # shellcheck disable=SC2086 # one argument per path in F
  cat -- $F | base64 -w0; echo; unset IFS
fi
