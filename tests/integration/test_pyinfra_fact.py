"""netfix's fact script driven by pyinfra's own API against a real lab node."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SCRIPT = r"""
from gevent import monkey
monkey.patch_all()  # pyinfra's API needs it; only its CLI does it by itself
import json, sys
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.facts import get_facts
from netfix.pyinfra_fact import NetfixFacts, plan_from_facts

addr, key, known = sys.argv[1:4]
inv = Inventory(([(addr, {"ssh_user": "root", "ssh_key": key, "ssh_known_hosts_file": known,
                          "ssh_strict_host_key_checking": "yes"})], {}))
state = State(inv, Config())
connect_all(state)
facts = get_facts(state, NetfixFacts, kwargs={"profile": "public-vds"})
(host, f), = facts.items()
plan = plan_from_facts(host.name, "public-vds", f)
print(json.dumps({"hostname": f.hostname, "changes": {c.target: c.action for c in plan.changes}}))
"""


def test_netfix_facts_through_pyinfra(lab):
    node = lab.nodes["node1"]
    p = subprocess.run([sys.executable, "-c", SCRIPT, node.address, str(lab.dir / "id_ed25519"),
                        str(lab.dir / "known_hosts")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["hostname"] == "node1"
    # same answer as netfix's own plan of the same node
    own = lab.plan_json("--profile", "public-vds", "--limit", "node1")["hosts"][0]["changes"]
    assert out["changes"] == {c["target"]: c["action"] for c in own}
    assert out["changes"]["net.ipv4.tcp_synack_retries"] == "update"
