"""The sh the nodes run, as files (netfix/sh): shellcheck-clean, parameters passed as
quoted shell variables, and the sh that reads values on a node agreeing with the Python
that reads the same values in the facts (the normaliser, the ethtool parsers)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netfix import ethtool, ifaces, journal, sh
from netfix.facts import Needs, build_script, parse
from netfix.util import norm

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data"
ET = DATA / "ethtool"


def run_sh(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script, "sh", *args], capture_output=True, text=True,
                          env=env)


# --------------------------------------------------------------------------- the files


def test_every_file_is_package_data_and_loads():
    names = sh.files()
    assert "prelude.sh" in names and len(names) >= 20
    assert '"netfix.sh" = ["*.sh"]' in (ROOT / "pyproject.toml").read_text()
    for name in names:
        text = sh.load(name)
        assert sh.source(name).startswith("# shellcheck shell=sh\n"), name
        assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0, name
        # Comments go, shellcheck directives stay (the samples are checked with them).
        assert not re.search(r"^\s*#(?! shellcheck disable=)", text, re.M), name


def test_no_token_replacement_left_in_the_python():
    for path in [*(ROOT / "netfix").glob("*.py"), *(ROOT / "netfix" / "knobs").glob("*.py")]:
        assert not re.search(r"@[A-Z]{3,}@", path.read_text()), path


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed")
def test_shellcheck_clean_on_files_and_generated_samples(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "sh-samples.py"), "--check",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    names = {p.name for p in tmp_path.iterdir()}
    assert {"facts.sh", "apply.sh", "rollback.sh", "recover.sh", "outcome.sh", "nic.sh",
            "confirm.sh", "revert.sh"} <= names
    assert any(n.endswith("-irqbalance.sh") for n in names)


@pytest.mark.parametrize("value", ["plain", "two words", "it's", "$(id)", "`id`", "a\nb",
                                   "", "*", "-n", "tab\there", "back\\slash", '"q"'])
def test_parameters_arrive_as_given(value):
    r = run_sh(sh.assign(NF_X=value) + 'printf %s "$NF_X"')
    assert r.returncode == 0 and r.stdout == value


def test_list_parameters_are_words_and_blanks_are_refused():
    assert sh.assign(NF_L=["a*", "b"], NF_B=True, NF_N=False) == "NF_L='a* b'\nNF_B=1\nNF_N=0\n"
    with pytest.raises(ValueError, match="without blanks"):
        sh.assign(NF_L=["a b"])
    with pytest.raises(ValueError, match="not a shell variable"):
        sh.assign(**{"1X": "v"})


def test_a_script_carries_the_prelude_functions_it_uses():
    assert "nf_write()" not in build_script(Needs())
    text = journal.apply_script(journal.Tx("t", "apply", "h", "p", []))
    assert text.count("nf_write() {") == 1 and "nf_norm() {" in text
    assert sh.prelude_functions("nf_write x").split("() {")[0] == "nf_dir"  # its helpers


def test_python_constants_match_the_sh():
    assert f"{journal.UNCONFIRMED}*)" in sh.load("confirm.sh")
    recover = sh.load("recover.sh")
    assert f'"$TX" {journal.INTERRUPTED};' in recover
    assert f'"$TX" {journal.INTERRUPTED_INCOMPLETE};' in recover
    assert f"exit {journal.REVERTING}" in sh.load("disarm-pre.sh")
    tx = sh.load("tx.sh")
    assert f"exit {journal.SETUP}" in tx and f"exit {journal.LOCKED}" in tx
    fail = sh.load("tx-fail.sh")
    assert f"exit {journal.FAILED}" in fail and f"exit {journal.RESTORE_FAILED}" in fail


# --------------------------------------------------------------------------- normaliser


VALUES = ["1", "4096\t16384\t4194304", "4096\t16384\t4194304\n", "  lead and trail  ",
          "multiple   spaces  inside", "\ttabs\t\tonly\t", "one\ntwo\nthree\n", "\n\n",
          "", " ", "\t", "a \t \n b", "x\n\n\ny", "0-3,6", "cubic reno", "* not a glob ?",
          "-n", "-e x", "a\\tb"]


def test_sh_normaliser_equals_python_norm():
    prog = sh.prelude_functions("nf_norm") + \
        'for v in "$@"; do nf_norm "$v"; printf "%s\\0" "$NORM"; done'
    r = run_sh(prog, *VALUES)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\0")[:-1] == [norm(v) for v in VALUES]


def test_node_reads_value_files_as_the_facts_do(tmp_path):
    """The plan's current value (the fact script's one grep, parsed and normalised in
    Python) and the apply script's two readers of the same file (gv from one grep for the
    stale check, curv after a write) agree, whatever the blanks and newlines."""
    paths = []
    for i, v in enumerate(VALUES):
        p = tmp_path / f"v{i}"
        p.write_text(v)
        paths.append(str(p))
    facts = parse("h", subprocess.run(["sh", "-s"], input=build_script(Needs(paths=set(paths))),
                                      capture_output=True, text=True).stdout)
    readers = (sh.prelude_functions(sh.load("tx.sh")) + sh.function("tx.sh", "curv")
               + "NL='\n'\n" + sh.function("tx.sh", "gv")
               + 'G=$(grep -aH \'\' -- "$@" 2>/dev/null)\n'
               'for p in "$@"; do gv "$p"; g=$CUR; curv "$p"; printf "%s\\t%s\\0" "$g" "$CUR"; '
               "done")
    r = run_sh(readers, *paths)
    assert r.returncode == 0, r.stderr
    got = [tuple(x.split("\t")) for x in r.stdout.split("\0")[:-1]]
    for path, v, (gv, curv) in zip(paths, VALUES, got, strict=True):
        plan = facts.value(path).value or ""  # an empty file gives no grep line: None
        assert gv == curv == plan == norm(v), (v, gv, curv, plan)


# --------------------------------------------------------------------------- ethtool


def recordings() -> list[tuple[str, ethtool.Output]]:
    """Every recorded text output of -l/-g/-c/-k: the ethtool recordings, and the ethtool
    sections of the recorded fact snippet outputs."""
    found = []
    for path in sorted(ET.glob("*-[lgck].txt")):
        o = ethtool.Output(path.stem[-1], "text", 0, path.read_text())
        if "not supported" not in o.text:  # what veth says to -g/-c (exit 1: no step)
            found.append((path.name, o))
    for path in sorted(DATA.glob("ifaces-*.txt")):
        for link in ifaces.parse(path.read_text()).links.values():
            for sub, o in sorted(link.ethtool.items()):
                if o.mode == "text" and o.rc == 0:
                    found.append((f"{path.name}:{link.name}:{sub}", o))
    return found


GROUP = {v: k for k, v in ethtool.SHOW.items()}


def python_state(group: str, o: ethtool.Output) -> dict[str, str]:
    """What the plan holds as the current state of every key the parsers find (the keys a
    step can carry: limits the hardware has, coalescing values that are not n/a)."""
    if group in ("channels", "rings"):
        keys = ethtool.CHANNEL_KEYS if group == "channels" else ethtool.RING_KEYS
        lim = ethtool.limits(o, keys)
        return {k: str(lim.current[k]) for k in keys if lim.maximum[k]}
    if group == "coalesce":
        return {k: v for k, v in ethtool.coalesce(o).items() if v is not None}
    feats = ethtool.features(o)
    short = {v: k for k, v in ethtool.FEATURE_ALIASES.items()}
    return {short.get(k, k): "on" if f.active else "off" for k, f in feats.items()}


def awk_state(group: str, o: ethtool.Output, keys: list[str], tmp_path: Path) -> str:
    fake = tmp_path / "bin" / "ethtool"
    fake.parent.mkdir(exist_ok=True)
    (tmp_path / "out.txt").write_text(o.text)
    fake.write_text(f"#!/bin/sh\ncat {tmp_path / 'out.txt'}\n")
    fake.chmod(0o755)
    r = run_sh(ethtool.read_sh(group, "eth0", keys), env={"PATH": f"{fake.parent}:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("name,o", recordings(), ids=[n for n, _ in recordings()])
def test_awk_readers_equal_the_python_parsers(name, o, tmp_path):
    group = GROUP[o.sub]
    want = python_state(group, o)
    assert want, f"{name}: nothing parsed"
    assert awk_state(group, o, list(want), tmp_path) == ethtool.state(want)


@pytest.mark.parametrize("stem", ["host-virtio_net-eth0-k", "veth-eth1-k"])
def test_awk_reader_of_the_text_equals_the_json_parser(stem, tmp_path):
    """The facts may come as --json, the reader always parses text: the same device's two
    outputs must give the same state."""
    text = ethtool.Output("k", "text", 0, (ET / f"{stem}.txt").read_text())
    as_json = python_state("offloads", ethtool.Output("k", "json", 0,
                                                       (ET / f"{stem}.json").read_text()))
    assert as_json == python_state("offloads", text)
    assert awk_state("offloads", text, list(as_json), tmp_path) == ethtool.state(as_json)


# --------------------------------------------------------------------------- fact script


def test_snippet_outputs_arrive_byte_exact_in_the_one_blob(tmp_path):
    """Files and snippets share one base64 blob, split by byte counts: what a snippet
    prints (tabs, CR, UTF-8, lines that look like records) reaches its parser unchanged but
    for trailing newlines, and a file's bytes exactly."""
    odd = "a\tb\r\n@@NF\tsize\t/x\t99\t\n\u00e9t\u00e9 \u2014 \\n $(id)\n\n"
    f = tmp_path / "f.conf"
    f.write_bytes(b"\x00\xffbin\r\n")
    needs = Needs(files={str(f)}, scripts={"odd": f"printf '%s' {shlex.quote(odd)}",
                                           "empty": "true", "two": "echo 1; echo 2"})
    out = subprocess.run(["sh", "-s"], input=build_script(needs).encode(),
                         capture_output=True).stdout.decode()
    facts = parse("h", out)
    assert facts.scripts == {"odd": odd.rstrip("\n"), "empty": "", "two": "1\n2"}
    assert facts.files[str(f)] == b"\x00\xffbin\r\n"


def test_a_torn_blob_is_an_error_not_wrong_facts():
    needs = Needs(scripts={"x": "echo hello"})
    out = subprocess.run(["sh", "-s"], input=build_script(needs), capture_output=True,
                         text=True).stdout.replace("\tssize\tx\t5\t", "\tssize\tx\t4\t")
    with pytest.raises(ValueError, match="changed while"):
        parse("h", out)


def test_fact_script_output_leaves_in_one_write():
    """The node's records leave in one write (sshd made an SSH packet of each printf, and
    decrypting them was the controller's CPU at 100 hosts)."""
    if not shutil.which("strace"):
        pytest.skip("strace not installed (scripts/setup.sh installs it)")
    script = build_script(Needs(paths={"/proc/sys/kernel/ostype", "/proc/sys/kernel/osrelease"},
                                scripts={"a": "echo a", "b": "echo b"}))
    r = subprocess.run(["strace", "-qq", "-e", "trace=write", "-e", "signal=none", "sh", "-s"],
                       input=script, capture_output=True, text=True)
    writes = [line for line in r.stderr.splitlines() if line.startswith("write(1,")]
    assert "@@NF\ttool" in r.stdout and len(writes) == 1, writes


def test_plan_fact_script_processes(tmp_path):
    """What the public-vds fact script starts, by program, in a network namespace of this
    machine: sh, the values' grep, the /proc scan's grep, stat, cat and base64 of the files
    and snippets, the procps version where procps boots the node, and two readlinks
    per symlinked sysctl.d file (is it masked; where does it point). Each process is most
    of a node's CPU cost (with 100 lab nodes on a 2-CPU controller, wall time). (13
    before 2026-12-01: a base64 per snippet, both appliers' --version and seds; and a loop
    of reads over /proc per writer.)"""
    from execs import run_counted  # tests/unit/execs.py: pytest puts tests/unit on sys.path

    from netfix import engine
    from netfix.profile import load_profile

    p, ran = run_counted(["sh", "-s"], tmp_path / "trace", netns=True,
                         input=build_script(engine.needs_for(load_profile("public-vds"))))
    facts = parse("h", p.stdout)
    boot = facts.scripts["sysctl-boot"]
    assert facts.uid == 0 and "PID1" in boot, p.stderr
    want = {"sh": 1, "grep": 2, "stat": 1, "cat": 1, "base64": 1,
            "sysctl": int("PROCPS_VERSION" in boot), "readlink": 2 * boot.count("\nLINK ")}
    assert ran == {k: n for k, n in want.items() if n}, ran


def test_ifaces_snippet_processes_and_facts(tmp_path):
    """ifaces.sh in a network namespace with a multipath IPv4 default route (two veths), an
    IPv6 default, and a default in another table: two `ip` processes (were five: route get,
    -j -d link, -j addr and one route show per family), and the facts the knobs read: link
    kinds and integer attributes from `ip -j -d addr`, the addresses, every device of the
    multipath route but not the other table's, the SSH session's interface."""
    from execs import run_counted  # tests/unit/execs.py: pytest puts tests/unit on sys.path

    if shutil.which("ip") is None or not Path("/run").is_dir():
        pytest.skip("needs iproute2")
    ns = f"nfcache-if-{Path(tmp_path).name[-12:]}"
    setup = ["link add va type veth peer name vb", "link add vc type veth peer name vd",
             *(f"link set {i} up" for i in ("lo", "va", "vb", "vc", "vd")),
             "addr add 10.9.0.1/24 dev va", "addr add 10.9.1.1/24 dev vc",
             "-6 addr add fd09::1/64 dev va nodad",
             "route add default nexthop via 10.9.0.2 dev va nexthop via 10.9.1.2 dev vc",
             "route add default via 10.9.0.3 dev vb onlink table 100",
             "-6 route add default via fd09::2 dev va"]
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode:
        pytest.skip("needs root (ip netns add)")
    try:
        for cmd in setup:
            subprocess.run(["ip", "-n", ns, *cmd.split()], check=True, capture_output=True)
        snippet = ifaces.needs({"interfaces": [{"match": {"default_route": True},
                                                "offloads": {"gro": "on"}}]}).scripts["ifaces"]
        ssh = "SSH_CONNECTION=10.9.1.5 5 10.9.1.1 22"
        p, ran = run_counted(["ip", "netns", "exec", ns, "env", ssh, "sh", "-c", snippet],
                             tmp_path / "trace")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    net = ifaces.parse(p.stdout)
    assert ran.get("ip") == 1 + 2, ran  # `ip netns exec` itself, then the snippet's two
    assert net.default_devs == ["va", "vc"] and net.mgmt == {"vc"}, p.stdout
    va = net.links["va"]
    assert va.kind == "veth" and va.attrs["mtu"] == 1500 and va.attrs["max_mtu"] > 1500
    assert ("inet", "10.9.0.1") in va.addrs and ("inet6", "fd09::1") in va.addrs
    assert {link.name for link in net.candidates} == {"va", "vc"}


def test_a_writer_that_set_a_value_is_in_the_same_facts_proc_scan(tmp_path):
    """A writer that sets a value just before netfix reads it must be among the processes
    the same fact script finds (the agent names a conflict's writer from them). The value is
    a FIFO, so the script's read of the values blocks until the test, having started the
    writer `nfwriter`, writes it. When the /proc scan came before the values' read, a
    writer started in between (a kube-proxy restart under TCG) was missed."""
    import os

    fifo = tmp_path / "value"
    os.mkfifo(fifo)
    writer_bin = tmp_path / "nfwriter"
    writer_bin.write_bytes(Path(shutil.which("sleep")).read_bytes())
    writer_bin.chmod(0o755)
    needs = Needs(paths={str(fifo)}, procs={"nfwriter"},
                  scripts={"pids": 'nf_pids nfwriter; echo "${NF_PIDS# }"'})
    script = tmp_path / "facts.sh"
    script.write_text(build_script(needs))
    node = subprocess.Popen(["sh", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    writer = None
    try:
        with open(fifo, "w") as value:  # opens once the script reads the values
            writer = subprocess.Popen([str(writer_bin), "30"])
            value.write("5\n")
        out, err = node.communicate(timeout=30)
    finally:
        node.kill()
        if writer:
            writer.kill()
    facts = parse("h", out)
    assert facts.value(str(fifo)).value == "5", err
    assert facts.scripts["pids"] == f"/proc/{writer.pid}", (facts.scripts, err)
