"""known_hosts: parallel accept-new saves lose nothing, a file that is not known_hosts is
never written, and a malformed line is a clear error or ignored, never a traceback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from netfix import knownhosts
from netfix.inventory import Host
from netfix.knownhosts import KnownHostsError, add_new, parse_line, read
from netfix.transport import HostUnreachable


def blob(kind: str = "ssh-ed25519", body: bytes | None = None) -> bytes:
    body = os.urandom(32) if body is None else body
    name = kind.encode()
    return len(name).to_bytes(4, "big") + name + len(body).to_bytes(4, "big") + body


def line(name: str, data: bytes | None = None, kind: str = "ssh-ed25519") -> str:
    return f"{name} {kind} {base64.b64encode(data or blob(kind)).decode()}\n"


def hashed(name: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


# --------------------------------------------------------------------------- concurrency


def test_50_parallel_new_hosts_all_end_up_in_the_file(tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"  # neither the dir nor the file exists yet
    keys = {f"10.251.0.{10 + i}": blob() for i in range(50)}
    start = threading.Barrier(len(keys))
    errors: list[Exception] = []

    def one(address: str) -> None:
        start.wait()
        try:
            assert add_new(str(known), address, 22, "ssh-ed25519", keys[address])
        except Exception as e:  # a thread's failure is not pytest's: report it below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(a,)) for a in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = read(str(known))
    assert not got.bad and len(got.entries) == 50
    assert {e.names[0]: e.blob for e in got.entries} == keys
    assert len(known.read_text().splitlines()) == 50


def test_the_same_new_host_from_many_threads_is_written_once(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    key = blob()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(
        add_new(str(known), "10.0.0.1", 22, "ssh-ed25519", key))) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert known.read_text() == line("10.0.0.1", key)


# --------------------------------------------------------------------------- what is written


def test_appends_only_the_new_line_and_keeps_the_rest(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    old = ("# managed by hand\n\n" + line("a.example,10.0.0.1") + line(hashed("10.0.0.2"))
           + "@cert-authority *.example " + line("x").split(" ", 1)[1]
           + "@revoked * " + line("x").split(" ", 1)[1]
           + line("old", kind="ssh-dss") + line("sk", kind="sk-ssh-ed25519@openssh.com")
           + line("[10.0.0.3]:2222").rstrip("\n"))  # no final newline
    known.write_text(old)
    known.chmod(0o640)
    key = blob()
    assert add_new(str(known), "10.0.0.4", 2222, "ssh-ed25519", key)
    assert known.read_text() == old + "\n" + line("[10.0.0.4]:2222", key)
    assert stat.S_IMODE(known.stat().st_mode) == 0o640


def test_a_known_key_is_not_added_again_also_when_hashed(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    key = blob()
    text = line(hashed("[10.0.0.2]:2222"), key)
    known.write_text(text)
    assert add_new(str(known), "10.0.0.2", 2222, "ssh-ed25519", key) is False
    assert known.read_text() == text


def test_another_key_for_the_host_is_refused(tmp_path: Path) -> None:
    # Written by another run between our read and our lock: accept-new must not add a second.
    known = tmp_path / "known_hosts"
    text = line("10.0.0.2")
    known.write_text(text)
    with pytest.raises(KnownHostsError, match="possible impersonation"):
        add_new(str(known), "10.0.0.2", 22, "ssh-ed25519", blob())
    assert known.read_text() == text


def test_dev_null_is_not_written_and_gets_no_lock_file() -> None:
    assert add_new(os.devnull, "10.0.0.2", 22, "ssh-ed25519", blob()) is False
    assert not os.path.exists(os.devnull + ".lock")


def test_new_file_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        add_new(str(tmp_path / "known_hosts"), "h", 22, "ssh-ed25519", blob())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "known_hosts").stat().st_mode) == 0o644


# --------------------------------------------------------------------------- not known_hosts


NOT_KNOWN_HOSTS = {
    "inventory.yaml": b"all:\n  hosts:\n    node1: {ansible_host: 10.0.0.1}\n",
    "passwd": b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    "words": b"three plain words\n",
    "base64-but-no-key": b"host ssh-ed25519 aGVsbG8gd29ybGQ=\n",
    "binary": bytes(range(256)),
    "one-bad-line": line("10.0.0.1").encode() + b"10.0.0.2 ssh-ed25519 AAAA!!not-base64\n",
    "bad-hashed-name": b"|1|c2hvcnQ=|c2hvcnQ= " + line("x").split(" ", 1)[1].encode(),
    "bad-marker": b"@trusted " + line("x").encode(),
}


@pytest.mark.parametrize("name", list(NOT_KNOWN_HOSTS))
def test_a_file_that_is_not_known_hosts_is_never_written(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(NOT_KNOWN_HOSTS[name])
    with pytest.raises(KnownHostsError) as info:
        add_new(str(path), "10.0.0.9", 22, "ssh-ed25519", blob())
    message = str(info.value)
    assert f"{path} is not a known_hosts file (line " in message
    assert "left it untouched" in message and "10.0.0.9" in message
    assert path.read_bytes() == NOT_KNOWN_HOSTS[name]
    assert sorted(os.listdir(tmp_path)) == sorted([name, name + ".lock"])  # no temp files
    assert isinstance(info.value, HostUnreachable)  # one host's error, like any connect error


def test_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KnownHostsError, match="cannot read known hosts file"):
        read(str(tmp_path))


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("h ssh-ed25519", "expected host names, key type and key"),
        ("h ssh-ed25519 AAAA!!", "not base64"),
        (line("h", kind="ssh-rsa").replace("ssh-rsa", "ssh-ed25519"), "not a ssh-ed25519 key"),
        ("@bogus " + line("h"), "unknown marker"),
        (",h " + line("x").split(" ", 1)[1], "bad host name"),
    ],
)
def test_parse_line_says_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_line(text)


def test_read_sets_bad_lines_aside_with_their_numbers(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("# c\n" + line("good1") + "junk\n" + line("good2") + "h ssh-ed25519 A!\n")
    got = read(str(known))
    assert [e.names for e in got.entries] == [["good1"], ["good2"]]
    assert [b.split(":")[0] for b in got.bad] == ["line 3", "line 5"]
    assert "line 3: expected host names" in got.ignored() and "and 1 more" in got.ignored()
    assert read(str(tmp_path / "missing")).entries == []


def test_install_gives_paramiko_the_usable_keys_only(tmp_path: Path) -> None:
    import paramiko

    known = tmp_path / "known_hosts"
    good = blob()
    known.write_text(line("10.0.0.1,alias", good) + line("[10.0.0.2]:2222", good)
                     + line(hashed("10.0.0.3"), good) + line("dsa", kind="ssh-dss")
                     + "@revoked * " + line("x").split(" ", 1)[1] + "junk line here\n"
                     + line("broken-rsa", blob("ssh-rsa", b"\x00" * 3)))
    got = read(str(known))
    for address, port, name in [("10.0.0.1", 22, "10.0.0.1"), ("alias", 22, "alias"),
                                ("10.0.0.2", 2222, "[10.0.0.2]:2222"),
                                ("10.0.0.3", 22, "10.0.0.3")]:
        client = paramiko.SSHClient()
        got.install(client, address, port)
        keys = client.get_host_keys()
        assert keys.lookup(name)["ssh-ed25519"].asbytes() == good, name
        # Only this host's line ("10.0.0.1,alias" is one line with two names).
        assert len(keys.keys()) == (2 if name in ("10.0.0.1", "alias") else 1)
    for address in ("dsa", "broken-rsa", "10.0.0.2"):  # 10.0.0.2 is known on port 2222 only
        client = paramiko.SSHClient()
        got.install(client, address, 22)
        assert len(client.get_host_keys().keys()) == 0, address


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("policy", ["yes", "accept-new", "no"])
def test_a_malformed_known_hosts_is_no_traceback_when_connecting(tmp_path: Path,
                                                                 policy: str) -> None:
    # paramiko's loader raised InvalidHostKey / UnicodeDecodeError here, before connecting.
    from netfix import transport

    known = tmp_path / "known_hosts"
    data = b"10.0.0.2 ssh-ed25519 AAAA!!not-base64\n\xff\xfe binary\n"
    known.write_bytes(data)
    host = Host("n", [], {"ssh_host": "127.0.0.1", "ssh_port": _closed_port(),
                          "ssh_known_hosts_file": str(known),
                          "ssh_strict_host_key_checking": policy, "connect_timeout": 2})
    with pytest.raises(HostUnreachable, match="cannot reach 127.0.0.1"):
        transport._client(host)
    assert known.read_bytes() == data


def test_accept_new_policy_records_only_a_key_it_accepted(tmp_path: Path) -> None:
    import paramiko

    known = tmp_path / "known_hosts"
    policy = knownhosts.AcceptNew()
    assert policy.record(str(known), "10.0.0.1", 22) is False and not known.exists()
    key = paramiko.PKey.from_type_string("ssh-ed25519", blob())
    policy.missing_host_key(None, "10.0.0.1", key)
    assert policy.record(str(known), "10.0.0.1", 22) is True
    assert known.read_text() == f"10.0.0.1 ssh-ed25519 {key.get_base64()}\n"


def test_a_directory_is_not_silently_skipped_when_adding(tmp_path: Path) -> None:
    (tmp_path / "kh").mkdir()
    with pytest.raises(KnownHostsError, match="cannot read known hosts file"):
        add_new(str(tmp_path / "kh"), "h", 22, "ssh-ed25519", blob())


def test_a_file_is_parsed_once_per_change(tmp_path, monkeypatch):
    """A run's hosts share one known_hosts: it is parsed again only when it changed, and a
    key added (by this run or another) is always seen."""
    path = tmp_path / "known_hosts"
    path.write_text(line("10.0.0.1"))
    calls = []
    real = knownhosts.parse_line
    monkeypatch.setattr(knownhosts, "parse_line", lambda line: calls.append(line) or real(line))
    first = knownhosts.read(str(path))
    assert knownhosts.read(str(path)) is first and len(calls) == 1
    assert knownhosts.add_new(str(path), "10.0.0.2", 22, "ssh-ed25519", blob())
    again = knownhosts.read(str(path))
    assert [e.names for e in again.entries] == [["10.0.0.1"], ["10.0.0.2"]]


def test_install_looks_a_host_up_instead_of_scanning_the_file(tmp_path, monkeypatch):
    """A fleet's file has a line per node and every connection installs one host: a scan
    per connection made a 100-node run O(hosts x lines). Only hashed names are tried."""
    import paramiko

    known = tmp_path / "known_hosts"
    first, second = blob(), blob()
    known.write_text("".join(line(f"10.1.0.{i}") for i in range(200))
                     + line(hashed("10.9.9.9"), first) + line("10.9.9.9,alias", second))
    calls = []
    real = knownhosts._name_matches
    monkeypatch.setattr(knownhosts, "_name_matches", lambda p, n: calls.append(p) or real(p, n))
    got = read(str(known))
    for i in range(200):
        client = paramiko.SSHClient()
        got.install(client, f"10.1.0.{i}", 22)
        assert list(client.get_host_keys().keys()) == [f"10.1.0.{i}"]
    assert len(calls) == 200  # the one hashed line, once per host; no plain name compared
    # Named by a hashed line and by a plain one: both, in file order.
    assert [e.blob for e in got.for_name("10.9.9.9")] == [first, second]
    assert [e.blob for e in got.for_name("alias")] == [second]
    assert got.for_name("10.1.0.200") == []
