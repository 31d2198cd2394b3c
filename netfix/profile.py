"""Profiles: YAML files that declare a node's network state.

Loading resolves `extends:`, validates every file against schema/profile.json (so an error
points at the file that has it), merges the chain and runs the checks a schema cannot
express (each knob's `check_profile`). Node-dependent values (conntrack `max: auto`) are
left for the knobs, which have the facts.

The YAML helpers (`read_yaml`, `field_path`) also serve inventory.py: both report errors as
`file:line: field.path: message`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from netfix.errors import InputError

PROFILE_SUFFIXES = (".yaml", ".yml")

# libyaml is several times faster; fall back silently where PyYAML was built without it.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# An alias-heavy document expands exponentially when walked; no sane profile comes near this.
_MAX_NODES = 100_000


# --------------------------------------------------------------------------- YAML with lines


@dataclass
class YamlDoc:
    """A parsed YAML file plus the line of every key and list item, by JSON path."""

    file: str
    data: Any
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)

    def line(self, path: tuple[str | int, ...] | list[str | int]) -> int | None:
        """Line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, message: str, path: tuple[str | int, ...] | list[str | int] = ()) -> InputError:
        return InputError(message, file=self.file, line=self.line(path), path=field_path(path))


def field_path(parts: tuple[str | int, ...] | list[str | int]) -> str | None:
    """`('sysctl', 'net.ipv4.tcp_rmem')` -> `sysctl."net.ipv4.tcp_rmem"`; quotes keys that
    would be ambiguous unquoted, indexes lists as `[i]`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            quoted = json.dumps(part)
            out += f".{quoted}" if out else quoted
    return out or None


def read_yaml(path: str | Path) -> YamlDoc:
    """Parse one YAML document safely, keeping line numbers for error messages.

    Composes the node tree once and constructs the data from it, so lines and values come
    from the same parse.
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", file=file) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem += f" ({exc.context})"
        raise InputError(
            f"invalid YAML: {problem}", file=file, line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", file=file) from None
    finally:
        loader.dispose()
    doc = YamlDoc(file=file, data=data)
    if node is not None:
        doc.lines[()] = node.start_mark.line + 1
        _index_lines(doc, node, (), set(), [0])
    return doc


def _index_lines(
    doc: YamlDoc, node: yaml.Node, path: tuple, active: set[int], count: list[int]
) -> None:
    count[0] += 1
    if count[0] > _MAX_NODES:
        raise doc.error(f"more than {_MAX_NODES} YAML nodes (alias expansion?)", path)
    if id(node) in active:
        raise doc.error("recursive YAML alias", path)
    if isinstance(node, yaml.MappingNode):
        active.add(id(node))
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                # `<<:` merge keys have no path of their own; errors fall back to the parent.
                continue
            if key_node.tag != _STR_TAG:
                raise InputError(
                    f"key {key_node.value!r} must be a string (quote it)",
                    file=doc.file,
                    line=line,
                    path=field_path(path),
                )
            key = key_node.value
            if key in first_seen:
                # PyYAML keeps the last duplicate silently; a typo'd copy would win unseen.
                raise InputError(
                    f"duplicate key {key!r} (first on line {first_seen[key]})",
                    file=doc.file,
                    line=line,
                    path=field_path(path),
                )
            first_seen[key] = line
            doc.lines[path + (key,)] = line
            _index_lines(doc, value_node, path + (key,), active, count)
        active.discard(id(node))
    elif isinstance(node, yaml.SequenceNode):
        active.add(id(node))
        for index, item in enumerate(node.value):
            doc.lines[path + (index,)] = item.start_mark.line + 1
            _index_lines(doc, item, path + (index,), active, count)
        active.discard(id(node))


# --------------------------------------------------------------------------- schema


@functools.cache
def profile_schema() -> dict[str, Any]:
    return json.loads(resources.files("netfix.schema").joinpath("profile.json").read_text())


# The answer also depends on _validator's own rules; change this when they change, so that
# stamps written under the old rules stop matching.
_VALIDATOR_RULES = "strict-integer"


@functools.cache
def _validator() -> Any:
    # jsonschema costs ~150 ms to import; only commands that load a profile pay for it.
    import jsonschema

    base = jsonschema.Draft202012Validator
    # JSON Schema counts 8192.0 as an integer; a YAML float would reach sysctl.d, sysfs and
    # ethtool as "8192.0", which the kernel refuses at apply. Floats are never integers here.
    strict = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(base, type_checker=strict)(profile_schema())


def validate_schema(doc: YamlDoc, data: Any, lines_from: list[YamlDoc] | None = None) -> None:
    """Raise InputError for the most relevant schema violation in `data`.

    `lines_from` is the merge chain when `data` is a merged result: the error is then
    located in the last file that set the offending field.
    """
    stamp = _valid_stamp(data)
    if stamp and stamp.exists():
        return
    from jsonschema.exceptions import best_match

    def position(error: Any) -> tuple[int, str]:
        path = _locate(error)[0]
        return (_source(doc, lines_from, path).line(path) or 0, field_path(path) or "")

    # Sorted by position so that among equally relevant errors the earliest in the file
    # wins and the report never depends on iteration details.
    errors = sorted(_validator().iter_errors(data), key=position)
    if not errors:
        if stamp:
            with contextlib.suppress(OSError):
                stamp.parent.mkdir(parents=True, exist_ok=True)
                stamp.touch()
        return
    # best_match may descend into an anyOf's alternatives, so locate what it returns.
    path, message = _locate(best_match(errors))
    raise _source(doc, lines_from, path).error(message, path)


def _valid_stamp(data: Any) -> Path | None:
    """Where to remember that this exact data passed this exact schema. Importing and
    building the validator costs ~0.1 s, a fifth of a one-node plan; the answer for the
    same bytes never changes, so a hit skips it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if not base or base == "~/.cache":
        return None
    try:
        blob = json.dumps([profile_schema(), _VALIDATOR_RULES, data], sort_keys=True).encode()
    except (TypeError, ValueError):
        return None
    return Path(base, "netfix", "valid", hashlib.sha256(blob).hexdigest())


def _source(doc: YamlDoc, chain: list[YamlDoc] | None, path: tuple) -> YamlDoc:
    for candidate in reversed(chain or []):
        if path in candidate.lines:
            return candidate
    if chain and path:
        return _source(doc, chain, path[:-1])
    return doc


def _locate(error: Any) -> tuple[tuple, str]:
    """Path and readable message of one jsonschema error."""
    path = tuple(error.absolute_path)
    value = error.instance
    if "propertyNames" in error.absolute_schema_path:
        # jsonschema reports a bad key at its parent object, with the key as the instance.
        path = path + (value,)
        return path, _custom_message(error) or f"bad key: {error.message}"
    custom = _custom_message(error)
    if custom:
        return path, f"{custom} (got {_show(value)})"
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = [key for key in value if key not in allowed]
        return path + (extra[0],), f"unknown field {extra[0]!r}; allowed: {', '.join(allowed)}"
    if error.validator == "type":
        return path, f"must be {_article(error.validator_value)}, got {_show(value)}"
    return path, error.message


def _custom_message(error: Any) -> str | None:
    # The innermost schema that carries an errorMessage knows best what was meant.
    while error is not None:
        if isinstance(error.schema, dict) and "errorMessage" in error.schema:
            return error.schema["errorMessage"]
        error = error.parent
    return None


def _article(type_name: Any) -> str:
    if isinstance(type_name, list):
        return " or ".join(_article(t) for t in type_name)
    return {"integer": "an integer", "object": "a mapping", "array": "a list"}.get(
        type_name, f"a {type_name}"
    )


_KINDS = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    dict: "mapping",
    type(None): "null",
}


def _kind(value: Any) -> str:
    kind = _KINDS.get(type(value), type(value).__name__)
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _show(value: Any) -> str:
    kind = _KINDS.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, dict | list) else ""
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if isinstance(value, float) and value.is_integer():
        # The usual cause is a stray ".0"; say the fix.
        shown += f"; write {int(value)}"
    return f"{kind} {shown}".strip()


# --------------------------------------------------------------------------- finding profiles


def profile_search_path() -> list[Path]:
    """Directories searched for `<name>.yaml`, first match wins."""
    dirs = [Path(p) for p in os.environ.get("NETFIX_PROFILE_PATH", "").split(":") if p]
    dirs += [
        Path.cwd() / "profiles",
        Path("/etc/netfix/profiles"),
        Path(__file__).resolve().parent / "profiles",  # shipped in the package
    ]
    unique: list[Path] = []
    seen: set[Path] = set()
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _is_path(name: str) -> bool:
    return "/" in name or name.endswith(PROFILE_SUFFIXES)


def find_profile(name: str) -> Path:
    """A path-like name is a file; anything else is looked up in the search path."""
    if _is_path(name):
        path = Path(name)
        if not path.is_file():
            raise InputError(f"profile file not found: {name}")
        return path
    dirs = profile_search_path()
    for d in dirs:
        for suffix in PROFILE_SUFFIXES:
            candidate = d / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    available = ", ".join(n for n, _, _ in list_profiles()) or "none"
    searched = ", ".join(str(d) for d in dirs)
    raise InputError(f"unknown profile {name!r}; available: {available}; searched: {searched}")


def list_profiles() -> list[tuple[str, Path, str]]:
    """(name, path, description) of every profile in the search path, first one wins."""
    found: dict[str, tuple[str, Path, str]] = {}
    for d in profile_search_path():
        if not d.is_dir():
            continue
        for path in sorted(p for p in d.iterdir() if p.suffix in PROFILE_SUFFIXES):
            if path.stem in found or not path.is_file():
                continue
            found[path.stem] = (path.stem, path, _description_of(path))
    return sorted(found.values())


def _description_of(path: Path) -> str:
    # A listing must not fail on one broken file; `validate` reports the details.
    try:
        doc = read_yaml(path)
    except InputError:
        return "(invalid YAML)"
    try:
        _check_is_profile(doc)
    except InputError:
        return "(not a profile)"
    data = doc.data
    if isinstance(data.get("description"), str):
        return data["description"]
    return ""


# --------------------------------------------------------------------------- loading


@dataclass
class Profile:
    name: str
    files: list[str]  # the merge chain, parents first, the profile itself last
    data: dict[str, Any]  # merged and validated; no `extends`, no nulls
    description: str

    @functools.cached_property
    def path(self) -> str:  # once: every host's plan records it, and resolve() is lstats
        return str(Path(self.files[-1]).resolve())

    @property
    def sha256(self) -> str:
        """Of the merged data: any edit that changes what the profile says, in the file or
        a parent, changes it; comments and key order do not."""
        blob = json.dumps(self.data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by name (search path) or by path, with its `extends` chain merged."""
    name = str(name_or_path)
    path = Path(name_or_path) if isinstance(name_or_path, Path) else find_profile(name)
    return _load(path)


def validate_file(path: str | Path) -> Profile:
    """Check one profile file (and its parents); the argument is always a path."""
    return _load(Path(path))


def _load(path: Path) -> Profile:
    chain: list[YamlDoc] = []
    _linearize(path, chain, {}, [])
    merged: dict[str, Any] = {}
    for doc in chain:
        merged = deep_merge(merged, {k: v for k, v in doc.data.items() if k != "extends"})
    top = chain[-1]
    validate_schema(top, merged, lines_from=chain)
    _check_semantics(merged, chain)
    return Profile(
        name=path.stem,
        files=[doc.file for doc in chain],
        data=merged,
        description=merged.get("description", ""),
    )


def _linearize(
    path: Path, chain: list[YamlDoc], done: dict[Path, YamlDoc], stack: list[tuple[Path, str]]
) -> None:
    """Append `path`'s ancestors, then `path`, to `chain`; each file once.

    Depth-first post-order keeps every file after all of its parents, so applying the chain
    in order lets each file override everything it extends, and a parent shared by two
    parents (a diamond) is applied once instead of re-overriding the first branch.
    """
    key = path.resolve()
    if key in done:
        return
    doc = read_yaml(path)
    _check_is_profile(doc)
    validate_schema(doc, strip_nulls(doc.data))
    stack.append((key, path.stem))
    parents = doc.data.get("extends") or []
    for index, ref in enumerate([parents] if isinstance(parents, str) else parents):
        ref_path = ("extends",) if isinstance(parents, str) else ("extends", index)
        parent = _resolve_parent(doc, ref, ref_path, Path(path).parent)
        parent_key = parent.resolve()
        on_stack = [k for k, _ in stack]
        if parent_key in on_stack:
            names = [n for _, n in stack[on_stack.index(parent_key) :]] + [parent.stem]
            raise doc.error(f"extends cycle: {' -> '.join(names)}", ref_path)
        _linearize(parent, chain, done, stack)
    stack.pop()
    done[key] = doc
    chain.append(doc)


def _check_is_profile(doc: YamlDoc) -> None:
    """Refuse a file that is not a profile before anything echoes its values: it may be any
    file the operator pointed at (/etc/shadow, a vault). Only its top-level keys are named."""
    keys = list(profile_schema()["properties"])
    if doc.data is None or doc.data == {}:
        raise doc.error("the profile file is empty")
    if not isinstance(doc.data, dict):
        raise doc.error(f"not a profile: its YAML is {_kind(doc.data)}, a profile is a "
                        f"mapping of sections ({', '.join(keys)})")
    # Checked before nulls are stripped: `services:` with no value would vanish with them
    # and leave a compose file as an empty profile.
    unknown = [k for k in doc.data if k not in keys]
    if not unknown:
        return
    shown = ", ".join(repr(k if len(k) <= 40 else k[:37] + "...") for k in unknown[:5])
    if len(unknown) > 5:
        shown += f" and {len(unknown) - 5} more"
    if len(unknown) == len(doc.data):
        what = f"not a profile: none of its top-level keys ({shown}) is a profile key"
    else:
        what = f"unknown top-level key{'s' if len(unknown) > 1 else ''} {shown}"
    raise InputError(f"{what}; a profile has only {', '.join(keys)}",
                     file=doc.file, line=doc.line((unknown[0],)))


def _resolve_parent(doc: YamlDoc, ref: str, ref_path: tuple, base_dir: Path) -> Path:
    if _is_path(ref):
        candidate = Path(ref) if Path(ref).is_absolute() else base_dir / ref
        if not candidate.is_file():
            raise doc.error(f"parent profile file not found: {candidate}", ref_path)
        return candidate
    try:
        return find_profile(ref)
    except InputError as exc:
        raise doc.error(exc.message, ref_path) from None


def strip_nulls(data: Any) -> Any:
    """Drop null mapping values (deletion markers); nulls inside lists stay to be rejected."""
    if isinstance(data, dict):
        return {k: strip_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [strip_nulls(v) for v in data]
    return data


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`: mappings merge, anything else replaces, a null in `top` deletes."""
    out = dict(base)
    for key, value in top.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = strip_nulls(value)
    return out


# --------------------------------------------------------------------------- semantic checks


def _check_semantics(data: dict[str, Any], chain: list[YamlDoc]) -> None:
    def fail(message: str, path: tuple) -> InputError:
        return _source(chain[-1], chain, path).error(message, path)

    # A knob family checks what only it understands (CIDRs with ipaddress, port ranges, the
    # conntrack 4:1 rule): optional `check_profile(data) -> [(message, field path)]`. It sees
    # the whole profile, also without its own section: it may own keys of another section
    # (conntrack's keys under `sysctl:`), and returns [] when there is nothing to check.
    from netfix import knobs

    for mod in knobs.modules():
        hook = getattr(mod, "check_profile", None)
        problems = hook(data) if hook else []
        if problems:
            raise fail(*problems[0])
