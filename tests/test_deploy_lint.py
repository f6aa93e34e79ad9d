"""The deployment files cannot be built or applied here (no Docker engine, no cluster), so they are
linted and checked for the properties that keep a deployment safe: GPUs requested, gRPC health
probes, and shutdown grace periods longer than the server's drain."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
K8S = DOCKER / "k8s"
HADOLINT = Path(sys.executable).parent / "hadolint"
PORT = 50051


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every manifest in docker/k8s, keyed by "Kind/name"."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            objects[f"{document['kind']}/{document['metadata']['name']}"] = document
    return objects


def seconds(duration: str) -> float:
    """A Compose duration such as "45s" or "1m30s" in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"unparsed duration {duration}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_dockerfile_passes_hadolint() -> None:
    lint = subprocess.run(
        [str(HADOLINT), str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dockerfile_runs_the_shared_entrypoint_as_non_root_with_baked_weights() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert re.search(
        r"^ARG BASE_IMAGE=pytorch/pytorch:[\w.]+-cuda[\w.]+-cudnn9-runtime$", dockerfile, re.M
    )
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)
    # Weights are fetched after FEATVIZ_CACHE_DIR is set and as the user who will read them.
    assert dockerfile.index("FEATVIZ_CACHE_DIR=") < dockerfile.index("USER 10001")
    assert dockerfile.index("USER 10001") < dockerfile.index("RUN featviz-server weights")
    assert 'CMD ["python", "/opt/featviz/healthcheck.py"]' in dockerfile
    assert 'ENTRYPOINT ["/opt/featviz/entrypoint.sh"]' in dockerfile
    entrypoint = (DOCKER / "entrypoint.sh").read_text()
    assert 'exec featviz-server serve "$@"' in entrypoint
    syntax = subprocess.run(["sh", "-n", str(DOCKER / "entrypoint.sh")], capture_output=True)
    assert syntax.returncode == 0, syntax.stderr


def test_compose_gives_each_replica_a_gpu_and_puts_nginx_behind_healthy_replicas() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    replicas = [name for name, service in services.items() if "build" in service]
    assert len(replicas) >= 2
    gpus = set()
    for name in replicas:
        service = services[name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        gpus.update(device["device_ids"])
        drain = float(service["environment"]["FEATVIZ_DRAIN_GRACE"])
        assert seconds(service["stop_grace_period"]) > drain, name
    assert len(gpus) == len(replicas), "two replicas share a GPU"

    lb = services["lb"]
    assert {name: {"condition": "service_healthy"} for name in replicas} == lb["depends_on"]
    assert (
        "./nginx/nginx.conf.template:/etc/nginx/templates/nginx.conf.template:ro" in lb["volumes"]
    )
    upstreams = re.findall(r"server ([\w-]+):(\d+)", lb["environment"]["FEATVIZ_UPSTREAMS"])
    assert upstreams == [(name, str(PORT)) for name in replicas]
    assert lb["ports"] == [f"{PORT}:{lb['environment']['FEATVIZ_LB_LISTEN']}"]


def test_k8s_deployment_requests_a_gpu_and_probes_grpc_health() -> None:
    objects = k8s_objects()
    pod = objects["Deployment/featviz"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= resources["requests"].keys()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": PORT}, probe
    assert {"name": "grpc", "containerPort": PORT} in container["ports"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_k8s_termination_grace_outlasts_prestop_plus_drain() -> None:
    objects = k8s_objects()
    pod = objects["Deployment/featviz"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": "featviz-settings"}}]
    drain = float(objects["ConfigMap/featviz-settings"]["data"]["FEATVIZ_DRAIN_GRACE"])
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + drain


def test_k8s_result_cache_lives_on_a_volume_larger_than_its_bound() -> None:
    objects = k8s_objects()
    settings = objects["ConfigMap/featviz-settings"]["data"]
    pod = objects["Deployment/featviz"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [
        m
        for m in container["volumeMounts"]
        if m["mountPath"] == settings["FEATVIZ_RESULT_CACHE_DIR"]
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    size_limit = volume["emptyDir"]["sizeLimit"]
    assert size_limit.endswith("Gi")
    assert int(size_limit.removesuffix("Gi")) * 1024 > int(settings["FEATVIZ_RESULT_CACHE_MB"])


def test_k8s_headless_service_exposes_every_pod_for_client_side_balancing() -> None:
    objects = k8s_objects()
    labels = objects["Deployment/featviz"]["spec"]["template"]["metadata"]["labels"]
    headless = objects["Service/featviz-headless"]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"].items() <= labels.items()
    assert headless["ports"][0]["port"] == PORT
    selector = objects["PodDisruptionBudget/featviz"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
