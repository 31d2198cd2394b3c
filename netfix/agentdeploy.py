"""Putting the agent on nodes: `netfix agent install` / `uninstall` (systemd) and
`netfix agent manifests` (the Kubernetes DaemonSet rendered without kustomize).

How the code reaches a node: the node's own distribution python3 runs a bundle built on
the controller from the controller's installed distributions (netfix and the closure of its
requirements, read with importlib.metadata: no PyPI, no pip, no network besides the SSH
session). Every file of it, the agent's profile and the unit are file steps of ONE journaled
transaction, followed by one cmd step that enables and starts the unit; `uninstall` is the
rollback of that transaction, so it restores every file byte for byte and removes the
directories the install created. A compiled dependency (rpds-py for jsonschema) only loads
on the CPython minor version and platform it was built for: the node's python3 is asked for
the extension suffixes it imports, and a bundle it cannot load is refused before anything
changes.
"""

from __future__ import annotations

import base64
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from netfix.errors import InputError, NetfixError

if TYPE_CHECKING:  # imported by every netfix run (agentcli.py): the rest loads lazily
    import importlib.metadata as md

CODE_DIR = "/opt/netfix"  # the bundle: lib/ (import path) and run.py (the entry point)
LIB_DIR = f"{CODE_DIR}/lib"
RUNNER = f"{CODE_DIR}/run.py"
PROFILE_DIR = "/etc/netfix/agent"  # the agent's profile, merged (no extends left to find)
UNIT = "netfix-agent.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
KNOB = "agent-install"  # Step.knob of every step of an install transaction
SERVICE_STEP = f"systemd:{UNIT}"

# Distributions left out of the bundle, and why: the agent never needs them on its node.
LEFT_OUT = {
    "paramiko": "SSH to other nodes: the agent's own node is @local",
    "pyinfra": "the pyinfra connector, a controller's choice",
    # rich draws the tables (kept: a person on the node gets the whole CLI); it imports
    # these two only for syntax highlighting and Markdown, which netfix never asks for.
    "pygments": "rich's syntax highlighting (700 files)",
    "markdown-it-py": "rich's Markdown rendering",
}
SKIP_DIRS = frozenset({"__pycache__", "tests", "benchmarks"})
# Optional accelerators whose package falls back to pure Python without them: PyYAML's
# libyaml binding (2.5 MB; `yaml` imports without it).
SKIP_FILES = re.compile(r"^(yaml/_yaml\.[^/]*\.so|_yaml/.*)$")

# Every path the agent writes besides /proc/sys and /sys (see the knobs): the unit's
# ReadWritePaths. "-": may be absent on this distribution (systemd then skips it instead of
# failing the start). A directory, not its files: netfix writes files atomically (a temp
# file in the same directory, then rename), so the directory itself must be writable.
WRITABLE = (
    "/var/lib/netfix",  # journal, lock, staged scripts (journal.STATE_DIR)
    "/etc/sysctl.d",  # sysctl persistence (knobs/sysctl, conntrack, rps, synflood)
    "/etc/modprobe.d",  # conntrack hash size at module load
    "/etc/modules-load.d",  # conntrack loaded at boot
    "/etc/netfix",  # nic.sh (NIC boot script), firewall.nft, profiles
    # netfix-nic.service, netfix-firewall.service, their sysinit.target.d drop-ins and the
    # enable symlinks `systemctl enable` makes for them
    "/etc/systemd/system",
    "-/etc/udev/rules.d",  # 90-netfix-nic.rules (re-apply NIC settings on link add)
    "-/etc/default",  # irqbalance's banned CPUs on Debian/Ubuntu
    "-/etc/sysconfig",  # ... and on RHEL-likes
    # `systemctl enable irqbalance` on Debian also runs update-rc.d for its SysV script,
    # which links it in the runlevel dirs (seen on the VM node: "Read-only file system").
    *(f"-/etc/rc{level}.d" for level in "0123456S"),
)

MODES = ("observe", "enforce")


@dataclass(frozen=True)
class BundleFile:
    path: str  # where it goes on the node
    data: bytes
    dist: str  # the distribution it comes from ("netfix-agent" for generated files)


@dataclass(frozen=True)
class AgentArgs:
    """What the unit's ExecStart passes to `netfix agent`."""

    profile: str  # the profile's file on the node
    mode: str = "enforce"
    interval: int = 60
    listen: str | None = None

    def argv(self) -> list[str]:
        out = ["agent", "--profile", self.profile, "--mode", self.mode,
               "--interval", str(self.interval)]
        return out + (["--listen", self.listen] if self.listen else [])


# --------------------------------------------------------------------------- the bundle


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = "netfix") -> list[md.Distribution]:
    """`root` and every distribution it requires (without extras, without LEFT_OUT and
    what only they need), as installed here. A requirement not installed was excluded
    by its marker on this controller (python_version...): the node gets what runs here."""
    import importlib.metadata as md

    found: dict[str, md.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if _key(name) in found or _key(name) in LEFT_OUT:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found[_key(name)] = dist
        for req in dist.requires or []:
            if re.search(r"\bextra\s*==", req):  # only with an extra netfix does not ask for
                continue
            m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
            if m:
                todo.append(m.group(0))
    return [found[k] for k in sorted(found)]


def _top_level(dist: md.Distribution) -> list[str]:
    """The import names a distribution provides. netfix itself is named outright: an
    editable install (this repository's .venv) records only a path hook."""
    import importlib.util

    if _key(dist.metadata["Name"]) == "netfix":
        return ["netfix"]
    names = (dist.read_text("top_level.txt") or "").split()
    if not names:  # no top_level.txt (newer build backends): the first path parts
        names = sorted({f.parts[0].removesuffix(".py") for f in dist.files or []
                        if f.parts and not f.parts[0].endswith((".dist-info", ".data", ".."))
                        and (len(f.parts) > 1 or f.parts[0].endswith(".py"))})
    return [n for n in names if importlib.util.find_spec(n) is not None]


def _package_files(name: str) -> Iterator[tuple[str, Path]]:
    """(path relative to the import dir, file) of one top-level package or module."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    assert spec is not None
    if not spec.submodule_search_locations:
        path = Path(spec.origin or "")
        yield path.name, path
        return
    top = Path(list(spec.submodule_search_locations)[0])
    for f in sorted(top.rglob("*")):
        rel = f.relative_to(top.parent)
        if (f.is_file() and not SKIP_DIRS & set(rel.parts) and f.suffix != ".pyc"
                and not SKIP_FILES.match(str(rel))):
            yield str(rel), f


def runner_text() -> bytes:
    """run.py: netfix's CLI with lib/ next to it first on the import path (python3 -I keeps
    everything else of the node's environment out)."""
    return (f'"""netfix, installed by `netfix agent install`: its code and the libraries it\n'
            f'needs are in {LIB_DIR}; nothing else on this node is imported (python3 -I)."""\n'
            "import os\nimport sys\n\n"
            "sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "
            "'lib'))\nfrom netfix.cli import main  # noqa: E402\n\nmain()\n").encode()


def bundle() -> list[BundleFile]:
    """Every file the node needs to run netfix, read from this controller's installation."""
    out: list[BundleFile] = []
    for dist in closure():
        name = dist.metadata["Name"]
        for top in _top_level(dist):
            out += [BundleFile(f"{LIB_DIR}/{rel}", f.read_bytes(), name)
                    for rel, f in _package_files(top)]
        meta = dist.read_text("METADATA")  # importlib.metadata.version() on the node
        if meta is not None:
            info = f"{name.replace('-', '_')}-{dist.version}.dist-info"
            out.append(BundleFile(f"{LIB_DIR}/{info}/METADATA", meta.encode(), name))
    out.append(BundleFile(RUNNER, runner_text(), "netfix-agent"))
    return out


def unloadable(files: list[BundleFile], suffixes: list[str]) -> list[str]:
    """The compiled files the node's python3 cannot import (`suffixes`: its
    importlib.machinery.EXTENSION_SUFFIXES, e.g. .cpython-311-x86_64-linux-gnu.so .abi3.so
    .so), as "file (distribution)". A module's suffix is all of its name after the first
    dot: rpds.cpython-311-x86_64-linux-gnu.so loads only where that whole suffix is listed."""
    out = []
    for f in files:
        name = f.path.rsplit("/", 1)[-1]
        if name.endswith(".so") and "." + name.split(".", 1)[1] not in suffixes:
            out.append(f"{name} ({f.dist})")
    return out


# --------------------------------------------------------------------------- the unit

# Read by `netfix agent install` before it changes anything: python3 and the extension
# suffixes it loads, and whether systemd is PID 1 (otherwise: the DaemonSet).
PROBE = (
    "command -v python3 >/dev/null 2>&1 || { echo nopython; exit 0; }; "
    "python3 -c 'import sys, importlib.machinery as m; "
    "print(\"python\", sys.executable, \"%d.%d\" % sys.version_info[:2], "
    "*m.EXTENSION_SUFFIXES)'; "
    "c=; read -r c < /proc/1/comm 2>/dev/null; echo \"pid1 $c\""
)
SERVICE_READ = f"[ \"$(systemctl is-enabled {UNIT} 2>/dev/null)\" = enabled ] && echo enabled || :"
SERVICE_SET = (f'if [ "$1" = enabled ]; then systemctl daemon-reload && '
               f"systemctl enable --now {UNIT}; else systemctl disable --now {UNIT} && "
               "systemctl daemon-reload; fi")


def unit_text(args: AgentArgs, python: str = "/usr/bin/python3", tx_note: str = "") -> str:
    """netfix-agent.service: hardened where that leaves netfix working (checked on the VM
    node: tests/integration/test_vm.py runs an apply and a rollback under these settings)."""
    exec_start = shlex.join([python, "-I", "-B", RUNNER, *args.argv()])
    writable = " ".join(WRITABLE)
    return f"""\
# Written by `netfix agent install`{tx_note}; removed by `netfix agent uninstall`.
[Unit]
Description=netfix agent: keeps this node on its network profile ({args.mode})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
# -I: nothing from the environment or the working directory is imported; -B: no .pyc is
# written ({CODE_DIR} is read-only here, and uninstall restores it byte for byte).
ExecStart={exec_start}
WorkingDirectory=/
Restart=on-failure
RestartSec=10s
# The whole file system read-only, except the directories netfix writes (see
# netfix/agentdeploy.py WRITABLE). /proc and /sys stay writable under strict.
ProtectSystem=strict
ReadWritePaths={writable}
# Off on purpose: ProtectKernelTunables=yes mounts /proc/sys and /sys read-only, and writing
# them (sysctls, conntrack hash size, RPS masks, txqueuelen) is the agent's job.
ProtectKernelTunables=no
# Off on purpose: the conntrack knob loads nf_conntrack (modprobe) for its sysctls to exist.
ProtectKernelModules=no
NoNewPrivileges=yes
# What root may still do: network configuration (ip, ethtool, nft, net sysctls), the other
# sysctls and tracefs (SYS_ADMIN), modprobe, kube-proxy's /proc/PID (PTRACE), the kernel
# log (doctor), and files whatever their owner and mode (DAC, FOWNER, CHOWN).
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_MODULE CAP_SYS_PTRACE CAP_SYSLOG \
CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_CHOWN
# Off on purpose (ProtectKernelLogs): the doctor reads the kernel log (drops, OOM kills).
ProtectHome=yes
PrivateTmp=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# Only network namespaces: the firewall's probe renders the desired table in a throwaway
# one (`unshare -n`); with none allowed no firewall profile could ever be planned.
RestrictNamespaces=net
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
# unix: systemctl; netlink: ip, ethtool, nft, link events; inet: the ethtool ioctls and
# the metrics listener.
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6

[Install]
WantedBy=multi-user.target
"""


# --------------------------------------------------------------------------- install


def agent_profile_file(name_or_path: str) -> tuple[str, bytes, str]:
    """(path on the node, content, profile name): the profile merged with its extends
    chain into one file, so the node needs none of the controller's profile files."""
    import yaml

    from netfix.profile import load_profile

    prof = load_profile(name_or_path)
    head = (f"# netfix agent profile {prof.name}: {', '.join(prof.files)} merged by "
            f"`netfix agent install` (sha256 {prof.sha256}). Edit the source and reinstall.\n")
    body = yaml.safe_dump(prof.data, sort_keys=False, default_flow_style=False)
    return f"{PROFILE_DIR}/{prof.name}.yaml", (head + body).encode(), prof.name


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


@dataclass
class NodePython:
    executable: str
    version: str
    suffixes: list[str]


def parse_probe(out: str) -> NodePython:
    """PROBE's output -> the node's python3, or a NetfixError saying what is missing."""
    lines = {ln.split(" ", 1)[0]: ln.split()[1:] for ln in out.splitlines() if ln.strip()}
    if "nopython" in lines or "python" not in lines or len(lines["python"]) < 3:
        raise NetfixError("no python3 on the node: the agent runs on the distribution's "
                          "python3 (apt-get install python3 / dnf install python3), or use "
                          "the DaemonSet (deploy/kubernetes)")
    if (lines.get("pid1") or [""])[0] != "systemd":
        raise NetfixError("systemd is not PID 1 on the node: `netfix agent install` needs "
                          "systemd; in a container use the DaemonSet (deploy/kubernetes)")
    exe, version, *suffixes = lines["python"]
    if tuple(int(p) for p in version.split(".")) < (3, 11):
        raise NetfixError(f"the node's python3 is {version}; netfix needs 3.11 or newer")
    return NodePython(exe, version, suffixes)


def install_host(host, profile: str, args: AgentArgs, files: list[BundleFile]):
    """One host: probe, refuse what cannot work, then one transaction (engine.run_tx)."""
    from netfix import engine, journal
    from netfix.engine import HostResult
    from netfix.facts import Needs
    from netfix.journal import Step, Tx
    from netfix.status import HostStatus

    def refuse(why: str) -> HostResult:
        return HostResult(host.name, HostStatus.ERROR, False, f"{why}; nothing was changed")

    try:
        prof_path, prof_data, prof_name = agent_profile_file(profile)
        node_files = [*files, BundleFile(prof_path, prof_data, "netfix-agent")]
        paths = [f.path for f in node_files] + [UNIT_PATH]
        facts = engine.gather(host, Needs(files=set(paths), scripts={
            "agent-probe": PROBE, SERVICE_STEP: SERVICE_READ}))
        node = parse_probe(facts.scripts.get("agent-probe") or "")
        if facts.files.get(UNIT_PATH) is not None:
            return refuse(f"{UNIT_PATH} exists already: run `netfix agent uninstall` first")
        if bad := unloadable(node_files, node.suffixes):
            return refuse(f"the node's python3 {node.version} cannot load {', '.join(bad)} "
                          "built on this controller: install netfix on a controller with the "
                          "node's Python version and platform, or use the DaemonSet image")
        unit = unit_text(AgentArgs(prof_path, args.mode, args.interval, args.listen),
                         node.executable).encode()
        steps = [Step("file", f.path, _b64(facts.files.get(f.path)), _b64(f.data), knob=KNOB,
                      target=f.path) for f in [*node_files, BundleFile(UNIT_PATH, unit, "")]]
        steps.append(Step("cmd", SERVICE_STEP, (facts.scripts.get(SERVICE_STEP) or "").strip(),
                          "enabled", read=SERVICE_READ, set=SERVICE_SET, knob=KNOB,
                          target=UNIT))
        tx = Tx(journal.new_id(), "apply", host.name, prof_name, steps)
        res = engine.run_tx(host, tx)
        if res.ok:
            res.message = (f"{UNIT} enabled and started ({len(steps)} step(s), python "
                           f"{node.version}); undo: netfix agent uninstall")
        return res
    except NetfixError as e:
        return refuse(str(e))
    except Exception as e:
        return HostResult(host.name, HostStatus.ERROR, False, engine.host_error(e))


def installed_tx(found) -> str | None:
    """The id of the install transaction in force in a journal (engine.read_journal)."""
    from netfix.status import TxStatus

    for tx in reversed(found.txs):
        # Not a rollback: uninstall's own transaction carries the same steps, inverted.
        if (tx.kind == "apply" and tx.state is TxStatus.APPLIED
                and any(s.knob == KNOB for s in tx.steps)):
            return tx.id
    return None


def uninstall_host(host, force: bool = False):
    """The rollback of the install transaction: the unit stopped and disabled, then every
    file restored byte for byte (removed where install created it) and the directories
    install created removed."""
    from netfix import engine
    from netfix.engine import HostResult
    from netfix.status import HostStatus

    try:
        tx_id = installed_tx(engine.read_journal(host))
    except Exception as e:
        return HostResult(host.name, HostStatus.ERROR, False, engine.host_error(e))
    if tx_id is None:
        return HostResult(host.name, HostStatus.NO_CHANGES, True, "the agent is not installed "
                          "here (no install transaction in force in the journal)")
    res = engine.rollback_host(host, tx_id, force)
    if res.ok:
        res.message = f"{UNIT} stopped and removed: {res.message}"
    return res


# --------------------------------------------------------------------------- manifests
#
# `netfix agent manifests` renders deploy/kubernetes the way `kubectl kustomize` does, for
# the subset of kustomize these files use (tests/unit/test_manifests.py checks that both
# give the same documents): resources, namespace, nameSuffix, labels (with
# includeSelectors), and strategic-merge patches whose lists merge by `name`.

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
SHIPPED_PROFILES = Path(__file__).resolve().parent / "profiles"
CONFIGMAP = "netfix-profiles"


def profiles_configmap() -> dict:
    """The ConfigMap of the shipped profiles (base/profiles.yaml is this, written out)."""
    data = {p.name: p.read_text() for p in sorted(SHIPPED_PROFILES.glob("*.yaml"))}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "labels": {"app.kubernetes.io/name": "netfix-agent"}},
            "data": data}


def _merge(base, patch):
    """Strategic merge as the API server does it for the fields used here: mappings
    merge, lists of mappings with a `name` merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = list(base)
        for item in patch:
            at = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if at is None:
                out.append(item)
            else:
                out[at] = _merge(out[at], item)
        return out
    return patch


def _selectors(doc: dict) -> list[dict]:
    """The label maps `labels: includeSelectors` extends besides metadata.labels."""
    spec = doc.get("spec") or {}
    if doc["kind"] == "Service":
        return [spec.setdefault("selector", {})]
    if doc["kind"] in ("DaemonSet", "Deployment", "StatefulSet"):
        return [spec.setdefault("selector", {}).setdefault("matchLabels", {}),
                spec.setdefault("template", {}).setdefault("metadata", {})
                .setdefault("labels", {})]
    return []


def _rename_refs(doc: dict, names: dict[tuple[str, str], str]) -> None:
    """kustomize's name references for the kinds used here: a pod's ConfigMap volumes."""
    if doc["kind"] != "DaemonSet":
        return
    for vol in doc["spec"]["template"]["spec"].get("volumes", []):
        cm = vol.get("configMap")
        if cm and ("ConfigMap", cm.get("name")) in names:
            cm["name"] = names[("ConfigMap", cm["name"])]


def kustomize(root: Path) -> list[dict]:
    """The documents `kubectl kustomize root` prints, as data."""
    import yaml

    path = root / "kustomization.yaml"
    try:
        kust = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{path}: {e}") from e
    docs: list[dict] = []
    for res in kust.get("resources", []):
        target = root / res
        if target.is_dir():
            docs += kustomize(target)
        else:
            docs += [d for d in yaml.safe_load_all(target.read_text()) if d]
    for p in kust.get("patches", []):
        for patch in yaml.safe_load_all((root / p["path"]).read_text()):
            key = (patch["kind"], patch["metadata"]["name"])
            hit = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == key]
            if not hit:
                raise InputError(f"{root / p['path']}: patch target {key} not found")
            for i in hit:
                docs[i] = _merge(docs[i], patch)
    if ns := kust.get("namespace"):
        for d in docs:
            if d["kind"] == "Namespace":
                d["metadata"]["name"] = ns
            else:
                d["metadata"]["namespace"] = ns
    if suffix := kust.get("nameSuffix"):
        names = {}
        for d in docs:
            if d["kind"] != "Namespace":  # kustomize never renames a Namespace
                names[(d["kind"], d["metadata"]["name"])] = d["metadata"]["name"] + suffix
                d["metadata"]["name"] += suffix
        for d in docs:
            _rename_refs(d, names)
    for spec in kust.get("labels", []):
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(spec["pairs"])
            if spec.get("includeSelectors"):
                for sel in _selectors(d):
                    sel.update(spec["pairs"])
    return docs


def overlays(deploy: Path = DEPLOY_DIR) -> list[str]:
    return sorted(p.parent.name for p in (deploy / "overlays").glob("*/kustomization.yaml"))


def manifests(profile: str, deploy: Path = DEPLOY_DIR) -> str:
    """The YAML of overlay `profile` (base merged with it), ready for `kubectl apply -f -`."""
    import yaml

    if not (deploy / "base" / "kustomization.yaml").is_file():
        raise InputError(f"no kustomize base in {deploy}/base: pass --dir DEPLOY_DIR (the "
                         "repository's deploy/kubernetes)")
    if profile not in overlays(deploy):
        raise InputError(f"no overlay for profile {profile!r} in {deploy}/overlays (there "
                         f"are: {', '.join(overlays(deploy))}); copy one and name its label")
    docs = kustomize(deploy / "overlays" / profile)
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------- commands


def _inventory(f):
    f = click.option("-l", "--limit", metavar="PATTERN", help="Only these hosts (as for "
                     "plan).")(f)
    return click.option("-i", "--inventory", metavar="FILE", required=True,
                        help="Inventory file (netfix or Ansible YAML).")(f)


@click.command()
@_inventory
@click.option("-p", "--profile", required=True, metavar="NAME",
              help="Profile the agent keeps (a name on the search path or a file).")
@click.option("--mode", type=click.Choice(MODES), default="enforce", show_default=True,
              help="observe: only report; enforce: apply pending changes.")
@click.option("--interval", type=click.IntRange(min=1), default=60, show_default=True,
              metavar="SECONDS", help="Seconds between two plans.")
@click.option("--listen", metavar="ADDR:PORT", help="Serve /metrics and /healthz there.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def install(inventory, limit, profile, mode, interval, listen, as_json) -> None:
    """Install the agent on each node as netfix-agent.service (systemd), in one journaled
    transaction: the code bundle (from this controller's installation, run by the node's
    python3), the merged profile and the unit; then enable and start it. Undo: uninstall
    (or `netfix rollback --tx ID`)."""
    from netfix import engine
    from netfix.cli import finish, progress, select

    hosts = select(inventory, limit)
    files = bundle()
    args = AgentArgs(profile, mode, interval, listen)
    progress(f"bundle: {len(files)} files, {sum(len(f.data) for f in files) // 1024} KiB")
    finish(engine.parallel(hosts, lambda h: install_host(h, profile, args, files)),
           "agent install", as_json)


@click.command()
@_inventory
@click.option("--force", is_flag=True, help="Also restore files changed since install.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def uninstall(inventory, limit, force, as_json) -> None:
    """Stop and disable netfix-agent.service and remove what install wrote, byte for byte
    (the rollback of the install transaction). Settings the agent applied stay: roll them
    back with `netfix rollback` if wanted."""
    from netfix import engine
    from netfix.cli import finish, select

    finish(engine.parallel(select(inventory, limit), lambda h: uninstall_host(h, force)),
           "agent uninstall", as_json)


@click.command("manifests")
@click.option("-p", "--profile", required=True, metavar="NAME",
              help="The overlay (deploy/kubernetes/overlays/NAME) to render.")
@click.option("--dir", "deploy", type=click.Path(file_okay=False, path_type=Path),
              default=DEPLOY_DIR, show_default=True, help="The kustomize tree.")
def manifests_cmd(profile, deploy) -> None:
    """Print the DaemonSet, Service, ConfigMap and Namespace of one profile's overlay as
    `kubectl kustomize` renders them, for clusters without kustomize."""
    sys.stdout.write(manifests(profile, deploy))
