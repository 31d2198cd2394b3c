"""The transport seam: which transport a host gets, what each one can vouch for, and how
apply and plan act on it. Round trips go through recording transports (Host.via) or the
real local transport running real sh."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

import pytest

from netfix import engine, transport
from netfix.inventory import Host
from netfix.plan import Change, HostPlan, Op, Plan
from netfix.status import HostStatus


@dataclass
class Recorder:
    """A transport that records every round trip and answers with `rc`."""

    name: str = "recorder"
    sees_ssh_session: bool = True
    proves_reachability: bool = True
    main_thread: bool = False
    rc: int = 0
    calls: list[tuple[list[str], bytes]] = field(default_factory=list)
    threads: list[bool] = field(default_factory=list)

    def run(self, host, argv, data, timeout):
        self.calls.append((argv, data))
        self.threads.append(threading.current_thread() is threading.main_thread())
        return transport.Result(self.rc, "", "")

    def reconnect(self, host) -> None:
        pass


def host(name: str = "n1", **host_vars) -> Host:
    return Host(name, [], host_vars)


@pytest.mark.parametrize(("h", "kind", "sees", "proves"), [
    (host("node1"), transport.SshTransport, True, True),
    (host("@local"), transport.LocalTransport, True, True),
    (host("x", connection="local"), transport.LocalTransport, True, True),
    (host("node1", transport="pyinfra"), transport.PyinfraTransport, True, True),
    (host("n", transport="pyinfra", pyinfra_host="@local"), transport.PyinfraTransport, True,
     True),
    (host("@docker/web", transport="pyinfra"), transport.PyinfraTransport, False, False),
    (host("c", transport="pyinfra", pyinfra_host="@chroot/srv"), transport.PyinfraTransport,
     False, False),
])
def test_each_host_gets_its_transport_and_capabilities(h, kind, sees, proves):
    t = transport.transport_for(h)
    assert isinstance(t, kind)
    assert (t.sees_ssh_session, t.proves_reachability) == (sees, proves)
    assert (transport.limitations(h) == []) == (sees and proves)


def test_limitations_say_which_transport_and_what_follows():
    notes = transport.limitations(host("@docker/web", transport="pyinfra"))
    assert notes[0].startswith("transport pyinfra (@docker/web) cannot tell which interface")
    assert "refuses them without --allow-disruptive" in notes[0]
    assert "--confirm is refused" in notes[1]


def test_the_default_ssh_path_does_not_import_pyinfra():
    import subprocess
    import sys

    code = ("import sys; from netfix import transport; from netfix.inventory import Host; "
            "transport.transport_for(Host('n', [], {})); "
            "print([m for m in sys.modules if m.startswith(('pyinfra', 'gevent'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_paramiko_is_imported_without_invoke_which_stays_importable():
    """paramiko.config imports invoke only for ssh_config `Match exec`, which netfix never
    has paramiko read: 45 ms (asyncio, unittest.mock) before every run's first connection."""
    import subprocess
    import sys

    code = ("import sys; from netfix import transport; p = transport._paramiko(); "
            "print('invoke' in sys.modules, p.SSHClient.__name__, p.config.invoke); "
            "import invoke; print(invoke.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "SSHClient", "None", "invoke"]


def test_run_hands_argv_and_the_whole_script_to_the_hosts_transport():
    rec = Recorder()
    h = Host("n1", [], {}, via=rec)
    transport.run(h, "echo hi\n", staged=True, state_dir="/tmp/st")
    (argv, data), = rec.calls
    assert data == b"echo hi\n"
    # staged: STAGE receives the length and sha256 and checks them before running anything
    assert argv[:3] == ["sh", "-c", transport.STAGE]
    assert argv[4:] == ["8", hashlib.sha256(data).hexdigest(), "/tmp/st"]


def test_pyinfra_scripts_end_with_a_newline_so_the_staged_length_holds():
    rec = Recorder(name="pyinfra")
    transport.run(Host("n1", [], {}, via=rec), "echo hi", staged=True)
    (argv, data), = rec.calls
    assert data == b"echo hi\n" and argv[4] == "8"


def test_local_transport_runs_real_sh():
    res = transport.run(host("@local"), 'echo "out"; echo err >&2; exit 3')
    assert (res.rc, res.stdout, res.stderr) == (3, "out\n", "err\n")


def pending_plan(name: str, disruptive: bool = False) -> HostPlan:
    c = Change("sysctl", "net.core.somaxconn", "4096", "8192",
               ops=[Op("value", "/proc/sys/net/core/somaxconn", "4096", "8192")],
               flags=["disruptive"] if disruptive else [])
    return HostPlan(name, "p", [c], "fp")


def test_confirm_is_refused_where_the_transport_cannot_prove_reachability():
    rec = Recorder(proves_reachability=False)
    h = Host("n1", [], {}, via=rec)
    (r,) = engine.apply([h], Plan([pending_plan("n1")]), engine.ApplyOptions(confirm_secs=30))
    assert r.status == HostStatus.REFUSED and not r.ok
    assert "--confirm needs proof" in r.message and "nothing was changed" in r.message
    assert rec.calls == []  # refused before any round trip


def test_disruptive_changes_are_refused_where_the_management_interface_is_unknown():
    rec = Recorder(sees_ssh_session=False)
    h = Host("n1", [], {}, via=rec)
    (r,) = engine.apply([h], Plan([pending_plan("n1", disruptive=True)]))
    assert r.status == HostStatus.REFUSED and "cannot tell which interface" in r.message
    assert r.details == ["sysctl net.core.somaxconn: 4096 -> 8192"] and rec.calls == []
    # the operator's explicit yes goes through to the node (one staged round trip)
    (r,) = engine.apply([h], Plan([pending_plan("n1", disruptive=True)]),
                        engine.ApplyOptions(allow_disruptive=True))
    assert r.status == HostStatus.APPLIED and len(rec.calls) == 1
    # a change that is not disruptive needs no guard
    (r,) = engine.apply([h], Plan([pending_plan("n1")]))
    assert r.status == HostStatus.APPLIED and len(rec.calls) == 2


def test_transports_that_need_the_main_thread_stay_on_it_the_others_run_in_the_pool():
    pinned, free = Recorder(main_thread=True), Recorder()
    hosts = [Host(f"p{i}", [], {}, via=pinned) for i in range(3)]
    hosts += [Host(f"f{i}", [], {}, via=free) for i in range(3)]
    names = engine.parallel(hosts, lambda h: transport.run(h, "true") and h.name)
    assert names == [h.name for h in hosts]  # results in host order, whatever ran where
    assert pinned.threads == [True, True, True]
    assert free.threads == [False, False, False]


class FakePyinfraHost:
    """Answers run_shell_command the way pyinfra's connectors do: success and lines only."""

    name = "@fake"

    def __init__(self, stdout: list[str], stderr: list[str]):
        from pyinfra.connectors.util import CommandOutput, OutputLine

        self.output = CommandOutput([OutputLine("stdout", s) for s in stdout]
                                    + [OutputLine("stderr", s) for s in stderr])
        self.commands: list[tuple[str, dict]] = []

    def run_shell_command(self, command, **kwargs):
        self.commands.append((command.get_raw_value(), kwargs))
        return True, self.output


@pytest.mark.parametrize(("stdout", "rc", "text"), [
    (["FAILED\tk\twhy", "", "@@NETFIX-RC 65"], 65, "FAILED\tk\twhy\n"),
    (["partial line@@NETFIX-RC 3"], -1, "partial line@@NETFIX-RC 3\n"),  # not on its own line
    (["", "@@NETFIX-RC 0"], 0, ""),
    ([], -1, ""),  # no mark at all: the command was cut off
])
def test_pyinfra_round_trip_reads_the_exit_code_netfix_prints(stdout, rc, text):
    from netfix import pyinfra

    fake = FakePyinfraHost(stdout, ["warn"])
    res = pyinfra.run_on(fake, "sh -s", b"echo x\n", 10)
    assert (res.rc, res.stdout, res.stderr) == (rc, text, "warn")
    (command, kwargs), = fake.commands
    assert command.startswith("sh -s; printf") and kwargs["_stdin"] == "echo x\n"
    assert kwargs["_shell_executable"] == "sh"


class FakeClient:
    """An SSH client stand-in: counts the commands it carried and whether it was closed."""

    made: list[FakeClient] = []

    def __init__(self, fail: type[Exception] | None = None):
        self.ran: list[str] = []
        self.closed = False
        self.fail = fail
        FakeClient.made.append(self)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_ssh(monkeypatch):
    """_client and _exec without a network: what reuse and replacement of connections do."""
    FakeClient.made = []

    def execute(h, client, command, data, timeout):
        assert not client.closed, "a closed connection was used"
        if client.fail:
            raise client.fail(f"{command} failed")
        client.ran.append(command)
        return transport.Result(0, command, "")

    monkeypatch.setattr(transport, "_client", lambda h: FakeClient())
    monkeypatch.setattr(transport, "_exec", execute)
    return FakeClient


def test_without_keep_every_round_trip_has_its_own_connection(fake_ssh):
    for cmd in ("plan", "tx"):
        transport._run_ssh(host("node1"), cmd, b"", 1)
    assert [c.ran for c in fake_ssh.made] == [["plan"], ["tx"]]
    assert all(c.closed for c in fake_ssh.made)


def test_keep_carries_the_next_round_trip_from_any_thread_then_closes(fake_ssh):
    """apply: the plan's connection (one worker thread) carries the transaction (another)."""
    with transport.keep():
        transport._run_ssh(host("node1"), "plan", b"", 1)
        t = threading.Thread(target=transport._run_ssh, args=(host("node1"), "tx", b"", 1))
        t.start()
        t.join()
        transport._run_ssh(host("node2"), "plan", b"", 1)
        assert not any(c.closed for c in fake_ssh.made)
    assert [c.ran for c in fake_ssh.made] == [["plan", "tx"], ["plan"]]
    assert all(c.closed for c in fake_ssh.made)


def test_forget_makes_the_next_round_trip_a_new_connection(fake_ssh):
    """--confirm's proof of reachability is a connection made after the change."""
    with transport.keep():
        transport._run_ssh(host("node1"), "tx", b"", 1)
        transport.SSH.reconnect(host("node1"))
        assert fake_ssh.made[0].closed
        transport._run_ssh(host("node1"), "probe", b"", 1)
    assert [c.ran for c in fake_ssh.made] == [["tx"], ["probe"]]


def test_a_stale_kept_connection_is_replaced_and_the_command_runs_once(fake_ssh):
    with transport.keep():
        transport._run_ssh(host("node1"), "plan", b"", 1)
        fake_ssh.made[0].fail = transport.HostUnreachable  # nothing started on it
        res = transport._run_ssh(host("node1"), "tx", b"", 1)
    assert res.stdout == "tx"
    assert [c.ran for c in fake_ssh.made] == [["plan"], ["tx"]]
    assert all(c.closed for c in fake_ssh.made)


def test_a_connection_lost_mid_command_is_raised_and_never_reused(fake_ssh):
    """The command may have run: that is the caller's to find out (engine.outcome), and
    the broken connection does not go back to the pool."""
    with transport.keep():
        transport._run_ssh(host("node1"), "plan", b"", 1)
        fake_ssh.made[0].fail = transport.ConnectionLost
        with pytest.raises(transport.ConnectionLost):
            transport._run_ssh(host("node1"), "tx", b"", 1)
        assert fake_ssh.made[0].closed and len(fake_ssh.made) == 1
        transport._run_ssh(host("node1"), "status", b"", 1)
    assert [c.ran for c in fake_ssh.made] == [["plan"], ["status"]]


def test_a_session_inside_keep_owns_its_connection(fake_ssh):
    with transport.keep():
        with transport.session(host("node1")):
            transport._run_ssh(host("node1"), "a", b"", 1)
            transport._run_ssh(host("node1"), "b", b"", 1)
        assert fake_ssh.made[0].closed  # the session's, closed with it
        transport._run_ssh(host("node1"), "c", b"", 1)
    assert [c.ran for c in fake_ssh.made] == [["a", "b"], ["c"]]


def test_staging_costs_five_processes_and_a_short_script_runs_nothing(tmp_path):
    """stage.sh on this machine, under strace: store (cat), hash (sha256sum), run detached
    (setsid, one sh whose subshell sources the script), print the output (cat), clean up
    (rm): no mktemp, no wc, no cat of an empty stderr. A script missing its last byte
    runs nothing and says how much came."""
    from execs import run_counted

    state = tmp_path / "state"
    (state / "run").mkdir(parents=True)
    script = f'echo ran > {state}/out; echo hi\n'
    argv = ["sh", "-c", transport.STAGE, "netfix-stage", str(len(script)),
            hashlib.sha256(script.encode()).hexdigest(), str(state)]
    p, _ = run_counted(argv, tmp_path / "t1", input=script[:-1])
    assert p.returncode == transport.INCOMPLETE, p
    assert f"({len(script) - 1} of {len(script)} bytes)" in p.stdout, p.stdout
    assert not (state / "out").exists()
    p, ran = run_counted(argv, tmp_path / "t2", input=script)
    assert p.returncode == 0 and p.stdout == "hi\n", p
    assert (state / "out").read_text() == "ran\n"
    assert ran == {"sh": 2, "cat": 2, "sha256sum": 1, "setsid": 1, "rm": 1}, ran
    assert list((state / "run").iterdir()) == []


def test_every_transport_takes_the_host_it_reconnects():
    """Transport.reconnect(host) is called by --confirm's probe for any transport, the one
    netfix's pyinfra operations bind included (a missed one failed only under --confirm)."""
    import inspect

    from netfix.pyinfra import BoundTransport

    for cls in (transport.SshTransport, transport.LocalTransport, transport.PyinfraTransport,
                BoundTransport, Recorder):
        assert list(inspect.signature(cls.reconnect).parameters) == ["self", "host"], cls
