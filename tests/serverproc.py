"""Run `featviz-server serve` as a real subprocess on a free loopback port, for any test.

    with start_server("--max-steps", "50") as server:
        channel = server.channel()          # insecure, or TLS when started with root_cert
        stub = featviz_pb2_grpc.FeatureVisualizationServiceStub(channel)

The server's stderr (JSON log lines) goes to a file: `server.log()` reads it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from featviz.v1 import featviz_pb2

LISTENING = re.compile(r"^featviz-server listening on (\S+):(\d+)$")
METRICS = re.compile(r"^featviz-server metrics on (\S+)$")
START_TIMEOUT = 120.0  # seconds: importing torch and loading the weights on a busy 2-core machine
STOP_TIMEOUT = 30.0


# Field 99 as a varint: what a newer client's request with a field this server lacks looks like.
UNKNOWN_FIELD_99 = b"\x98\x06\x01"


class ServerError(RuntimeError):
    """The server did not start, or died; the message ends with its log."""


@dataclass
class ServerProcess:
    """A running server: its address, process, log file and (if enabled) metrics URL."""

    process: subprocess.Popen[str]
    port: int
    log_path: Path
    root_cert: bytes | None = None
    metrics_url: str | None = None
    final_log: str | None = None  # the log, kept once the server is gone

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self, *, options: tuple[tuple[str, object], ...] = ()) -> grpc.Channel:
        """A blocking channel to the server (TLS when it was started with a root certificate)."""
        if self.root_cert is None:
            return grpc.insecure_channel(self.target, options=options)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.root_cert)
        return grpc.secure_channel(self.target, credentials, options=options)

    def log(self) -> str:
        if self.final_log is not None:
            return self.final_log
        return self.log_path.read_text(errors="replace")

    def metric(self, sample: str, default: float | None = None) -> float:
        """One sample from /metrics, e.g. "featviz_active_runs" or
        'featviz_runs_finished_total{status="ok"}'; `default` if absent."""
        if self.metrics_url is None:
            raise ServerError("started without --metrics-port")
        value = metric_samples(self.metrics_url).get(sample, default)
        if value is None:
            raise ServerError(f"no sample {sample} in {self.metrics_url}")
        return value

    def wait_metric(self, sample: str, value: float, timeout: float = 60.0) -> None:
        """Poll until the sample equals `value` (e.g. active runs back to 0)."""
        deadline = time.monotonic() + timeout
        while (current := self.metric(sample, 0.0)) != value:
            if time.monotonic() > deadline:
                raise ServerError(f"{sample} is {current}, not {value}, after {timeout} s")
            time.sleep(0.05)

    def health(self, service: str = "") -> int:
        """The server's grpc.health.v1 status (health_pb2.HealthCheckResponse.SERVING, ...)."""
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if self.health() == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise ServerError(f"server not SERVING after {timeout} s\n{self.log()}")

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (drain), then SIGKILL if it does not exit in time; the exit code."""
        return _stop(self.process, timeout)

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ServerError(f"server exited with {self.process.returncode}\n{self.log()}")


def server_command(*args: str) -> list[str]:
    """The command line of `featviz-server` run with this test's Python."""
    return [sys.executable, "-m", "featviz_server.cli", *args]


@contextmanager
def start_server(
    *extra_args: str,
    env: Mapping[str, str] | None = None,
    root_cert: bytes | None = None,
    wait: bool = True,
) -> Iterator[ServerProcess]:
    """`featviz-server serve --host 127.0.0.1 --port 0 *extra_args`, SERVING (unless `wait` is
    False), terminated on exit. `env` adds to the environment; `root_cert` (PEM) makes
    `.channel()` and the health check use TLS.

    The result cache is off (FEATVIZ_RESULT_CACHE_MB=0) unless `env` or a flag turns it on, so
    that a test's runs compute (and stream progress) however often the suite runs.
    """
    with tempfile.TemporaryDirectory(prefix="featviz-server-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                server_command("serve", "--host", "127.0.0.1", "--port", "0", *extra_args),
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                env={**os.environ, "FEATVIZ_RESULT_CACHE_MB": "0", **(env or {})},
            )
        server = None
        try:
            server = attach(process, log_path, root_cert)
            if wait:
                server.wait_serving()
            yield server
        finally:
            _stop(process, STOP_TIMEOUT)
            if server is not None:
                server.final_log = log_path.read_text(errors="replace")
            if process.stdout is not None:
                process.stdout.close()


def _stop(process: subprocess.Popen[str], timeout: float) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def attach(
    process: subprocess.Popen[str], log_path: Path, root_cert: bytes | None
) -> ServerProcess:
    """Read stdout up to the listening line (the metrics line, if any, comes before it)."""
    assert process.stdout is not None
    metrics_url = None
    deadline = time.monotonic() + START_TIMEOUT
    for line in process.stdout:
        if match := METRICS.match(line.strip()):
            metrics_url = match.group(1)
        elif match := LISTENING.match(line.strip()):
            return ServerProcess(process, int(match.group(2)), log_path, root_cert, metrics_url)
        if time.monotonic() > deadline:
            break
    process.wait(STOP_TIMEOUT)
    raise ServerError(
        f"server exited ({process.returncode}) before listening\n{log_path.read_text()}"
    )


def metric_samples(metrics_url: str) -> dict[str, float]:
    """Every sample of a server's /metrics, by name with labels as written there, e.g.
    'featviz_runs_finished_total{status="ok"}'."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    samples = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def rss_mb(pid: int) -> float:
    """The resident set size of process `pid` in MiB, to 0.1 MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise ServerError(f"process {pid} has no VmRSS (it has exited)")


def final_pngs(responses: Iterable[featviz_pb2.MaximizeResponse]) -> list[bytes]:
    """The PNGs of a Maximize stream's final images, in order."""
    return [i.png for r in responses if r.HasField("final_images") for i in r.final_images.images]


def bad_request(error: grpc.RpcError) -> error_details_pb2.BadRequest:
    """The google.rpc.BadRequest detail of an INVALID_ARGUMENT error."""
    status = rpc_status.from_call(error)
    if status is None:
        raise AssertionError("no google.rpc.Status in the trailers")
    details = error_details_pb2.BadRequest()
    if not status.details[0].Unpack(details):
        raise AssertionError(f"first detail is {status.details[0].type_url}, not a BadRequest")
    return details
