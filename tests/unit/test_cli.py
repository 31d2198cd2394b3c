"""The CLI on bad input: one clear message naming file, line and field; exit code 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

NETFIX = str(Path(sys.executable).with_name("netfix"))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NETFIX_INVENTORY"}
    return subprocess.run([NETFIX, *args], capture_output=True, text=True, cwd=cwd, env=env)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "bad.yaml", """\
        description: x
        sysctl:
          net.core.somaxconn: [1
        conntrack: {}
        """)
    for args in (["profiles", "validate", str(p)], ["plan", "--profile", str(p)]):
        r = run(*args)
        assert r.returncode == 1, r
        assert f"{p}:" in r.stderr and "Traceback" not in r.stderr
        line = int(r.stderr.split(f"{p}:")[1].split(":")[0])
        assert line in (3, 4)


def test_schema_violation_names_field_path_and_line(tmp_path):
    p = write(tmp_path, "bad.yaml", """\
        description: x
        conntrack:
          timeouts:
            udp: fifteen
        """)
    r = run("plan", "--profile", str(p))
    assert r.returncode == 1
    assert f"{p}:4: conntrack.timeouts.udp:" in r.stderr, r.stderr


def test_broken_four_to_one_names_both_numbers(tmp_path):
    p = write(tmp_path, "bad.yaml", "conntrack: {max: 262144, buckets: 1000}\n")
    r = run("profiles", "validate", str(p))
    assert r.returncode == 1
    assert "1000" in r.stderr and "262144" in r.stderr and "65536" in r.stderr


def test_unknown_profile_lists_available():
    r = run("plan", "--profile", "no-such-profile")
    assert r.returncode == 1
    assert "no-such-profile" in r.stderr and "public-vds" in r.stderr


def test_shell_injection_in_profile_value_is_rejected(tmp_path):
    p = write(tmp_path, "bad.yaml", 'sysctl: {net.core.somaxconn: "1; reboot"}\n')
    r = run("profiles", "validate", str(p))
    assert r.returncode == 1 and 'sysctl."net.core.somaxconn"' in r.stderr


def test_bad_plan_file_and_unknown_limit(tmp_path):
    p = write(tmp_path, "plan.json", "{not json")
    r = run("apply", str(p))
    assert r.returncode == 1 and "not a netfix plan" in r.stderr
    r = run("plan", "--profile", "base", "--limit", "nothing-here")
    assert r.returncode == 1 and "nothing-here" in r.stderr


def test_profiles_show_derives_buckets_and_list():
    r = run("profiles", "show", "public-vds")
    assert r.returncode == 0, r.stderr
    assert "65536 (derived: max/4)" in r.stdout and "extends" not in r.stdout
    r = run("profiles", "show", "k8s-node")
    assert "auto (auto: max(32768 x" in r.stdout
    names = [line.split()[0] for line in run("profiles", "list").stdout.splitlines()]
    assert {"base", "k8s-node", "public-vds"} <= set(names)


def test_plan_local_read_only_json_and_help():
    r = run("plan", "--profile", "base", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["hosts"][0]["host"] == "@local" and plan["hosts"][0]["fingerprint"]
    h = run("apply", "--help")
    assert "--serial" in h.stdout and "journal" in h.stdout


def test_lab_vm_options_on_bad_input(tmp_path):
    # Refused before anything is started: no root, no QEMU needed.
    p = run("lab", "up", "--ssh-timeout", "5")
    assert p.returncode == 1 and "--ssh-timeout is for the VM lab node (--vm)" in p.stderr
    p = run("lab", "up", "--vm", "--ssh-timeout", "0")
    assert p.returncode == 2 and "0 is not in the range x>=1" in p.stderr, p.stderr
    env = {**os.environ, "NETFIX_VM_DIR": str(tmp_path / "no-vm")}
    p = subprocess.run([NETFIX, "lab", "reboot"], capture_output=True, text=True, env=env)
    assert p.returncode == 1 and f"no VM running for {tmp_path / 'no-vm'}" in p.stderr, p.stderr


def test_lab_commands_come_from_the_netfix_commands_entry_point(capsys):
    """`netfix lab` is netfix-lab's (lab/), added through the `netfix.commands` entry point
    group: netfix itself defines no lab command, and a broken add-on only warns."""
    from importlib.metadata import EntryPoint, entry_points

    import click

    from netfix import cli

    eps = entry_points(group=cli.COMMANDS_GROUP)
    assert [(e.name, e.value) for e in eps] == [("lab", "netfix_lab.cli:lab")]
    group = cli.Main(commands={"plan": cli.main.get_command(click.Context(cli.main), "plan")})
    ctx = click.Context(group)
    assert "lab" not in group.commands
    assert group.list_commands(ctx) == ["lab", "plan"]
    lab = group.get_command(ctx, "lab")
    assert lab is not None and sorted(lab.commands) == ["down", "reboot", "up"]
    assert group.get_command(ctx, "nope") is None

    broken = cli.Main()
    broken._extra = {"gone": EntryPoint("gone", "netfix_lab.not_there:lab", cli.COMMANDS_GROUP)}
    assert broken.get_command(click.Context(broken), "gone") is None
    err = capsys.readouterr().err
    assert "command 'gone' (netfix_lab.not_there:lab) did not load" in err, err
