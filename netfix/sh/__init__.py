"""The POSIX sh that nodes run, kept as files next to this module (shellcheck-clean).

Python never edits the text of these files. A generated script is the parameters,
assigned at its top as shell variables (`NAME='value'`, each value shell-quoted), then
the text of one or more files. Lists are one variable of space-separated words, iterated
deliberately (`set -f`, default IFS) where the words are validated names without blanks.

Whole-line comments and blank lines are dropped when a file is loaded (what the nodes
get stays as small as before), except `# shellcheck` directives, which the generated
samples keep so that shellcheck checks them under the same rules as the files.
"""

from __future__ import annotations

import functools
import re
import shlex
from importlib import resources

_COMMENT = re.compile(r"^\s*(#.*)?$")
_DIRECTIVE = re.compile(r"^\s*# shellcheck (?!shell=)")


@functools.cache
def source(name: str) -> str:
    """The file as it is in the package."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@functools.cache
def load(name: str) -> str:
    """The file without comment-only and blank lines (shellcheck directives kept). Read
    once per process. The files keep no `#` line inside a multi-line string."""
    lines = [line for line in source(name).splitlines()
             if not _COMMENT.match(line) or _DIRECTIVE.match(line)]
    return "\n".join(lines) + "\n"


def value(v: object) -> str:
    """One parameter's text: bool as 1/0, a list or tuple as space-separated words."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, list | tuple):
        words = [str(w) for w in v]
        bad = [w for w in words if w.split() != [w]]  # empty, or with a blank
        if bad:
            raise ValueError(f"list parameter items must be words without blanks: {bad!r}")
        return " ".join(words)
    return "" if v is None else str(v)


def assign(**params: object) -> str:
    """`NAME='value'` lines, one per parameter, in the order given."""
    for name in params:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"not a shell variable name: {name!r}")
    return "".join(f"{name}={shlex.quote(value(v))}\n" for name, v in params.items())


def render(*names: str, **params: object) -> str:
    """The parameters, then the files `names` in order."""
    return assign(**params) + "".join(load(n) for n in names)


_FUNC = r"^{name}\(\) \{{\n.*?^\}}\n"  # `name() {` at a line's start to the first `}` alone


@functools.cache
def function(file: str, name: str) -> str:
    """The definition of function `name` in `file` (from `name() {` at the start of a
    line to the first `}` alone at the start of a line)."""
    m = re.search(_FUNC.format(name=re.escape(name)), load(file), re.M | re.S)
    if not m:
        raise KeyError(f"no function {name} in netfix/sh/{file}")
    return m.group(0)


@functools.cache
def _prelude() -> tuple[str, dict[str, str]]:
    """prelude.sh's head (what is not a function) and its functions by name, in order."""
    text = load("prelude.sh")
    names = re.findall(r"^(nf_\w+)\(\) \{$", text, re.M)
    funcs = {n: function("prelude.sh", n) for n in names}
    head = text
    for body in funcs.values():
        head = head.replace(body, "")
    return head, funcs


def prelude_functions(text: str) -> str:
    """The prelude's functions that `text` calls, and those they call, in file order: a
    script carries what it uses (and a set step that runs on its own carries its writer)."""
    _, funcs = _prelude()
    want: set[str] = set()
    todo = [text]
    while todo:
        for name in re.findall(r"\bnf_\w+", todo.pop()):
            if name in funcs and name not in want:
                want.add(name)
                todo.append(funcs[name])
    return "".join(body for name, body in funcs.items() if name in want)


def prelude(text: str) -> str:
    """prelude.sh for a script whose body is `text`: its head (PATH, locale) and the
    functions the body uses."""
    return _prelude()[0] + prelude_functions(text)


def script(*names: str, **params: object) -> str:
    """A whole script: the parameters, the prelude, then the files `names` in order."""
    body = "".join(load(n) for n in names)
    return assign(**params) + prelude(body) + body


def files() -> list[str]:
    """Every .sh file of the package (for shellcheck and the samples)."""
    return sorted(p.name for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".sh"))
