"""Where the engine computes, and the per-device settings that make it fast there.

On CUDA: cuDNN autotuning, channels_last activations and optional bf16 autocast (set
FEATVIZ_BF16=1 or call `use_bf16`). On the CPU: torch's thread count set once from the CPUs this
process may use. Either way the same engine code runs; only these settings differ.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

_settings = {"bf16": os.environ.get("FEATVIZ_BF16", "") == "1", "threads_set": False}


def use_bf16(enabled: bool) -> None:
    """Run forward passes under bf16 autocast on CUDA (faster; no longer bitwise reproducible)."""
    _settings["bf16"] = enabled


def prepare(model: nn.Module) -> torch.device:
    """Configure torch (and the model's layout) for the model's device; idempotent and cheap."""
    weight = next(model.parameters())
    device = weight.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if not weight.is_contiguous(memory_format=torch.channels_last):  # once per model
            model.to(memory_format=torch.channels_last)
    elif not _settings["threads_set"]:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        _settings["threads_set"] = True
    return device


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last lets cuDNN pick its fastest (NHWC tensor-core) kernels."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def narrows_target_layer(device: torch.device) -> bool:
    """Compute only each image's own channel of the target layer, image by image? On the CPU the
    skipped channels are most of a block1 step; on CUDA the full batched layer is one kernel,
    where a per-image loop would cost a launch per image (not measured: no GPU was lent)."""
    return device.type == "cpu"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled, else a no-op."""
    if device.type == "cuda" and _settings["bf16"]:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    """The device as reported to users: "cuda:0" or "cpu"."""
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return "cpu"
