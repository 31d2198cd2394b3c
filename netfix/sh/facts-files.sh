# shellcheck shell=sh
# After the `v`/`f`/`d` lines and the snippets' captures: the files' sizes from one stat,
# then ONE base64 of the files' bytes followed by the snippets' outputs (their byte counts
# are in their `ssize` records), split on the controller.
# F is a newline-separated path list, split on newlines only (set -f: no globs);
# NF_SOUT is the snippets' outputs, concatenated.
if [ -n "$F" ]; then
  IFS="$NL"
  # shellcheck disable=SC2086 # one argument per path in F
  stat -L --printf '@@NF\tsize\t%n\t%s\t\n' -- $F
  unset IFS
fi
if [ -n "$F" ] || [ -n "$NF_SOUT" ]; then
  printf '@@NF\tblob\t\t\t'
  IFS="$NL"
  # shellcheck disable=SC2086 # one argument per path in F
  { [ -z "$F" ] || cat -- $F; printf '%s' "$NF_SOUT"; } | base64 -w0; echo; unset IFS
fi
