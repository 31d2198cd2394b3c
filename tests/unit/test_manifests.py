"""deploy/kubernetes: `kubectl kustomize` and netfix's own renderer (`netfix agent
manifests`) give the same documents for the base and every overlay; every document
validates against the Kubernetes schemas of the two newest versions kubernetes-validate
ships (strict: unknown fields are errors); the DaemonSet asks for what netfix needs and no
more. All real consumers: kubectl and kubernetes-validate run as commands."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netfix import agentdeploy as ad

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
TREES = ["base", *(f"overlays/{o}" for o in ad.overlays(DEPLOY))]
# The host paths the DaemonSet may mount: what netfix writes (the systemd unit's
# ReadWritePaths), sysfs, and the modules dir read-only.
ALLOWED_HOST = {w.lstrip("-") for w in ad.WRITABLE} | {"/sys", "/lib/modules"}
READ_ONLY_HOST = {"/lib/modules"}


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path=str(BIN))
    if not path:
        pytest.skip(f"{tool} not installed")
    return path


def kubectl_kustomize(tree: str) -> list[dict]:
    p = subprocess.run([need("kubectl"), "kustomize", str(DEPLOY / tree)], capture_output=True,
                       text=True, check=True)
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def by_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def k8s_versions() -> list[str]:
    """The two newest Kubernetes versions whose schemas kubernetes-validate ships."""
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    found = {m.group(1) for p in root.iterdir()
             if (m := re.fullmatch(r"v(\d+\.\d+\.\d+)-local", p.name))}
    return sorted(found, key=lambda v: tuple(map(int, v.split("."))))[-2:]


def test_overlays_exist_for_every_shipped_profile():
    shipped = sorted(p.stem for p in ad.SHIPPED_PROFILES.glob("*.yaml"))
    assert ad.overlays(DEPLOY) == shipped


@pytest.mark.parametrize("tree", TREES)
def test_kubectl_kustomize_and_netfix_render_the_same(tree):
    theirs = by_name(kubectl_kustomize(tree))
    if tree == "base":
        ours = by_name(ad.kustomize(DEPLOY / "base"))
    else:
        p = subprocess.run([str(BIN / "netfix"), "agent", "manifests", "--profile",
                            tree.split("/")[1]], capture_output=True, text=True, check=True)
        ours = by_name(list(yaml.safe_load_all(p.stdout)))
    assert set(ours) == set(theirs)
    for key, doc in theirs.items():
        assert ours[key] == doc, key


def test_manifests_for_an_unknown_profile_is_a_clear_error():
    p = subprocess.run([str(BIN / "netfix"), "agent", "manifests", "--profile", "nope"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no overlay for profile 'nope'" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("version", k8s_versions())
@pytest.mark.parametrize("tree", TREES)
def test_every_document_validates_against_kubernetes(tree, version, tmp_path):
    docs = kubectl_kustomize(tree)
    files = []
    for i, d in enumerate(docs):
        files.append(tmp_path / f"{i}-{d['kind']}.yaml")
        files[-1].write_text(yaml.safe_dump(d))
    p = subprocess.run([need("kubernetes-validate"), "--strict", "-k", version,
                        *map(str, files)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("INFO") == len(files), p.stdout


def _typo(pod: dict) -> None:
    pod["containers"][0]["securityContext"]["privilegd"] = True


def _wrong_type(pod: dict) -> None:
    pod["hostNetwork"] = "yes"


@pytest.mark.parametrize("spoil, field", [(_typo, "privilegd"), (_wrong_type, "hostNetwork")])
def test_the_validator_rejects_a_broken_daemonset(spoil, field, tmp_path):
    ds = by_name(kubectl_kustomize("overlays/public-vds"))[("DaemonSet",
                                                            "netfix-agent-public-vds")]
    spoil(ds["spec"]["template"]["spec"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(ds))
    p = subprocess.run([need("kubernetes-validate"), "--strict", "-k", k8s_versions()[-1],
                        str(bad)], capture_output=True, text=True)
    assert p.returncode != 0 and field in p.stdout, p.stdout


@pytest.mark.parametrize("tree", TREES)
def test_daemonset_security_context(tree):
    ds = next(d for d in kubectl_kustomize(tree) if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["name"]: m for c in pod["containers"] for m in c["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert set(host.values()) <= ALLOWED_HOST, set(host.values()) - ALLOWED_HOST
    for name, path in host.items():
        assert mounts[name]["mountPath"] == path  # where netfix expects it
        assert mounts[name].get("readOnly", False) == (path in READ_ONLY_HOST), name
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) <= {"NET_ADMIN", "SYS_ADMIN", "SYS_MODULE",
                                              "SYS_PTRACE"}
    # privileged and hostPID only with the comment saying why, in the file itself.
    text = (DEPLOY / "base" / "daemonset.yaml").read_text()
    if sc.get("privileged"):
        assert re.search(r"# Justified: [^\n]*\n(\s+#[^\n]*\n)+\s+privileged: true", text)
    if pod.get("hostPID"):
        assert re.search(r"# kube-proxy detection[^\n]*\n(\s+#[^\n]*\n)*\s+hostPID: true", text)
    assert pod["nodeSelector"]["netfix.io/profile"] == ds["metadata"]["labels"].get(
        "netfix.io/profile", "base")


def test_service_is_servicemonitor_ready():
    svc = by_name(kubectl_kustomize("overlays/public-vds"))[("Service",
                                                             "netfix-agent-public-vds")]
    ds = by_name(kubectl_kustomize("overlays/public-vds"))[("DaemonSet",
                                                            "netfix-agent-public-vds")]
    (port,) = svc["spec"]["ports"]
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["metadata"]["labels"]["app.kubernetes.io/name"] == "netfix-agent"
    container_ports = {p["name"] for p in ds["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert "metrics" in container_ports


def test_profiles_configmap_is_the_shipped_profiles():
    on_disk = yaml.safe_load((DEPLOY / "base" / "profiles.yaml").read_text())
    assert on_disk == ad.profiles_configmap(), "regenerate base/profiles.yaml (its header)"
