"""netfix inside pyinfra: a fact, two operations, and the pyinfra transport.

    from netfix.pyinfra import netfix_profile, netfix_rollback
    netfix_profile(profile=host.data.netfix_profile)       # in a pyinfra deploy.py

`netfix_profile` plans the host with netfix's own engine (one round trip, through the
host's live pyinfra connection) and, when there is something to change, yields ONE
FunctionCommand that runs the transaction netfix's engine builds (engine.apply ->
journal.apply_script: node lock, stale checks, journal, undo on failure, optional
commit-confirm). pyinfra 3.x calls an operation's body at prepare time, to tell whether
it will change anything (`--dry` stops there), and again at execution: so `--dry` shows
the plan and changes nothing, and the real run plans again right before applying. No
command yielded = pyinfra's "No changes" (host.noop says why).

Not host.get_fact: netfix's gather also finishes a transaction the node reports as cut off
and checks it runs as root, exactly as `netfix plan` does. NetfixFacts stays for deploys
that want netfix's facts as data.

pyinfra is imported here, and this module only for pyinfra hosts: importing pyinfra costs
more than a whole one-node plan over netfix's own ssh path (see README, design notes).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pyinfra import host as current_host
from pyinfra.api import FactBase, FunctionCommand, StringCommand, operation
from pyinfra.api.exceptions import ConnectError
from pyinfra.connectors.local import LocalConnector
from pyinfra.connectors.ssh import SSHConnector

from netfix import engine
from netfix.engine import diff_facts, needs_for
from netfix.facts import Facts, build_script, parse
from netfix.inventory import PYINFRA_VARS, Host
from netfix.plan import SKIP, HostPlan, Plan
from netfix.profile import load_profile
from netfix.transport import HostUnreachable, Result

# --------------------------------------------------------------------------- fact


class NetfixFacts(FactBase):
    """Everything the profile's knobs need, read by one `sh` command."""

    # The script is POSIX sh; the login shell would only add rc-file start-up time.
    shell_executable = "sh"

    def command(self, profile: str) -> str:
        return build_script(needs_for(load_profile(profile)))

    def process(self, output: list[str]) -> Facts:
        return parse("pyinfra", "\n".join(output))


def plan_from_facts(host: str, profile: str, facts: Facts) -> HostPlan:
    return diff_facts(host, load_profile(profile), facts)


# --------------------------------------------------------------------------- transport

# pyinfra's connectors report success, not the exit code; netfix's scripts speak in exit
# codes (journal.STALE, FAILED...), so the command prints its own on a last line.
RC_MARK = "@@NETFIX-RC "
# netfix's own vars that mean nothing to pyinfra's connectors.
_NETFIX_ONLY = {"transport", "pyinfra_host", "profile", "sudo", "connect_timeout", "ssh_host",
                "connection"}


def run_on(pyhost, command: str, data: bytes, timeout: float, shell: str = "sh") -> Result:
    """One round trip over a connected pyinfra host: `command` with `data` on its stdin."""
    wrapped = f"{command}; printf '\\n{RC_MARK}%s\\n' \"$?\""
    try:
        _, output = pyhost.run_shell_command(
            StringCommand(wrapped), _stdin=data.decode(), _shell_executable=shell,
            _timeout=int(timeout), print_output=False, print_input=False)
    except (OSError, TimeoutError) as e:  # pyinfra raises what its connector raised
        raise HostUnreachable(f"pyinfra {pyhost.name}: {e or type(e).__name__}") from e
    lines = output.stdout_lines
    rc = -1
    if lines and lines[-1].startswith(RC_MARK):
        rc = int(lines.pop()[len(RC_MARK):])
        if lines and lines[-1] == "":
            lines.pop()  # the newline printed before the mark
    stdout = "\n".join(lines) + ("\n" if lines else "")
    return Result(rc, stdout, output.stderr)


def _kind(pyhost) -> str:
    if isinstance(pyhost.connector, SSHConnector):
        return "@ssh"
    return "@local" if isinstance(pyhost.connector, LocalConnector) else pyhost.name


class BoundTransport:
    """A live pyinfra host (inside an operation): netfix's round trips use its connection."""

    name: ClassVar[str] = "pyinfra"

    def __init__(self, pyhost):
        self.pyhost = pyhost
        self.connector = pyhost.name
        # Only ssh and @local are known to netfix (see transport.PyinfraTransport).
        self.sees_ssh_session = self.proves_reachability = _kind(pyhost) in ("@ssh", "@local")
        self.main_thread = False  # pyinfra runs its operations itself

    def run(self, host: Host, argv: list[str], data: bytes, timeout: float) -> Result:
        import shlex

        return run_on(self.pyhost, shlex.join(argv), data, timeout,
                      str(host.vars.get("_shell_executable") or "sh"))

    def reconnect(self, host: Host) -> None:
        self.pyhost.disconnect()
        try:
            self.pyhost.connect(raise_exceptions=True)
        except ConnectError as e:
            raise HostUnreachable(f"pyinfra {self.pyhost.name}: reconnecting failed: {e}") from e


def connector_data(host: Host) -> dict[str, Any]:
    """A netfix host's vars as pyinfra host data (pyinfra's ssh connector under netfix's
    host key policy: checking is on unless the inventory says otherwise)."""
    data = {k: v for k, v in host.vars.items() if k not in _NETFIX_ONLY}
    if host.vars.get("ssh_host"):
        data["ssh_hostname"] = host.vars["ssh_host"]
    data["ssh_strict_host_key_checking"] = host.strict_host_key_checking
    if host.known_hosts:
        data["ssh_known_hosts_file"] = host.known_hosts
    data.setdefault("ssh_connect_timeout", int(host.connect_timeout))
    return data


def run_connector(host: Host, connector: str, command: str, data: bytes,
                  timeout: float) -> Result:
    """One round trip through a pyinfra connector from netfix's own CLI: a pyinfra state
    of this one host, connected for this command and closed after it."""
    from pyinfra.api import Config, Inventory, State

    state = State(Inventory(([(connector, connector_data(host))], {})), Config())
    pyhost = state.inventory.get_host(connector)
    try:
        pyhost.connect(raise_exceptions=True)
    except ConnectError as e:
        raise HostUnreachable(f"pyinfra {connector}: {e}") from e
    try:
        return run_on(pyhost, command, data, timeout,
                      str(host.vars.get("_shell_executable") or "sh"))
    finally:
        pyhost.disconnect()


def netfix_host(pyhost) -> Host:
    """The pyinfra host as the netfix Host the engine runs on, bound to its connection."""
    data = pyhost.data.dict()
    host_vars = {PYINFRA_VARS.get(k, k): v for k, v in data.items()}
    return Host(pyhost.name, list(dict.fromkeys(pyhost.groups)), host_vars,
                via=BoundTransport(pyhost))


# --------------------------------------------------------------------------- operations


def _log(pyhost, text: str) -> None:
    from pyinfra import logger

    pyhost.log(f"netfix: {text}", logger.info)


def _report(pyhost, hp: HostPlan) -> None:
    """The plan as pyinfra log lines under the host, the way files.put shows its diff."""
    for note in hp.notices:
        _log(pyhost, note)
    for c in hp.changes:
        # the reason codes with their detail: not-settable (read-only), shadowed (the file
        # that wins at boot), other-writer (who), disruptive, management
        why = ", ".join(r.code + (f" ({r.detail})" if r.detail else "") for r in c.reasons)
        if c.action == SKIP:
            _log(pyhost, f"skip {c.knob} {c.target}: {why or 'not applicable'}")
        elif c.ops:
            flags = f" [{why}]" if why else ""
            _log(pyhost, f"change {c.knob} {c.target}: {c.current} -> {c.desired}{flags}")


def _fail(pyhost, message: str, details: list[str] = ()) -> bool:
    pyhost.log_styled(f"netfix: {message}", fg="red")
    for line in details:
        pyhost.log_styled(f"netfix:   {line}", fg="red")
    return False


def _outcome(pyhost, r: engine.HostResult) -> bool:
    """FunctionCommand's status: False fails the operation with netfix's message."""
    if not r.ok:
        return _fail(pyhost, f"{r.status}: {r.message}", r.details)
    _log(pyhost, f"{r.status}: {r.message}" + (f" (transaction {r.tx})" if r.tx else ""))
    return True


# FunctionCommand passes (state, host) only to a function whose parameters have those names.
def _apply(state, host, hp: HostPlan, options: engine.ApplyOptions) -> bool:
    (result,) = engine.apply([netfix_host(host)], Plan([hp]), options)
    return _outcome(host, result)


def _rollback(state, host, tx: str | None) -> bool:
    return _outcome(host, engine.rollback_host(netfix_host(host), tx))


def _error(state, host, message: str) -> bool:
    return _fail(host, message)


def _failing(pyhost, e: Exception):
    """A command that fails the operation on this host with netfix's message (shown at
    prepare time too, so `--dry` says why the host will fail)."""
    message = engine.host_error(e)
    if not pyhost.state.is_executing:
        _fail(pyhost, message)
    yield FunctionCommand(_error, (message,), {})


@operation()
def netfix_profile(profile: str, allow_disruptive: bool = False, confirm: int | None = None):
    """
    Apply a netfix profile to the host as one journaled netfix transaction.

    + profile: a bundled profile name or a profile file
    + allow_disruptive: also make disruptive changes on the interface carrying the connection
    + confirm: seconds; the node reverts the transaction unless a new connection confirms it

    Under ``--dry`` the host's plan is logged and nothing changes; a host already as the
    profile says reports no change. Roll back with ``netfix_rollback`` or ``netfix rollback``.
    """
    pyhost = current_host._get_module()  # the real Host, not the context proxy
    node = netfix_host(pyhost)
    try:
        hp = engine.plan_host(node, load_profile(profile))
    except Exception as e:  # this host's error only: the operation fails on it
        yield from _failing(pyhost, e)
        return
    if not pyhost.state.is_executing:
        _report(pyhost, hp)
    if not hp.pending:
        pyhost.noop(f"netfix: {hp.host} already as profile {hp.profile} says")
        return
    options = engine.ApplyOptions(confirm_secs=confirm, auto_confirm=confirm is not None,
                                  allow_disruptive=allow_disruptive)
    yield FunctionCommand(_apply, (hp, options), {})


@operation()
def netfix_rollback(tx: str | None = None):
    """
    Roll back a netfix transaction (default: the newest applied one) from the node's journal.

    + tx: the transaction id (see ``netfix history``)
    """
    pyhost = current_host._get_module()
    node = netfix_host(pyhost)
    try:
        found = engine.read_journal(node)
        target = engine._pick(found, tx)
    except Exception as e:
        if tx is None and "nothing to roll back" in str(e):
            pyhost.noop("netfix: nothing to roll back")
            return
        yield from _failing(pyhost, e)
        return
    if not pyhost.state.is_executing:
        _log(pyhost, f"roll back transaction {target.id} ({len(target.steps)} step(s))")
    yield FunctionCommand(_rollback, (target.id,), {})
