"""The netfix wheel as an operator gets it: built from this checkout, installed into a fresh
venv in a temporary directory, run from a directory outside the checkout. It must bring its
profiles (package data) and must not bring the test lab (netfix_lab, the netfix-lab
distribution in lab/). One wheel and one venv per session; installing the wheel's
dependencies takes pip as long as scripts/setup.sh's install does (its cache, or the index)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import NETFIX

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("base", "k8s-node", "nic-example", "public-vds", "public-vds-firewall")
# What the checkout's profile dir holds, so that a profile added there is checked too.
SHIPPED_FILES = sorted(p.name for p in (ROOT / "netfix" / "profiles").glob("*.yaml"))


@dataclass
class Installed:
    wheel: Path
    venv: Path
    cwd: Path  # outside the checkout: no ./profiles, no netfix package next to it

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(argv, cwd=self.cwd, env=clean_env(self.venv),
                           capture_output=True, text=True, timeout=300)
        if check:
            assert p.returncode == 0, f"{argv} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def netfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "netfix"), *args, check=check)

    def python(self, code: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "python"), "-c", code, check=check)


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """This session's environment without what would let the checkout leak in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NETFIX_PROFILE_PATH",
                        "NETFIX_INVENTORY")}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    env["COLUMNS"] = "200"
    return env


def source_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked, and untracked ones it does not
    ignore), so no build/, egg-info or .venv of the checkout can slip into the wheel, and
    the checkout itself gets no build/ dir."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, text=True)
    assert listed.returncode == 0, f"git ls-files failed: {listed.stderr}"
    for rel in filter(None, listed.stdout.split("\0")):
        src = ROOT / rel
        if src.is_file():  # a file deleted in the working tree is still listed
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Installed:
    if shutil.which("git") is None:
        pytest.skip("needs git (to copy the checkout's files for the build)")
    base = tmp_path_factory.mktemp("wheel")
    src = source_copy(base / "src")
    dist = base / "dist"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "-w", str(dist), str(src)],
                       cwd=base, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"pip wheel failed:\n{p.stdout}\n{p.stderr}"
    wheels = sorted(dist.glob("netfix-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    # A clean venv: no system site packages, nothing of this session's venv.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean_env())
    p = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                        str(wheels[0])],
                       cwd=base, env=clean_env(venv), capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, f"pip install of the wheel failed:\n{p.stdout}\n{p.stderr}"
    cwd = base / "elsewhere"
    cwd.mkdir()
    return Installed(wheels[0], venv, cwd)


def test_the_wheel_holds_netfix_and_its_profiles_only(installed: Installed):
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"netfix"}, tops
    assert not [n for n in names if Path(n).stem in ("lab", "vm", "netns")], names
    assert sorted(Path(n).name for n in names
                  if n.startswith("netfix/profiles/")) == SHIPPED_FILES
    assert {f"{p}.yaml" for p in SHIPPED} <= set(SHIPPED_FILES)


def test_the_installed_wheel_has_no_lab(installed: Installed):
    modules = installed.python(
        "import netfix, pkgutil; print([m.name for m in pkgutil.iter_modules(netfix.__path__)])"
    ).stdout
    listed = ast.literal_eval(modules.strip())
    assert "cli" in listed and "profile" in listed, listed
    assert not {"lab", "vm", "netns"} & set(listed), listed
    # It is this venv's netfix, not the checkout's.
    where = installed.python("import netfix; print(netfix.__file__)").stdout.strip()
    assert where.startswith(str(installed.venv)), where
    p = installed.python("import netfix_lab", check=False)
    assert p.returncode != 0 and "No module named 'netfix_lab'" in p.stderr, p.stderr
    p = installed.python("from importlib.metadata import entry_points; "
                         "print(list(entry_points(group='netfix.commands')))")
    assert p.stdout.strip() == "[]"
    p = installed.netfix("lab", "up", check=False)
    assert p.returncode == 2 and "No such command 'lab'" in p.stderr, p.stderr


def test_the_installed_wheel_lists_and_shows_its_profiles(installed: Installed):
    out = installed.netfix("profiles", "list").stdout
    listed = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert set(SHIPPED) <= set(listed), out
    site = str(installed.venv / "lib")
    for name in SHIPPED:
        if not Path(f"/etc/netfix/profiles/{name}.yaml").exists():  # that one comes first
            assert site in listed[name] and f"/netfix/profiles/{name}.yaml" in listed[name], out
    shown = installed.netfix("profiles", "show", "public-vds").stdout
    assert shown.startswith("# profile public-vds: ") and "conntrack:" in shown, shown


def test_the_installed_wheel_plans_public_vds_against_a_lab_node(installed: Installed, lab):
    args = ["plan", "--profile", "public-vds", "-i", str(lab.inventory), "--limit", "node1"]
    p = installed.netfix(*args, "--detailed-exitcode", check=False)
    assert p.returncode == 2, f"{p.returncode}\n{p.stdout}\n{p.stderr}"  # changes pending
    assert "node1 (profile public-vds" in p.stdout and "Plan: " in p.stdout, p.stdout
    # The same plan as the checkout's netfix makes from the checkout's profiles.
    wheel = json.loads(installed.netfix(*args, "--json").stdout)
    dev = subprocess.run([NETFIX, *args, "--json"], cwd=installed.cwd, env=clean_env(),
                         capture_output=True, text=True, timeout=300)
    assert dev.returncode == 0, dev.stderr
    dev_plan = json.loads(dev.stdout)
    [host] = wheel["hosts"]
    assert host["profile"] == "public-vds"
    assert host["profile_path"].startswith(str(installed.venv)), host["profile_path"]
    assert any(c["target"] == "net.netfilter.nf_conntrack_tcp_timeout_syn_sent"
               for c in host["changes"]), host["changes"]
    for plan in (wheel, dev_plan):
        plan.pop("created", None)
        for h in plan["hosts"]:
            h.pop("profile_path", None)
    assert wheel == dev_plan
