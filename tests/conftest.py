"""Shared fixtures: the real ImageNet VGG16 weights (fetched once into the user cache), the model,
and a real featviz server subprocess."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from serverproc import ServerProcess, start_server

from featviz_server.model import VGG16, load_model
from featviz_server.weights import Weights, default_cache_dir, load_weights


@pytest.fixture(scope="session")
def weights() -> Weights:
    return load_weights(default_cache_dir())


@pytest.fixture(scope="session")
def model(weights: Weights) -> VGG16:
    return load_model(weights, torch.device("cpu"))


# Small limits that keep test runs cheap on a 2-core machine; metrics on a free port (and, as for
# every server start_server runs, no result cache).
TEST_SERVER_ARGS = (
    "--max-concurrent-runs", "2", "--queue-size", "4", "--max-size", "256",
    "--max-steps", "400", "--metrics-port", "0", "--drain-grace", "5",
)  # fmt: skip


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One `featviz-server serve` subprocess on a free loopback port, SERVING, for the session."""
    with start_server(*TEST_SERVER_ARGS) as process:
        yield process
