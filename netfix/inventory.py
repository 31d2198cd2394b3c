"""Inventories: which hosts exist, how to reach them, and which profile each one gets.

Three formats are read: netfix's own (top-level `vars`, `groups`, `hosts`), Ansible YAML
inventories (top-level `all:`), and pyinfra inventory files (`*.py`, read by pyinfra's own
loader, see load_pyinfra_inventory), so a team can point netfix at the inventory it
already has. The YAML formats are turned into the same groups/hosts/vars structure before
vars are resolved.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netfix.errors import InputError
from netfix.profile import YamlDoc, read_yaml

LOCAL_HOST = "@local"
HOST_KEY_POLICIES = ("yes", "accept-new", "no")
# ssh's StrictHostKeyChecking spellings. `ask` needs a terminal netfix does not have; ssh
# without one refuses an unknown key, which is what `yes` does.
SSH_HOST_KEY_POLICIES = {"yes": "yes", "ask": "yes", "true": "yes", "accept-new": "accept-new",
                         "no": "no", "off": "no", "false": "no"}

# Names end up in --limit patterns, logs and file names: keep out pattern and shell syntax.
_HOST_NAME = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_.:@-]*")
_GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

FieldPath = tuple[str | int, ...]


# --------------------------------------------------------------------------- hosts


TRANSPORTS = ("ssh", "local", "pyinfra")


@dataclass
class Host:
    name: str
    groups: list[str]  # every group the host is in (also through child groups), by precedence
    vars: dict[str, Any]
    # A Transport object built in code (the pyinfra operations bind the live pyinfra host
    # here); None: netfix.transport picks one by `transport`.
    via: Any = field(default=None, repr=False, compare=False)

    @property
    def transport(self) -> str:
        """ssh | local | pyinfra: how netfix's scripts reach this host (netfix/transport.py)."""
        chosen = self.vars.get("transport")
        if chosen:
            return str(chosen)
        if self.name == LOCAL_HOST or self.vars.get("connection") == "local":
            return "local"
        return "ssh"

    @property
    def is_local(self) -> bool:
        return self.transport == "local"

    @property
    def address(self) -> str:
        return str(self.vars.get("ssh_host") or self.name)

    @property
    def port(self) -> int:
        return int(self.vars.get("ssh_port", 22))

    @property
    def user(self) -> str:
        return str(self.vars.get("ssh_user") or "root")

    @property
    def key(self) -> str | None:
        key = self.vars.get("ssh_key")
        return os.path.expanduser(key) if key else None

    @property
    def known_hosts(self) -> str | None:
        path = self.vars.get("ssh_known_hosts_file")
        if not path and (files := self.ssh_option("userknownhostsfile")):
            # ssh reads every file listed and adds new keys to the first; netfix uses that one.
            path = shlex.split(files)[0] if files.lower() != "none" else os.devnull
        return os.path.expanduser(path) if path else None

    @property
    def strict_host_key_checking(self) -> str:
        # netfix's own var wins; then Ansible's, in the order Ansible puts them on ssh's
        # command line (host_key_checking=false first), where the first value is kept.
        value = self.vars.get("ssh_strict_host_key_checking")
        if value is None and self.vars.get("ansible_host_key_checking") is False:
            value = "no"
        if value is None and (option := self.ssh_option("stricthostkeychecking")):
            value = SSH_HOST_KEY_POLICIES.get(option.lower(), option)
        # Checked again here because hosts can also be built in code, not only loaded.
        return _host_key_policy("yes" if value is None else value)

    def ssh_option(self, name: str) -> str | None:
        """An `-o` option (lower-case name) of Ansible's ssh common/extra args."""
        for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
            value = ssh_options(self.vars.get(var) or "").get(name)
            if value is not None:
                return value
        return None

    @property
    def sudo(self) -> bool:
        return bool(self.vars.get("sudo", False))

    @property
    def profile(self) -> str | None:
        return self.vars.get("profile")

    @property
    def connect_timeout(self) -> float:
        return float(self.vars.get("connect_timeout", 10))


# --------------------------------------------------------------------------- known vars


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"must be a port number 1-65535, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"must be a number of seconds > 0, got {value!r}")
    return float(value)


def _host_key_policy(value: Any) -> str:
    # Unquoted yes/no is a YAML boolean; accept it rather than punish the obvious spelling.
    if value is True:
        value = "yes"
    elif value is False:
        value = "no"
    if value not in HOST_KEY_POLICIES:
        raise InputError(
            f"must be one of {', '.join(HOST_KEY_POLICIES)}, got {value!r}",
            path="ssh_strict_host_key_checking",
        )
    return value


# ssh flags that take an argument: that argument is not an option even if it looks like one.
_SSH_ARG_FLAGS = "BbcDEeFIiJLlmOpQRSWw"


def ssh_options(args: str) -> dict[str, str]:
    """The `-o` options of an ssh command line, by lower-case name, first one kept as ssh
    does. `-o Key=value`, `-oKey=value`, `-o "Key value"` and `-o Key value`."""
    words = shlex.split(args)  # ValueError on an unclosed quote
    options: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if len(word) == 2 and word[0] == "-" and word[1] in _SSH_ARG_FLAGS:
            i += 1
            continue
        if not word.startswith("-o"):
            continue
        option = word[2:]
        if not option:
            if i == len(words):
                raise ValueError("-o without an option")
            option, i = words[i], i + 1
        m = re.fullmatch(r"\s*([A-Za-z0-9]+)(?:\s*=\s*|\s+|$)(.*?)\s*", option)
        if m is None:
            raise ValueError(f"bad ssh option {option!r}: expected -o Key=value")
        key, value = m.group(1).lower(), m.group(2)
        if not value and i < len(words) and not words[i].startswith("-"):
            value, i = words[i], i + 1
        if not value:
            raise ValueError(f"ssh option {m.group(1)} has no value")
        options.setdefault(key, value)
    return options


def _ssh_args(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string of ssh arguments, got {value!r}")
    options = ssh_options(value)
    shlex.split(options.get("userknownhostsfile", ""))  # an unclosed quote: ValueError now
    policy = options.get("stricthostkeychecking")
    if policy is not None and policy.lower() not in SSH_HOST_KEY_POLICIES:
        raise ValueError(f"StrictHostKeyChecking must be one of "
                         f"{', '.join(SSH_HOST_KEY_POLICIES)}, got {policy!r}")
    return value


def _connection(value: Any) -> str:
    if value not in ("ssh", "local"):
        raise ValueError(f"must be ssh or local, got {value!r}")
    return value


def _transport(value: Any) -> str:
    if value not in TRANSPORTS:
        raise ValueError(f"must be one of {', '.join(TRANSPORTS)}, got {value!r}")
    return value


KNOWN_VARS: dict[str, Callable[[Any], Any]] = {
    "ssh_host": _str,
    "ssh_port": _port,
    "ssh_user": _str,
    "ssh_key": _str,
    "ssh_known_hosts_file": _str,
    "ssh_strict_host_key_checking": _host_key_policy,
    "sudo": _bool,
    "profile": _str,
    "connect_timeout": _timeout,
    "connection": _connection,
    "transport": _transport,
    "pyinfra_host": _str,  # transport pyinfra: the connector string (default: the host name)
    # Ansible's ssh settings, under their own names: Host reads them after netfix's ssh_* vars.
    "ansible_ssh_common_args": _ssh_args,
    "ansible_ssh_extra_args": _ssh_args,
    "ansible_host_key_checking": _bool,
}

def check_var(name: str, value: Any) -> Any:
    """A known var type-checked (and normalised); ValueError says what is wrong."""
    check = KNOWN_VARS.get(name)
    if check is None:
        return value  # unknown vars are kept for future knobs
    try:
        return check(value)
    except InputError as exc:
        raise ValueError(exc.message) from None


# Ansible variable -> netfix variable. Other ansible_* vars are Ansible's business.
ANSIBLE_VARS = {
    "ansible_host": "ssh_host",
    "ansible_ssh_host": "ssh_host",
    "ansible_port": "ssh_port",
    "ansible_ssh_port": "ssh_port",
    "ansible_user": "ssh_user",
    "ansible_ssh_user": "ssh_user",
    "ansible_ssh_private_key_file": "ssh_key",
    "ansible_private_key_file": "ssh_key",
    "ansible_become": "sudo",
    "ansible_connection": "connection",
    "netfix_profile": "profile",
    "ansible_ssh_common_args": "ansible_ssh_common_args",
    "ansible_ssh_extra_args": "ansible_ssh_extra_args",
    "ansible_host_key_checking": "ansible_host_key_checking",
    "ansible_ssh_host_key_checking": "ansible_host_key_checking",
}
_ANSIBLE_SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh")


# --------------------------------------------------------------------------- inventory


@dataclass
class Inventory:
    hosts: dict[str, Host]  # in inventory order
    groups: dict[str, list[str]]  # group -> member hosts (also through children); has "all"
    source: str | None = None

    def select(self, limit: str | None) -> list[Host]:
        """Hosts matching an Ansible-style --limit, in inventory order.

        Patterns are separated by `,` or `:`; each is a host, a group or an fnmatch glob
        over both. `&pat` intersects, `!pat` excludes; with only those, the start is all
        hosts. A pattern that matches nothing is an error: a mistyped `!node1` would
        otherwise silently include the very host it was meant to protect.
        """
        if limit is None or not limit.strip():
            return list(self.hosts.values())
        include: set[str] = set()
        positives = False
        intersect: list[set[str]] = []
        exclude: set[str] = set()
        for pattern in self._split_limit(limit):
            op, pat = (pattern[0], pattern[1:]) if pattern[0] in "!&" else ("", pattern)
            matched = self._match(pat, limit)
            if op == "!":
                exclude |= matched
            elif op == "&":
                intersect.append(matched)
            else:
                positives = True
                include |= matched
        selected = include if positives else set(self.hosts)
        for group in intersect:
            selected &= group
        selected -= exclude
        hosts = [h for name, h in self.hosts.items() if name in selected]
        if not hosts:
            raise InputError(f"--limit {limit!r} matches no host; {self._available()}")
        return hosts

    def _split_limit(self, limit: str) -> list[str]:
        patterns: list[str] = []
        for piece in (p.strip() for p in limit.split(",")):
            # ':' also separates, except inside a host name that contains it (IPv6).
            if ":" in piece and piece.lstrip("!&") not in self.hosts:
                patterns += [p.strip() for p in piece.split(":")]
            else:
                patterns.append(piece)
        return [p for p in patterns if p]

    def _match(self, pattern: str, limit: str) -> set[str]:
        if not pattern:
            raise InputError(f"--limit {limit!r}: '!' or '&' without a pattern")
        if pattern in self.hosts:
            return {pattern}
        if pattern in self.groups:
            return set(self.groups[pattern])
        matched: set[str] = set()
        found = False
        for name in self.hosts:
            if fnmatch.fnmatchcase(name, pattern):
                matched.add(name)
                found = True
        for group, members in self.groups.items():
            if fnmatch.fnmatchcase(group, pattern):
                matched |= set(members)
                found = True
        if not found:
            raise InputError(
                f"--limit pattern {pattern!r} matches no host or group; {self._available()}"
            )
        return matched

    def _available(self) -> str:
        groups = [g for g in self.groups if g != "all"]
        return f"hosts: {', '.join(self.hosts) or 'none'}; groups: {', '.join(groups) or 'none'}"


def local_inventory() -> Inventory:
    """The inventory used without one: just this machine."""
    return Inventory(hosts={LOCAL_HOST: Host(LOCAL_HOST, [], {})}, groups={"all": [LOCAL_HOST]})


def load_inventory(path: str | None) -> Inventory:
    """Load an inventory file; None means $NETFIX_INVENTORY, else the local machine only."""
    path = path or os.environ.get("NETFIX_INVENTORY") or None
    if path is None:
        return local_inventory()
    if str(path).endswith(".py"):
        return load_pyinfra_inventory(str(path))
    doc = read_yaml(path)
    if doc.data is None:
        raise doc.error("the inventory is empty")
    if not isinstance(doc.data, dict):
        raise doc.error("an inventory must be a mapping (vars, groups, hosts)")
    raw = _RawInventory(doc)
    if "all" in doc.data:
        raw.read_ansible()
    else:
        raw.read_netfix()
    return raw.build(source=str(path))


# --------------------------------------------------------------------------- reading


@dataclass
class _Group:
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    child_paths: dict[str, FieldPath] = field(default_factory=dict)  # for error lines


@dataclass
class _RawInventory:
    """Both formats land here: top vars, groups, host vars; resolved by build()."""

    doc: YamlDoc
    top_vars: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # order = inventory order

    # ---- netfix format

    def read_netfix(self) -> None:
        data = self.doc.data
        for key in data:
            if key not in ("vars", "groups", "hosts"):
                raise self.doc.error(
                    f"unknown top-level key {key!r}; expected vars, groups, hosts", (key,)
                )
        # Walk in file order so that host order is the order hosts first appear.
        for key, value in data.items():
            if key == "vars":
                self.top_vars = self._vars(value, ("vars",))
            elif key == "hosts":
                self._hosts(value, ("hosts",), group=None)
            else:
                for name, body in self._mapping(value, ("groups",)).items():
                    self._netfix_group(name, body, ("groups", name))

    def _netfix_group(self, name: str, body: Any, path: FieldPath) -> None:
        self._check_name(name, _GROUP_NAME, "group", path)
        group = self.groups.setdefault(name, _Group())
        body = self._mapping(body, path)
        for key, value in body.items():
            sub = path + (key,)
            if key == "vars":
                group.vars.update(self._vars(value, sub))
            elif key == "hosts":
                self._hosts(value, sub, group=group)
            elif key == "children":
                if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                    raise self.doc.error("must be a list of group names", sub)
                for index, child in enumerate(value):
                    group.children.append(child)
                    group.child_paths[child] = sub + (index,)
            else:
                raise self.doc.error(f"unknown key {key!r}; expected vars, hosts, children", sub)

    # ---- Ansible format

    def read_ansible(self) -> None:
        # Every top-level key is a group; `all` is the root whose vars apply to everyone.
        for name, body in self.doc.data.items():
            self._ansible_group(name, body, (name,))
        self.top_vars = self.groups.pop("all").vars

    def _ansible_group(self, name: str, body: Any, path: FieldPath) -> None:
        self._check_name(name, _GROUP_NAME, "group", path)
        # A group may be defined in several places of the tree; definitions add up.
        group = self.groups.setdefault(name, _Group())
        for key, value in self._mapping(body, path).items():
            sub = path + (key,)
            if key == "vars":
                group.vars.update(self._vars(value, sub, ansible=True))
            elif key == "hosts":
                self._hosts(value, sub, group=group, ansible=True)
            elif key == "children":
                for child, child_body in self._mapping(value, sub).items():
                    if child not in group.children:
                        group.children.append(child)
                        group.child_paths[child] = sub + (child,)
                    self._ansible_group(child, child_body, sub + (child,))
            else:
                raise self.doc.error(f"unknown key {key!r}; expected vars, hosts, children", sub)

    # ---- shared pieces

    def _hosts(
        self, value: Any, path: FieldPath, group: _Group | None, ansible: bool = False
    ) -> None:
        if isinstance(value, list):
            entries = []
            for index, name in enumerate(value):
                if not isinstance(name, str):
                    raise self.doc.error(
                        f"host name must be a string, got {name!r}", path + (index,)
                    )
                entries.append((name, None, path + (index,)))
        else:
            entries = [(n, v, path + (n,)) for n, v in self._mapping(value, path).items()]
        for name, host_vars, host_path in entries:
            self._check_name(name, _HOST_NAME, "host", host_path)
            merged = self.host_vars.setdefault(name, {})
            merged.update(self._vars(host_vars, host_path, ansible=ansible))
            if group is not None and name not in group.hosts:
                group.hosts.append(name)

    def _vars(self, value: Any, path: FieldPath, ansible: bool = False) -> dict[str, Any]:
        """Type-check the known vars (unknown ones are kept for future knobs)."""
        out: dict[str, Any] = {}
        for key, raw in self._mapping(value, path).items():
            name = key
            if ansible:
                if key in ANSIBLE_VARS:
                    name = ANSIBLE_VARS[key]
                    raw = self._from_ansible(name, raw, path + (key,))
                elif key.startswith("ansible_"):
                    continue
            try:
                out[name] = check_var(name, raw)
            except ValueError as exc:
                raise self.doc.error(str(exc), path + (key,)) from None
        return out

    def _from_ansible(self, name: str, value: Any, path: FieldPath) -> Any:
        # Ansible itself is lenient about these spellings; inventories written for it use them.
        if name == "ssh_port" and isinstance(value, str) and value.isdigit():
            return int(value)
        if (
            name in ("sudo", "ansible_host_key_checking")
            and isinstance(value, str)
            and value.lower() in ("yes", "true", "no", "false")
        ):
            return value.lower() in ("yes", "true")
        if name == "connection":
            if value in _ANSIBLE_SSH_CONNECTIONS:
                return "ssh"
            if value != "local":
                raise self.doc.error(
                    f"connection {value!r} is not supported: netfix connects over SSH or locally",
                    path,
                )
        return value

    def _mapping(self, value: Any, path: FieldPath) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.doc.error(f"must be a mapping, got {type(value).__name__}", path)
        return value

    def _check_name(self, name: Any, pattern: re.Pattern[str], kind: str, path: FieldPath) -> None:
        if not isinstance(name, str) or not pattern.fullmatch(name):
            raise self.doc.error(
                f"invalid {kind} name {name!r}: use letters, digits and _ . - "
                + ("@ :" if kind == "host" else ""),
                path,
            )
        if kind == "group" and name == "all" and path != ("all",):
            raise self.doc.error("'all' is the implicit group of every host", path)

    # ---- resolution

    def build(self, source: str) -> Inventory:
        for name, group in self.groups.items():
            for child in group.children:
                if child not in self.groups:
                    raise self.doc.error(
                        f"unknown child group {child!r} of {name!r}", group.child_paths[child]
                    )
        depth = self._depths()
        order = list(self.host_vars)
        members = {name: self._members(name, order) for name in self.groups}
        hosts: dict[str, Host] = {}
        for host in order:
            groups = sorted((g for g in members if host in members[g]), key=lambda g: (depth[g], g))
            # Precedence: top-level < groups (parents before children, then by name) < host.
            host_vars = dict(self.top_vars)
            for group in groups:
                host_vars.update(self.groups[group].vars)
            host_vars.update(self.host_vars[host])
            hosts[host] = Host(name=host, groups=groups, vars=host_vars)
        return Inventory(hosts=hosts, groups={"all": order, **members}, source=source)

    def _members(self, name: str, order: list[str]) -> list[str]:
        found: set[str] = set()
        todo = [name]
        while todo:
            group = self.groups[todo.pop()]
            found.update(group.hosts)
            todo.extend(group.children)
        return [h for h in order if h in found]

    def _depths(self) -> dict[str, int]:
        """Distance from the top of the group tree; a child is deeper than all its parents."""
        parents: dict[str, list[str]] = {name: [] for name in self.groups}
        for name, group in self.groups.items():
            for child in group.children:
                parents[child].append(name)
        depth: dict[str, int] = {}

        def visit(name: str, trail: list[str]) -> int:
            if name in trail:
                # trail runs child -> parent; show it as containment, parent first.
                cycle = " -> ".join(reversed(trail[trail.index(name) :] + [name]))
                raise self.doc.error(f"group cycle: {cycle}", self._group_path(name))
            if name not in depth:
                depth[name] = 1 + max((visit(p, trail + [name]) for p in parents[name]), default=-1)
            return depth[name]

        for name in self.groups:
            visit(name, [])
        return depth

    def _group_path(self, name: str) -> FieldPath:
        for group in self.groups.values():
            if name in group.child_paths:
                return group.child_paths[name]
        return ()


# --------------------------------------------------------------------------- pyinfra


# pyinfra host data -> netfix variable; the rest (ssh_user, ssh_port, ssh_key,
# ssh_known_hosts_file, ssh_strict_host_key_checking, transport, ...) has the same name.
PYINFRA_VARS = {"ssh_hostname": "ssh_host", "netfix_profile": "profile", "_sudo": "sudo"}
# pyinfra host names are connector strings too: `@docker/NAME`, `@chroot/PATH`.
_PYINFRA_HOST_NAME = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_.:@/-]*")


def load_pyinfra_inventory(path: str) -> Inventory:
    """A pyinfra inventory file read by pyinfra's own loader (the one its CLI uses), so that
    groups, `group_data/` files and connector hosts mean to netfix what they mean to pyinfra.

    Importing that loader costs about 0.2 s (pyinfra, gevent, click): only `.py`
    inventories pay it. A host named by a connector other than `@local` (`@docker/web`)
    is reached through pyinfra (transport pyinfra) unless its data says otherwise."""
    if not os.path.isfile(path):
        raise InputError("file not found", file=path)
    try:
        _without_cli_monkey_patch()
        from pyinfra.api import State
        from pyinfra.context import ctx_state
        from pyinfra_cli.exceptions import UnexpectedExternalError
        from pyinfra_cli.inventory import make_inventory_from_files
    except ImportError as e:
        raise InputError(f"a .py inventory is read by pyinfra, which cannot be imported ({e}): "
                         "pip install pyinfra", file=path) from None
    try:
        with ctx_state.use(State(check_for_changes=False)):
            loaded = make_inventory_from_files(path, cwd=os.getcwd())
    except SyntaxError as e:
        raise InputError(f"syntax error: {e.msg}", file=e.filename or path, line=e.lineno) \
            from None
    except UnexpectedExternalError as e:
        raise _code_error(e.exception, e.filename) from None
    except Exception as e:  # pyinfra's own checks (a group that is not a list, ...)
        raise _code_error(e, path) from None
    hosts: dict[str, Host] = {}
    groups: dict[str, list[str]] = {"all": []}
    for pyhost in loaded:
        name = pyhost.name
        if not _PYINFRA_HOST_NAME.fullmatch(name):
            raise InputError(f"invalid host name {name!r}: use letters, digits and _ . - @ : /",
                             file=path)
        host_vars = _pyinfra_vars(pyhost.data.dict(), path, name)
        if "transport" not in host_vars and name.startswith("@") and name != LOCAL_HOST:
            host_vars["transport"] = "pyinfra"
        member_of = list(dict.fromkeys(pyhost.groups))  # pyinfra may list a group twice
        hosts[name] = Host(name, member_of, host_vars)
        groups["all"].append(name)
        for group in member_of:
            groups.setdefault(group, []).append(name)
    if not hosts:
        raise InputError("the inventory defines no hosts (a module-level list of hosts, or "
                         "a (hosts, data) tuple, is a group)", file=path)
    return Inventory(hosts=hosts, groups=groups, source=path)


def _without_cli_monkey_patch() -> None:
    """Make `pyinfra_cli.inventory` importable without `pyinfra_cli/__init__.py`, which runs
    gevent's monkey.patch_all(): right for pyinfra's CLI, wrong for netfix's process, whose
    workers are threads and whose subprocesses are the stdlib's (patched, a pty read in the
    same process never saw EOF). Inside pyinfra's CLI the package is already imported."""
    import importlib.util
    import sys
    import types

    if "pyinfra_cli" in sys.modules:
        return
    spec = importlib.util.find_spec("pyinfra_cli")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'pyinfra_cli'")
    package = types.ModuleType("pyinfra_cli")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["pyinfra_cli"] = package


def _pyinfra_vars(data: dict[str, Any], path: str, host: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = PYINFRA_VARS.get(key, key)
        if name == "ssh_strict_host_key_checking" and isinstance(value, str):
            value = SSH_HOST_KEY_POLICIES.get(value.lower(), value)
        try:
            out[name] = check_var(name, value)
        except ValueError as exc:
            raise InputError(str(exc), file=path, path=f"{host}.{key}") from None
    return out


def _code_error(exc: BaseException, path: str) -> InputError:
    """An exception raised by the inventory's code: its message and the file's own line."""
    tb, line = exc.__traceback__ or getattr(exc, "_traceback", None), None
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return InputError(f"the inventory's code raised {type(exc).__name__}: {exc}", file=path,
                      line=line)
