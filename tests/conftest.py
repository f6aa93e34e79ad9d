"""Shared fixtures: the real ImageNet VGG16 weights (fetched once into the user cache), the model,
and a real featviz server subprocess."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from serverproc import ServerProcess, start_server

from featviz_server.engine import device as devices
from featviz_server.model import VGG16, load_model
from featviz_server.service.metrics import Metrics
from featviz_server.service.scheduler import Scheduler
from featviz_server.weights import Weights, default_cache_dir, load_weights


@pytest.fixture(scope="session")
def weights() -> Weights:
    return load_weights(default_cache_dir())


@pytest.fixture(scope="session")
def model(weights: Weights) -> VGG16:
    model = load_model(weights, torch.device("cpu"))
    devices.set_up(model)
    return model


# Small limits that keep test runs cheap on a 2-core machine; metrics on a free port (and, as for
# every server start_server runs, no result cache).
TEST_SERVER_ARGS = (
    "--max-concurrent-runs", "2", "--queue-size", "4", "--max-size", "256",
    "--max-steps", "400", "--metrics-port", "0", "--drain-grace", "5", "--exemplar-size", "64",
)  # fmt: skip


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One `featviz-server serve` subprocess on a free loopback port, SERVING, for the session."""
    with start_server(*TEST_SERVER_ARGS) as process:
        yield process


@pytest.fixture(scope="session")
def second_server() -> Iterator[ServerProcess]:
    """Another server like `server`: a second replica, for the tests that spread work."""
    with start_server(*TEST_SERVER_ARGS) as process:
        yield process


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for localhost and 127.0.0.1: (cert, key)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


TOKEN = "s3cret-token"


@pytest.fixture(scope="session")
def secure_server(certificate: tuple[Path, Path]) -> Iterator[ServerProcess]:
    """A server behind TLS (the `certificate`) that wants the bearer token TOKEN; metrics on."""
    cert, key = certificate
    with start_server(
        "--token", TOKEN, "--tls-cert", str(cert), "--tls-key", str(key), "--metrics-port", "0",
        root_cert=cert.read_bytes(),
    ) as process:  # fmt: skip
        yield process


RETRY_AFTER = 1.5  # seconds, what `small_scheduler` tells an overloaded client


def small_scheduler(model: VGG16) -> Scheduler:
    """An in-process scheduler of two run slots, for tests that drive it directly (call inside
    the event loop; drain it at the end)."""
    return Scheduler(
        model, Metrics(), max_active=2, queue_size=1, retry_after=RETRY_AFTER,
        max_batch_images=8, pending_updates=4, pending_bytes=1 << 20,
    )  # fmt: skip
