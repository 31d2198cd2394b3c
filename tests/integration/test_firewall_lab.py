"""NodePort firewall, SYN-flood settings and commit-confirmed apply on real lab nodes:
real packets between lab namespaces, real nft, real sshd. Every test leaves its nodes as
it found them (rollback through netfix, listeners killed, stand-in tables deleted)."""

from __future__ import annotations

import json
import socket
import textwrap
import time

import pytest
import yaml

pytestmark = pytest.mark.integration

NODE1 = "10.251.0.11"
FW_DIRS = ("/etc/netfix", "/etc/systemd/system", "/etc/sysctl.d")
TABLE = "table inet netfix"
KUBE_PROXY = """table ip kube-proxy {
  chain nat-prerouting {
    type nat hook prerouting priority -100; policy accept;
    tcp dport 31000 dnat to 10.251.0.11:8080
  }
}
"""


def write(path, text: str):
    path.write_text(textwrap.dedent(text))
    return str(path)


def fw_profile(tmp_path, allow: list[str], extra: str = "", name: str = "fw.yaml") -> str:
    return write(tmp_path / name, f"""\
        description: NodePorts reachable from node2 only
        firewall:
          nodeports:
            allow: {json.dumps(allow)}
            log: {{rate: "5/minute"}}
            {extra}
        """)


def connects(lab, node: str, port: int, timeout: float = 1.5) -> bool:
    """A real TCP handshake from inside `node` to node1 (False: dropped, timed out)."""
    code = (f"import socket; socket.create_connection(({NODE1!r}, {port}), "
            f"timeout={timeout}).close()")
    return lab._labmod.node_exec(node, ["python3", "-c", code], check=False).returncode == 0


def listen(lab, node: str, port: int) -> str:
    """A TCP listener inside `node` (all addresses), detached; returns its pid there."""
    code = ("import socket; s = socket.socket(); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            f"s.bind(('0.0.0.0', {port})); s.listen(64)\n"
            "while True: s.accept()[0].close()")
    pid = lab.sh(node, f"setsid python3 -c \"{code}\" </dev/null >/dev/null 2>&1 & echo $!")
    for _ in range(100):
        if f":{port} " in lab.sh(node, "ss -Hltn"):
            return pid.strip()
        time.sleep(0.05)
    raise AssertionError(f"listener on {node}:{port} did not start")


def tables(lab, node: str) -> list[str]:
    return lab.sh(node, "nft list tables").splitlines()


def history(lab, node: str, inv: str | None = None) -> list[dict]:
    args = ["history", "--limit", node, "--json"] + (["-i", inv] if inv else [])
    return json.loads(lab.netfix(*args).stdout)[node]


def by_target(plan: dict, host: str) -> dict:
    hp = next(h for h in plan["hosts"] if h["host"] == host)
    assert hp["error"] is None, hp["error"]
    return {c["target"]: c for c in hp["changes"]}


def rollback_all(lab, node: str, inv: str | None = None) -> None:
    """Best effort for a test that failed half-way: undo every applied transaction."""
    for _ in range(5):
        args = ["rollback", "--yes", "--limit", node] + (["-i", inv] if inv else [])
        if lab.netfix(*args, check_rc=None).returncode != 0:
            return


def test_nodeports_filtered_by_source_beside_kube_proxy(lab, tmp_path):
    prof = fw_profile(tmp_path, ["10.251.0.12/32", "2001:db8::/32"],
                      "extra_ports: [{port: 10250, proto: tcp}]")
    lab.sh("node1", f"printf '%s' '{KUBE_PROXY}' | nft -f -")
    pids = [listen(lab, "node1", p) for p in (30080, 8080)]
    before_files = lab.files("node1", FW_DIRS)
    kube_before = lab.sh("node1", "nft list table ip kube-proxy")
    try:
        # Without netfix everyone gets through: what follows is the firewall's doing.
        assert connects(lab, "node3", 30080) and connects(lab, "node3", 31000)

        ch = by_target(lab.plan_json("--profile", prof, "--limit", "node1"), "node1")
        table = ch[TABLE]
        assert table["action"] == "update" and table["current"] == "absent"
        notes = " ".join(table["notes"])
        assert "+chain guard {" in notes and "+fib daddr type != local return" in notes
        assert "+tcp dport 30000-32767 jump deny" in notes
        for path in ("/etc/netfix/firewall.nft", "/etc/systemd/system/netfix-firewall.service",
                     "/etc/systemd/system/sysinit.target.d/netfix-firewall.conf"):
            assert ch[path]["action"] == "update", ch[path]

        lab.netfix("apply", "--yes", "--profile", prof, "--limit", "node1")
        live = lab.sh("node1", f"nft list {TABLE}")
        assert "hook prerouting priority mangle" in live and "fib daddr type != local" in live
        assert connects(lab, "node2", 30080)  # in the allow-list
        assert not connects(lab, "node3", 30080)  # outside it: dropped, the handshake times out
        assert connects(lab, "node3", 8080)  # outside the NodePort range: untouched
        # kube-proxy's DNAT (-100) comes after netfix's drop (-150): the packet never gets
        # there from node3, and is still DNATed for node2.
        assert not connects(lab, "node3", 31000)
        assert connects(lab, "node2", 31000)
        assert lab.sh("node1", "nft list table ip kube-proxy") == kube_before
        assert any(line.startswith("table ip kube-proxy") for line in tables(lab, "node1"))

        # Persistence: the boot unit's own command brings the same table back.
        unit = lab.sh("node1", "cat /etc/systemd/system/netfix-firewall.service")
        assert "Before=network-pre.target" in unit and "After=nftables.service" in unit
        exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
        lab.sh("node1", f"nft delete {TABLE}")
        lab.sh("node1", exec_start.removeprefix("ExecStart="))
        assert lab.sh("node1", f"nft list {TABLE}") == live
        assert "Wants=netfix-firewall.service" in lab.sh(
            "node1", "cat /etc/systemd/system/sysinit.target.d/netfix-firewall.conf")

        again = by_target(lab.plan_json("--profile", prof, "--limit", "node1"), "node1")
        assert [t for t, c in again.items() if c["action"] != "ok"] == []

        lab.netfix("rollback", "--yes", "--limit", "node1")
        assert TABLE not in tables(lab, "node1")
        assert lab.sh("node1", "nft list table ip kube-proxy") == kube_before
        assert lab.files("node1", FW_DIRS) == before_files
        assert connects(lab, "node3", 30080)
    finally:
        if TABLE in tables(lab, "node1"):
            rollback_all(lab, "node1")
        lab.sh("node1", f"kill {' '.join(pids)}; nft delete table ip kube-proxy", check=False)


def test_rollback_restores_the_previous_table_exactly(lab, tmp_path):
    first = fw_profile(tmp_path, ["10.251.0.12/32"], name="first.yaml")
    second = fw_profile(tmp_path, ["10.251.0.12/32", "10.251.0.13/32"],
                        "interfaces: {include: [\"eth*\"], exclude: []}", name="second.yaml")
    pid = listen(lab, "node1", 30081)
    try:
        lab.netfix("apply", "--yes", "--profile", first, "--limit", "node1")
        v1 = lab.sh("node1", f"nft list {TABLE}")
        assert not connects(lab, "node3", 30081)

        table = by_target(lab.plan_json("--profile", second, "--limit", "node1"), "node1")[TABLE]
        notes = " ".join(table["notes"])
        assert "-elements = { 10.251.0.12 }" in notes
        assert "+elements = { 10.251.0.12/31 }" in notes  # adjacent /32s collapsed
        assert '+iifname "eth*" goto guard' in notes
        lab.netfix("apply", "--yes", "--profile", second, "--limit", "node1")
        assert connects(lab, "node3", 30081)

        # back to the first table, byte for byte
        lab.netfix("rollback", "--yes", "--limit", "node1")
        assert lab.sh("node1", f"nft list {TABLE}") == v1
        assert not connects(lab, "node3", 30081)
        lab.netfix("rollback", "--yes", "--limit", "node1")
        assert TABLE not in tables(lab, "node1")
    finally:
        if TABLE in tables(lab, "node1"):
            rollback_all(lab, "node1")
        lab.sh("node1", f"kill {pid}", check=False)


def test_node_without_usable_nft_is_reported(lab, tmp_path):
    prof = fw_profile(tmp_path, ["10.0.0.0/8"])
    before = lab.files("node2", FW_DIRS)
    lab.sh("node2", "mount --bind /bin/false /usr/sbin/nft")
    try:
        ch = by_target(lab.plan_json("--profile", prof, "--limit", "node2"), "node2")
        assert ch[TABLE]["action"] == "skip" and "not-settable" in ch[TABLE]["flags"]
        assert "nft not usable" in " ".join(ch[TABLE]["notes"])
        assert len(ch) == 1  # no persistence files planned for a table that cannot load
        p = lab.netfix("apply", "--yes", "--profile", prof, "--limit", "node2", "--json")
        assert json.loads(p.stdout)[0]["status"] == "no-changes"
        assert lab.files("node2", FW_DIRS) == before
        # node1 has a working nft: the same profile plans a table there
        ch1 = by_target(lab.plan_json("--profile", prof, "--limit", "node1"), "node1")
        assert ch1[TABLE]["action"] == "update"
    finally:
        lab.sh("node2", "umount /usr/sbin/nft", check=False)
    assert "nftables" in lab.sh("node2", "nft --version")


@pytest.mark.parametrize("body, field, words", [
    ('firewall: {nodeports: {allow: ["10.0.0.0/33"]}}', "firewall.nodeports.allow[0]",
     "not a valid CIDR"),
    ('firewall: {nodeports: {allow: ["10.0.0.1/8"]}}', "firewall.nodeports.allow[0]",
     "host bits set"),
    ('firewall: {nodeports: {range: "32767-30000"}}', "firewall.nodeports.range",
     "not a port range"),
    ('firewall: {nodeports: {range: "30000-70000"}}', "firewall.nodeports.range",
     "not a port range"),
])
def test_bad_cidr_or_range_is_refused_before_any_node_is_touched(lab, tmp_path, body, field,
                                                                 words):
    prof = tmp_path / "bad.yaml"
    prof.write_text(f"description: bad\n{body}\n")
    p = lab.netfix("plan", "--profile", str(prof), "--limit", "node1", check_rc=1)
    assert f"bad.yaml:2: {field}: " in p.stderr and words in p.stderr


def test_syn_flood_section_applies_persists_and_rolls_back(lab, tmp_path):
    keys = ["net.ipv4.tcp_syncookies", "net.ipv4.tcp_max_syn_backlog", "net.core.somaxconn",
            "net.ipv4.tcp_synack_retries"]
    original = lab.sysctl("node3", "net.ipv4.tcp_syncookies")
    lab.sh("node3", "sysctl -qw net.ipv4.tcp_syncookies=0")  # so that there is one to change
    before = {k: lab.sysctl("node3", k) for k in keys}
    before_files = lab.files("node3", ("/etc/sysctl.d",))
    prof = write(tmp_path / "syn.yaml", """\
        syn_flood: {syncookies: 1, max_syn_backlog: 8192, somaxconn: ">=8192", synack_retries: 2}
        """)
    try:
        ch = by_target(lab.plan_json("--profile", prof, "--limit", "node3"), "node3")
        assert ch["net.ipv4.tcp_syncookies"]["desired"] == "1"
        assert "SYN cookie" in ch["net.ipv4.tcp_syncookies"]["notes"][0]
        assert "half-open" in ch["net.ipv4.tcp_max_syn_backlog"]["notes"][0]
        lab.netfix("apply", "--yes", "--profile", prof, "--limit", "node3")
        assert lab.sysctl("node3", "net.ipv4.tcp_syncookies") == "1"
        assert lab.sysctl("node3", "net.ipv4.tcp_max_syn_backlog") == "8192"
        assert int(lab.sysctl("node3", "net.core.somaxconn")) >= 8192
        assert lab.sysctl("node3", "net.ipv4.tcp_synack_retries") == "2"
        conf = lab.sh("node3", "cat /etc/sysctl.d/90-netfix-synflood.conf")
        assert "net.ipv4.tcp_synack_retries = 2" in conf and "# SYN flood:" in conf
        lab.netfix("rollback", "--yes", "--limit", "node3")
        assert {k: lab.sysctl("node3", k) for k in keys} == before
        assert lab.files("node3", ("/etc/sysctl.d",)) == before_files
    finally:
        if lab.sysctl("node3", "net.ipv4.tcp_syncookies") != "0":
            rollback_all(lab, "node3")
        lab.sh("node3", f"sysctl -qw net.ipv4.tcp_syncookies={original}")


# ---------------------------------------------------------------------------- --confirm


def revert_files(lab, node: str, tx: str) -> list[str]:
    out = lab.sh(node, f"ls /var/lib/netfix/tx/ | grep -F {tx}.revert || true")
    return sorted(out.split())


def tcp_open(addr: str, port: int, timeout: float) -> bool:
    try:
        socket.create_connection((addr, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def test_confirm_window_reverts_a_change_that_cut_the_controller_off(lab, tmp_path):
    window = 8
    # SSH (22) reachable from node2 only: the controller (10.251.0.1) is locked out.
    prof = fw_profile(tmp_path, ["10.251.0.12/32"], "extra_ports: [{port: 22, proto: tcp}]")
    data = yaml.safe_load(lab.inventory.read_text())
    data["hosts"]["node1"]["connect_timeout"] = 2
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data))
    before = lab.files("node1", FW_DIRS)
    start = time.monotonic()
    try:
        p = lab.netfix("apply", "--yes", "-i", str(inv), "--profile", prof, "--limit", "node1",
                       "--confirm", str(window), "--json", check_rc=1)
        result = json.loads(p.stdout)[0]
        tx = result["tx"]
        # apply's own reconnect over a new SSH connection failed (or only got through once
        # the node had reverted by itself)
        assert result["status"] in ("unreachable", "reverted"), result
        if time.monotonic() - start < window - 2:
            assert not tcp_open(NODE1, 22, timeout=1), "SSH should be blocked in the window"
            assert TABLE in tables(lab, "node1")
        deadline = start + window + 20
        while TABLE in tables(lab, "node1") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert TABLE not in tables(lab, "node1"), "the node did not revert by itself"
        assert time.monotonic() - start >= window - 1  # not before the window ran out

        assert tcp_open(NODE1, 22, timeout=3)  # SSH is back
        hist = history(lab, "node1")
        applied = next(t for t in hist if t["id"] == tx)
        assert applied["status"].startswith("reverted-unconfirmed"), applied
        revert = next(t for t in hist if t.get("rolls_back") == tx)
        assert revert["kind"] == "revert" and revert["status"].startswith("applied")
        assert applied["status"].split()[1] == revert["id"]
        assert revert_files(lab, "node1", tx) == [f"{tx}.revert.log"]  # nothing armed left
        assert lab.files("node1", FW_DIRS) == before

        c = lab.netfix("confirm", "--limit", "node1", "--json", check_rc=1)
        assert json.loads(c.stdout)[0]["status"] == "reverted"
        r = lab.netfix("rollback", "--yes", "--limit", "node1", "--tx", tx, check_rc=1)
        assert "already reverted-unconfirmed" in r.stdout
    finally:
        deadline = start + window + 30
        while TABLE in tables(lab, "node1") and time.monotonic() < deadline:
            time.sleep(0.5)


def sleeper_alive(lab, node: str, tx: str) -> bool:
    pid = lab.sh(node, f"cat /var/lib/netfix/tx/{tx}.revert.pid 2>/dev/null || true").strip()
    return bool(pid) and lab.sh(node, f"kill -0 {pid} 2>/dev/null && echo yes || true") == "yes\n"


def test_confirm_disarms_the_revert(lab, tmp_path):
    window = 4
    prof = fw_profile(tmp_path, ["10.251.0.11/32"])
    before = lab.files("node2", FW_DIRS)
    try:
        p = lab.netfix("apply", "--yes", "--profile", prof, "--limit", "node2", "--confirm",
                       str(window),
                       "--json")
        result = json.loads(p.stdout)[0]
        tx = result["tx"]
        assert result["status"] == "applied-unconfirmed" and "netfix confirm" in result["message"]
        assert history(lab, "node2")[-1]["status"].startswith("applied-unconfirmed")
        assert sleeper_alive(lab, "node2", tx)
        drift = lab.netfix("drift", "--profile", prof, "--limit", "node2", "--json", check_rc=2)
        assert "unconfirmed" in [i["kind"] for i in json.loads(drift.stdout)["hosts"][0]["items"]]

        c = lab.netfix("confirm", "--limit", "node2", "--json")
        assert json.loads(c.stdout)[0]["status"] == "confirmed"
        assert revert_files(lab, "node2", tx) == []  # script, pid file and sleeper gone
        time.sleep(window + 1.5)
        assert TABLE in tables(lab, "node2")  # still there after the window
        assert history(lab, "node2")[-1]["status"].startswith("applied confirmed")
        again = lab.netfix("confirm", "--limit", "node2", "--json")
        assert json.loads(again.stdout)[0]["status"] == "nothing-to-confirm"

        lab.netfix("rollback", "--yes", "--limit", "node2")
        assert TABLE not in tables(lab, "node2")
        assert lab.files("node2", FW_DIRS) == before
    finally:
        if TABLE in tables(lab, "node2"):
            rollback_all(lab, "node2")


def test_auto_confirm_and_rollback_of_an_unconfirmed_transaction(lab, tmp_path):
    prof = fw_profile(tmp_path, ["10.251.0.11/32"])
    before = lab.files("node3", FW_DIRS)
    try:
        p = lab.netfix("apply", "--yes", "--profile", prof, "--limit", "node3", "--confirm", "60",
                       "--auto-confirm", "--json")
        result = json.loads(p.stdout)[0]
        assert result["status"] == "confirmed", result
        assert revert_files(lab, "node3", result["tx"]) == []
        lab.netfix("rollback", "--yes", "--limit", "node3")
        assert TABLE not in tables(lab, "node3")

        # Rolled back while still unconfirmed: the rollback disarms the pending revert, so
        # it can never fire later over whatever the node holds by then.
        p = lab.netfix("apply", "--yes", "--profile", prof, "--limit", "node3", "--confirm", "60",
                       "--json")
        tx = json.loads(p.stdout)[0]["tx"]
        assert sleeper_alive(lab, "node3", tx)
        pid = lab.sh("node3", f"cat /var/lib/netfix/tx/{tx}.revert.pid").strip()
        lab.netfix("rollback", "--yes", "--limit", "node3")
        assert TABLE not in tables(lab, "node3")
        assert revert_files(lab, "node3", tx) == []
        assert lab.sh("node3", f"kill -0 {pid} 2>/dev/null && echo alive || true") == ""
        assert next(t for t in history(lab, "node3") if t["id"] == tx)["status"].startswith(
            "rolled-back")
        assert lab.files("node3", FW_DIRS) == before
    finally:
        if TABLE in tables(lab, "node3"):
            rollback_all(lab, "node3")


# ------------------------------------------------------------- the render cache (issue 17)


def test_second_plan_skips_the_render_and_plans_the_same(lab, tmp_path, monkeypatch):
    """Invariant: a plan made from the cached render is the plan a fresh render gives. The
    first plan of a node renders in a throwaway netns and the controller keeps the result;
    the second sends it back with its key and the node prints it back (RENDER-CACHED)
    without an unshare. A changed key (another kernel release in the entry) renders again,
    and a ruleset this nft refuses is still refused with a cache for another key."""
    from netfix import engine, rendercache
    from netfix.inventory import load_inventory
    from netfix.knobs import firewall
    from netfix.plan import SKIP
    from netfix.profile import load_profile

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    prof = load_profile(fw_profile(tmp_path, ["10.251.0.12/32"]))
    host = load_inventory(str(lab.inventory)).select("node1")[0]
    first, f1 = engine.diff_host(host, prof)
    assert "\nRENDER " in "\n" + f1.scripts[firewall.PROBE], f1.scripts[firewall.PROBE]
    entries = list((tmp_path / "cache" / "netfix" / "renders").iterdir())
    assert len(entries) == 1
    second, f2 = engine.diff_host(host, prof)
    assert "RENDER-CACHED " in f2.scripts[firewall.PROBE]
    assert second.changes == first.changes and second.fingerprint == first.fingerprint
    # and through the CLI, in another process, from the same cache: the same plan
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    cli = json.loads(lab.netfix("plan", "--json", "--profile", prof.path, "--limit", "node1",
                                check_rc=None, env=env).stdout)
    assert by_target(cli, "node1")[TABLE]["desired"] == by_target(
        json.loads(lab.netfix("plan", "--json", "--profile", prof.path, "--limit", "node1",
                              check_rc=None, env={"NETFIX_RENDER_CACHE": "off"}).stdout),
        "node1")[TABLE]["desired"]

    # another kernel in the entry: the node renders again and the entry is replaced
    data = json.loads(entries[0].read_text())
    entries[0].write_text(json.dumps({**data, "kernel": "0.0.0-not-this-one"}))
    third, f3 = engine.diff_host(host, prof)
    assert "\nRENDER " in "\n" + f3.scripts[firewall.PROBE] and third.changes == first.changes
    assert json.loads(entries[0].read_text())["kernel"] == data["kernel"]

    # a rule this nft refuses: refused in every plan, the cached render of another ruleset
    # notwithstanding (errors are never stored)
    monkeypatch.setattr(firewall, "ruleset", lambda s, _r=firewall.ruleset: _r(s).replace(
        "fib daddr type != local", "fib daddr type != nonsense"))
    for _ in range(2):
        hp, _f = engine.diff_host(host, prof)
        table = next(c for c in hp.changes if c.target == TABLE)
        assert table.action == SKIP and "refused the ruleset" in " ".join(table.notes)
    assert len(list((tmp_path / "cache" / "netfix" / "renders").iterdir())) == 1
    assert rendercache.valid_listing(json.loads(entries[0].read_text())["listing"])
