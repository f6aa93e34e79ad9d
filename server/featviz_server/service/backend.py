"""What the servicer serves once the model is loaded: weights, model, scheduler, exemplars, ONNX
export."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from ..engine import device as devices
from ..model import VGG16
from ..onnx_export import OnnxExport, export_onnx
from ..weights import Weights
from .exemplar_search import ExemplarSearch
from .scheduler import Scheduler


@dataclass
class Backend:
    """The loaded model and everything built on it."""

    weights: Weights
    model: VGG16
    scheduler: Scheduler
    exemplars: ExemplarSearch
    cache_dir: Path

    @property
    def device(self) -> str:
        """Where the model computes, as reported to users: "cuda:0" or "cpu"."""
        return devices.describe(next(self.model.parameters()).device)

    async def onnx_export(self) -> OnnxExport:
        """The ONNX export, off the event loop: the cached file once checked (0.1 s on a CPU),
        built again if it is gone or damaged; concurrent callers build it once."""
        return await asyncio.to_thread(export_onnx, self.model, self.cache_dir)
