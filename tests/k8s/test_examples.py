"""examples/k8s: every manifest is valid Kubernetes, and the pieces agree with each other.

Validation is offline, against the OpenAPI schemas of a pinned Kubernetes version that
kubernetes-validate ships (strict: unknown fields are errors). No cluster is used: what
this cannot show (the device plugin, nitro-cli in a pod, vsock between pods and
enclaves) is listed in docs/kubernetes.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from attested.cli import build_parser

K8S = Path(__file__).resolve().parents[2] / "examples" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # EKS standard support; bump with the cluster
MANIFESTS = ("parent-daemonset.yaml", "app-enclave.yaml")
NITRO_RESOURCE = "aws.ec2.nitro/nitro_enclaves"


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def _all() -> list[dict[str, Any]]:
    return [d for name in MANIFESTS for d in _documents(name)]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in _all() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _configs() -> dict[str, str]:
    return {
        f"{d['metadata']['name']}/{key}": text
        for d in _all()
        if d["kind"] == "ConfigMap"
        for key, text in d["data"].items()
        if key.endswith(".toml")
    }


def test_every_file_in_the_directory_is_checked() -> None:
    assert sorted(p.name for p in K8S.iterdir()) == sorted([*MANIFESTS, "launch-enclave.sh"])


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_validate_against_the_pinned_kubernetes(name: str) -> None:
    documents = _documents(name)
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_validation_is_not_a_rubber_stamp() -> None:
    daemonset = _one("DaemonSet", "attested-parent")
    daemonset["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("config", sorted(_configs()))
def test_parent_configurations_pass_attested_parent_check(tmp_path: Path, config: str) -> None:
    path = tmp_path / config.split("/")[1]
    path.write_text(_configs()[config])
    result = subprocess.run(
        [sys.executable, "-m", "attested", "parent", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_container_commands_parse_with_this_cli() -> None:
    parser = build_parser()
    for document in _all():
        if document["kind"] not in ("DaemonSet", "Deployment"):
            continue
        for container in document["spec"]["template"]["spec"]["containers"]:
            if "/attested:" in container["image"]:
                parser.parse_args(container["args"])  # raises SystemExit if not


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def test_the_cid_plan_holds_together() -> None:
    node = tomllib.loads(_configs()["attested-parent/parent.toml"])
    assert node["credentials"]["allowed_peers"] == [16, 17, 18, 19]
    assert node["credentials"]["source"] == "environment"
    assert node["logs"]["out"] == "-"
    deployment = _one("Deployment", "payments")
    pod = deployment["spec"]["template"]
    launcher = next(c for c in pod["spec"]["containers"] if c["name"] == "enclave")
    cid = int(_env(launcher)["ENCLAVE_CID"])
    assert cid in node["credentials"]["allowed_peers"]
    assert pod["metadata"]["labels"]["attested.dev/enclave-cid"] == str(cid)
    (rule,) = pod["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    assert rule["labelSelector"]["matchLabels"] == {"attested.dev/enclave-cid": str(cid)}
    ingress = tomllib.loads(_configs()["payments-ingress/ingress.toml"])["ingress"]
    assert {forward["to"].split(":")[1] for forward in ingress} == {str(cid)}
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_the_launcher_has_its_device_memory_and_probes() -> None:
    pod = _one("Deployment", "payments")["spec"]["template"]["spec"]
    launcher = next(c for c in pod["containers"] if c["name"] == "enclave")
    limits = launcher["resources"]["limits"]
    assert limits[NITRO_RESOURCE] == launcher["resources"]["requests"][NITRO_RESOURCE] == "1"
    hugepages = limits["hugepages-2Mi"]
    assert hugepages.endswith("Gi")
    assert int(hugepages[:-2]) * 1024 >= int(_env(launcher)["ENCLAVE_MEMORY_MIB"])
    assert {v["emptyDir"].get("medium") for v in pod["volumes"] if v["name"] == "hugepages"} == {
        "HugePages-2Mi"
    }
    forwards = tomllib.loads(_configs()["payments-ingress/ingress.toml"])["ingress"]
    health = next(f for f in forwards if f["to"].endswith(":5000"))  # the service's vsock
    port = int(health["listen"].rsplit(":", 1)[1])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert launcher[probe]["httpGet"]["port"] == port
        assert launcher[probe]["httpGet"]["path"].startswith("/v1/health")
    service = _one("Service", "payments")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["app"]  # not the health port


def test_the_enclave_image_listens_where_the_probes_ask() -> None:
    # The EIF is built from examples/enclave: its enclave.toml opens the local API on the
    # vsock port the pod's health forward goes to, so the probes reach /v1/health.
    enclave = tomllib.loads((K8S.parent / "enclave" / "enclave.toml").read_text())
    listen = enclave["api"]["vsock"]
    assert listen.startswith("vsock:ANY:")
    forwards = tomllib.loads(_configs()["payments-ingress/ingress.toml"])["ingress"]
    health = next(f for f in forwards if f["listen"].endswith(":9000"))
    assert health["to"].rsplit(":", 1)[1] == listen.rsplit(":", 1)[1]
    assert not enclave["api"].get("vsock_allow_secrets", False)


def test_node_parent_uses_irsa_and_no_host_network() -> None:
    account = _one("ServiceAccount", "attested-parent")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    spec = _one("DaemonSet", "attested-parent")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "attested-parent"
    assert spec["hostNetwork"] is False
    assert _one("ServiceAccount", "payments-enclave")["automountServiceAccountToken"] is False


# -- launch-enclave.sh with a stand-in nitro-cli -------------------------------------------

FAKE_NITRO_CLI = """#!/usr/bin/env bash
# Stands in for nitro-cli: records its arguments, and keeps one enclave's state in a file.
echo "$*" >> "$STATE_DIR/calls"
case "$1" in
  describe-enclaves)
    if [ -f "$STATE_DIR/running" ]; then
      name=$(cat "$STATE_DIR/running")
      printf '[{"EnclaveName": "%s", "EnclaveCID": 16, "State": "RUNNING"}]\\n' "$name"
    else
      echo '[]'
    fi ;;
  run-enclave) echo payments > "$STATE_DIR/running"; echo '{"EnclaveCID": 16}' ;;
  terminate-enclave) rm -f "$STATE_DIR/running"; echo '{"Terminated": true}' ;;
esac
"""


def _launcher(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nitro-cli"
    fake.write_text(FAKE_NITRO_CLI)
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STATE_DIR": str(tmp_path),
        "ENCLAVE_NAME": "payments",
        "ENCLAVE_CID": "16",
        "EIF_PATH": "/enclave/payments.eif",
        "POLL_SECONDS": "0.1",
    }
    process = subprocess.Popen(
        ["bash", str(K8S / "launch-enclave.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, tmp_path / "calls"


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_launcher_replaces_a_stale_enclave_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "running").write_text("payments")  # left by the previous container
    process, calls = _launcher(tmp_path)
    try:
        _wait_for(lambda: calls.exists() and "run-enclave" in calls.read_text(), "run-enclave")
        lines = calls.read_text().splitlines()
        assert lines[1] == "terminate-enclave --enclave-name payments"
        assert lines[2] == (
            "run-enclave --enclave-name payments --enclave-cid 16 --eif-path "
            "/enclave/payments.eif --cpu-count 2 --memory 2048"
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert calls.read_text().splitlines()[-1] == "terminate-enclave --enclave-name payments"
        assert not (tmp_path / "running").exists()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_launcher_exits_1_when_the_enclave_stops(tmp_path: Path) -> None:
    process, _ = _launcher(tmp_path)
    try:
        _wait_for(lambda: (tmp_path / "running").exists(), "the enclave to run")
        (tmp_path / "running").unlink()  # the enclave ends by itself
        assert process.wait(timeout=30) == 1
        _, err = process.communicate(timeout=30)
        assert "payments is no longer running" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
