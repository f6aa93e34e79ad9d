"""Where the engine computes, and the per-device settings that make it fast there.

`set_up` configures torch once, at start-up (the server calls it with `Settings.bf16`): on CUDA
cuDNN autotuning, a channels_last model and optionally bf16 autocast; on the CPU torch's thread
count from the CPUs this process may use. Runs only read the result: the same engine code runs
everywhere, and nothing global changes per run. On CUDA, float32 convolutions use TF32 (cuDNN's
default on Ampere and later), other matrix products full float32 (torch's default).
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..model import VGG16


def set_up(model: VGG16, *, bf16: bool = False) -> torch.device:
    """Configure torch and `model` for the model's device; `bf16`: forward passes under bf16
    autocast on CUDA (faster; not bitwise reproducible). Call once, before any run."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model.to(memory_format=torch.channels_last)
    else:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    model.bf16 = bf16 and device.type == "cuda"
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (CUDA runs asynchronously): before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def chunk_pixels(device: torch.device) -> int:
    """Input pixels one forward pass of a result's measures may carry. On the CPU, time grows
    with the pixels whatever the chunk: 128x128 keeps the measures' memory small beside the
    run's. On CUDA a forward costs a kernel launch per layer whatever its size: all 32 views of
    a 224-px image at once (~0.4 GB of block1 activations)."""
    return 32 * 224 * 224 if device.type == "cuda" else 128 * 128


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last lets cuDNN pick its fastest (NHWC tensor-core) kernels."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def narrows_target_layer(device: torch.device) -> bool:
    """Compute only each image's own channel of the target layer, image by image? On the CPU the
    skipped channels are most of a block1 step; on CUDA the full batched layer is one kernel,
    where a per-image loop would cost a kernel launch per image."""
    return device.type == "cpu"


def autocast(model: VGG16, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `set_up` enabled it for `model`, else a no-op."""
    if device.type == "cuda" and model.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def arithmetic(model: VGG16) -> str:
    """How `model` computes, as far as it changes the results: "cpu", "cuda" or "cuda bf16"."""
    device = next(model.parameters()).device
    return device.type + (" bf16" if device.type == "cuda" and model.bf16 else "")


def describe(device: torch.device) -> str:
    """The device as reported to users: "cuda:0" or "cpu"."""
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return "cpu"
