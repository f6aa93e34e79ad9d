"""The deployment's load balancer, outside Docker: docker/nginx/nginx.conf.template rendered the
way the nginx image renders it (envsubst of the FEATVIZ_* variables), a real nginx in front of two
real replicas on loopback, one of them started by docker/entrypoint.sh, driven by the SDK.

nginx must be installed (`apt-get install nginx-light`): without it these tests fail, not skip.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from serverproc import ServerProcess, attach, start_server

import featviz

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "docker" / "nginx" / "nginx.conf.template"
RUNS = 12
RUN = {"layer": "block1_conv2", "size": 32, "steps": 60, "preview_every": 10}
FINISHED_OK = 'featviz_runs_finished_total{status="ok"}'


def nginx_binary() -> str:
    nginx = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")
    assert nginx is not None, "nginx is not installed: apt-get install -y nginx-light"
    return nginx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def render(directory: Path, listen: str, upstreams: str) -> Path:
    """The template with its variables filled in, as envsubst does in the nginx image."""
    text = string.Template(TEMPLATE.read_text()).safe_substitute(
        FEATVIZ_LB_LISTEN=listen, FEATVIZ_UPSTREAMS=upstreams
    )
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


def nginx_args(directory: Path, conf: Path) -> list[str]:
    """A foreground nginx whose pid file lives in `directory` and whose logs go to stdout/stderr."""
    global_directives = f"daemon off; pid {directory / 'nginx.pid'};"
    return [
        nginx_binary(),
        "-e",
        "stderr",
        "-p",
        str(directory),
        "-c",
        str(conf),
        "-g",
        global_directives,
    ]


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"nginx exited with {process.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nginx not listening on {port} after {timeout} s")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Two replicas: one as the tests start servers, one through the container's entrypoint
    (configured, as in a container, by FEATVIZ_* variables)."""
    log_path = tmp_path_factory.mktemp("entrypoint") / "server.log"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FEATVIZ_HOST": "127.0.0.1",
        "FEATVIZ_PORT": "0",
        "FEATVIZ_METRICS_PORT": "0",
        "FEATVIZ_RESULT_CACHE_MB": "0",  # as start_server does: every run computes
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(ROOT / "docker" / "entrypoint.sh")],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
    try:
        entrypoint_replica = attach(process, log_path, None)
        with start_server("--metrics-port", "0") as replica:
            entrypoint_replica.wait_serving()
            yield [replica, entrypoint_replica]
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(30)
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture(scope="module")
def balancer(
    replicas: list[ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """nginx in front of the replicas; its target."""
    directory = tmp_path_factory.mktemp("nginx")
    port = free_port()
    upstreams = " ".join(f"server {r.target} max_fails=1 fail_timeout=10s;" for r in replicas)
    conf = render(directory, f"127.0.0.1:{port}", upstreams)
    with (directory / "nginx.log").open("w") as log:
        process = subprocess.Popen(nginx_args(directory, conf), stdout=log, stderr=log)
    try:
        wait_listening(port, process)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def run_all(
    target: str, channels: list[int], on_progress: Callable[[featviz.Update], None] | None = None
) -> list[featviz.Result]:
    """One small run per channel over the balancer, four at a time, each with its own client."""
    seed = secrets.randbelow(2**31)  # never answered from a result cache of an earlier test run

    def run(channel: int) -> featviz.Result:
        with featviz.Client(target, timeout=120) as client:
            return client.maximize(channels=channel, seed=seed, on_progress=on_progress, **RUN)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(run, channels))


def test_compose_settings_render_a_config_that_passes_nginx_t(tmp_path: Path) -> None:
    """The variables exactly as docker/compose.yaml sets them (replica names, which only resolve
    inside Compose's network, pointed at loopback)."""
    lb = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["lb"]
    upstreams = re.sub(
        r"server [\w-]+:", "server 127.0.0.1:", lb["environment"]["FEATVIZ_UPSTREAMS"]
    )
    conf = render(tmp_path, lb["environment"]["FEATVIZ_LB_LISTEN"], upstreams)
    assert "${" not in conf.read_text()
    check = subprocess.run(
        [*nginx_args(tmp_path, conf), "-t"], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stderr
    assert "test is successful" in check.stderr


def test_healthcheck_script_reports_serving_through_the_balancer(balancer: str) -> None:
    healthcheck = [sys.executable, str(ROOT / "docker" / "healthcheck.py")]
    serving = subprocess.run([*healthcheck, balancer], capture_output=True, text=True, timeout=30)
    assert serving.returncode == 0, serving.stderr
    assert "SERVING" in serving.stderr
    down = subprocess.run(
        [*healthcheck, f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=30
    )
    assert down.returncode == 1
    assert "UNAVAILABLE" in down.stderr


def test_healthcheck_speaks_tls_to_a_tls_server(
    secure_server: ServerProcess, certificate: tuple[Path, Path]
) -> None:
    healthcheck = [sys.executable, str(ROOT / "docker" / "healthcheck.py"), secure_server.target]
    plain = {k: v for k, v in os.environ.items() if not k.startswith("FEATVIZ_")}
    tls = {**plain, "FEATVIZ_TLS_CERT": str(certificate[0]), "FEATVIZ_TLS_KEY": str(certificate[1])}
    serving = subprocess.run(healthcheck, env=tls, capture_output=True, text=True, timeout=30)
    assert serving.returncode == 0, serving.stderr
    assert "SERVING" in serving.stderr
    plaintext = subprocess.run(healthcheck, env=plain, capture_output=True, text=True, timeout=30)
    assert plaintext.returncode == 1
    assert "UNAVAILABLE" in plaintext.stderr


def test_load_spreads_over_both_replicas(balancer: str, replicas: list[ServerProcess]) -> None:
    before = [replica.metric(FINISHED_OK, 0.0) for replica in replicas]
    results = run_all(balancer, list(range(RUNS)))
    assert [result.channels for result in results] == [(channel,) for channel in range(RUNS)]
    served = [
        replica.metric(FINISHED_OK, 0.0) - b for replica, b in zip(replicas, before, strict=True)
    ]
    assert sum(served) == RUNS
    assert min(served) >= RUNS / 3, f"runs per replica: {served}"


def test_killing_a_replica_mid_load_loses_no_run(
    balancer: str, replicas: list[ServerProcess]
) -> None:
    """SIGKILL the entrypoint replica while it optimizes; the SDK resubmits what it lost."""
    victim, survivor = replicas[1], replicas[0]
    lock = threading.Lock()
    killed = threading.Event()
    resubmitted: list[featviz.Retrying] = []

    def kill_once(update: featviz.Update) -> None:
        if isinstance(update, featviz.Retrying):
            resubmitted.append(update)
        with lock:
            if not killed.is_set() and victim.metric("featviz_active_runs", 0.0) > 0:
                victim.process.send_signal(signal.SIGKILL)
                killed.set()

    results = run_all(balancer, list(range(RUNS)), on_progress=kill_once)
    assert killed.is_set(), "the replica was never busy, so never killed"
    assert victim.process.wait(10) == -signal.SIGKILL
    assert resubmitted, "no run was lost and resubmitted"
    assert [result.channels for result in results] == [(channel,) for channel in range(RUNS)]
    assert all(len(result.images) == 1 and result.images[0].png for result in results)
    survivor.wait_metric("featviz_active_runs", 0.0)
