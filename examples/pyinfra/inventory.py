"""A pyinfra inventory that netfix reads too: `netfix plan -i inventory.py --limit web`.

Written for the three nodes of `netfix lab up --nodes 3` (10.251.0.11-13, key and
known_hosts in the lab dir, $NETFIX_LAB_DIR, default /run/netfix-lab): put your own hosts
here. Groups are module-level lists or (hosts, data) tuples; host data is a dict next to
the host name. README "With pyinfra" shows this file below its docstring, verbatim.
"""

import os

_lab = os.environ.get("NETFIX_LAB_DIR", "/run/netfix-lab")

web = (
    [("node1", {"ssh_hostname": "10.251.0.11"}), ("node2", {"ssh_hostname": "10.251.0.12"})],
    {"netfix_profile": "public-vds"},
)
db = ([("node3", {"ssh_hostname": "10.251.0.13"})], {"netfix_profile": "public-vds"})
# Data for every host: pyinfra's ssh connector and netfix's ssh path read the same keys.
all = (
    ["node1", "node2", "node3"],
    {"ssh_user": "root", "ssh_key": f"{_lab}/id_ed25519",
     "ssh_known_hosts_file": f"{_lab}/known_hosts", "ssh_strict_host_key_checking": "yes"},
)
