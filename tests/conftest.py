"""Shared fixtures: the real ImageNet VGG16 weights (fetched once into the user cache) and model."""

from __future__ import annotations

import pytest
import torch

from featviz_server.model import VGG16, load_model
from featviz_server.weights import Weights, default_cache_dir, load_weights


@pytest.fixture(scope="session")
def weights() -> Weights:
    return load_weights(default_cache_dir())


@pytest.fixture(scope="session")
def model(weights: Weights) -> VGG16:
    return load_model(weights, torch.device("cpu"))
