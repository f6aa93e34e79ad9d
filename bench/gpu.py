"""The GPU one-shot check: one command, on a CUDA machine, in under 8 minutes.

    .venv/bin/python bench/gpu.py --json gpu.json           # on a CUDA machine
    .venv/bin/python bench/gpu.py --device cpu --quick      # the same sections, small (a test)

(1) Agreement with the CPU, on the canonical jobs (block1_conv2 ch 14, block5_conv2 ch 410,
    128 px, seed 0, the default preset), TF32 off:
    - one forward and backward on the same input: the activations as the largest difference
      over the largest CPU value, tolerance 1e-3 (float32 sums in another order differ by ~1e-6
      of their scale); the input gradients as the relative L2 difference, tolerance 1e-2 (a ReLU
      near 0 that flips on those last bits changes a few gradient values by a step: ~3e-4 of
      the whole; a wrong kernel is off by ~1);
    - the whole runs: an optimization amplifies those last bits, so the two images are not the
      same pixels; what must agree is what users see of them: the device's plain and robust
      activations within 15 % of the CPU's, and both robust activations above the canonical
      bars (not with --quick, whose runs are too short for them).
(2) Image-steps per second of the engine (`advance` on one run of the default preset, 224 px),
    by layer and images per step, in float32 (on CUDA: TF32 convolutions, as the server runs
    them) and under bf16 autocast (CUDA only).
(3) Continuous batching through the real server (tests/serverproc.py, on this device): 1, 8 and
    32 concurrent clients, each asking for one image of its own channel of block3_conv1 (128 px,
    the default preset), image-steps per second with the learnt batch budget and with batching
    off (--max-batch-images 1), and the gain.
(4) The projected time of every channel of every conv layer (4,224 images, 224 px, the default
    preset's step cap): each layer's image-steps per second at 32 images per step (float32 and
    bf16), times its channels and the steps, plus the robust measure of each image.

--device cpu --quick runs every section smaller (32 to 64 px, fewer layers, batches, clients
and steps) so that a test can run it on the CPU in about half a minute: there (1) compares the
CPU with itself (one run stands for both) and (4) extrapolates from 48 px by the number of
pixels, which it says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import torch

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server.architecture import CONV_LAYERS, LAYERS_BY_NAME
from featviz_server.engine import DEFAULT_PRESET, Job, Run, advance, recipe, render
from featviz_server.engine import device as devices
from featviz_server.engine.objectives import Channel
from featviz_server.model import VGG16, load_model
from featviz_server.weights import default_cache_dir, load_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from engine import BARS  # bench/engine.py: the canonical units and their quality bars
from serverproc import start_server  # the test helper that runs a real server

ACTIVATION_TOLERANCE = 1e-3  # largest difference / largest CPU value
GRADIENT_TOLERANCE = 1e-2  # L2 norm of the difference / L2 norm of the CPU's
RUN_TOLERANCE = 0.15  # plain and robust activation, relative to the CPU's


@contextmanager
def exact_float32():
    """TF32 off (cuDNN and matmuls use it by default on Ampere and later)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextmanager
def bf16_autocast(model: VGG16, on: bool):
    """The engine's forward passes of `model` under bf16 autocast (`on`, CUDA) or not, for the
    block: `model.bf16` is what the engine reads on every step (`devices.set_up` sets it once)."""
    saved, model.bf16 = model.bf16, on
    try:
        yield
    finally:
        model.bf16 = saved


def largest_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.detach().float().cpu(), expected.detach().float().cpu()
    return ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def l2_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.detach().float().cpu(), expected.detach().float().cpu()
    return ((got - expected).norm() / expected.norm().clamp_min(1e-12)).item()


# --- (1) agreement -------------------------------------------------------------------------------


def canonical_job(layer: str, channel: int, size: int, steps: int | None) -> Job:
    """The default preset on one channel, seed 0; `steps` None: the preset's cap for `layer`."""
    length = {} if steps is None else {"steps": steps}
    return Job(layer, (channel,), recipe(DEFAULT_PRESET, layer=layer, size=size, **length), seed=0)


def agreement(model: VGG16, cpu_model: VGG16, size: int, steps: int | None) -> list[dict]:
    """`steps` None: the default preset's own step cap for each layer, and the bars apply."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    with exact_float32():
        for (layer, channel), bar in BARS.items():
            pixels = torch.rand(2, 3, size, size, generator=generator)
            forward = {}
            for name, net in (("device", model), ("cpu", cpu_model)):
                x = pixels.to(next(net.parameters()).device).requires_grad_(True)
                out = net.cut(layer)(x)
                Channel(layer, (channel, channel))({layer: out}).sum().backward()
                forward[name] = out, x.grad
            job = canonical_job(layer, channel, size, steps)
            runs = {"device": render(model, job)}
            runs["cpu"] = runs["device"] if model is cpu_model else render(cpu_model, job)
            plain = {k: r.activation[0] for k, r in runs.items()}
            robust = {k: r.robust_activation[0] for k, r in runs.items()}
            rows.append(
                {
                    "unit": f"{layer} {channel}",
                    "activations": largest_difference(forward["device"][0], forward["cpu"][0]),
                    "input_gradients": l2_difference(forward["device"][1], forward["cpu"][1]),
                    "plain": plain,
                    "robust": robust,
                    "steps": {k: r.steps for k, r in runs.items()},
                    "bar": bar if steps is None else None,
                }
            )
    for row in rows:
        row["ok"] = (
            row["activations"] <= ACTIVATION_TOLERANCE
            and row["input_gradients"] <= GRADIENT_TOLERANCE
            and all(
                abs(row[kind]["device"] - row[kind]["cpu"]) <= RUN_TOLERANCE * row[kind]["cpu"]
                for kind in ("plain", "robust")
            )
            and (row["bar"] is None or min(row["robust"].values()) >= row["bar"])
        )
    return rows


# --- (2) engine throughput -----------------------------------------------------------------------


def image_steps_per_second(model: VGG16, layer: str, images: int, size: int, steps: int) -> float:
    """Images advanced per second by `advance` on one run of `images` channels of `layer`."""
    channels = tuple(i % LAYERS_BY_NAME[layer].channels for i in range(images))
    every_step = recipe(DEFAULT_PRESET, size=size, steps=steps + 2, stop_window=0)
    run = Run(Job(layer, channels, every_step, seed=0), model)
    advance([run])  # first steps pick kernels (cuDNN autotuning) and allocate: not measured
    advance([run])
    devices.synchronize(run.device)
    started = time.perf_counter()
    while not run.done:
        advance([run])
    devices.synchronize(run.device)
    return images * steps / (time.perf_counter() - started)


def precisions(device: torch.device) -> list[bool]:
    """bf16 off, and on where it applies (CUDA)."""
    return [False, True] if device.type == "cuda" else [False]


def throughput(
    model: VGG16, layers: list[str], batches: list[int], size: int, steps: int
) -> list[dict]:
    device = next(model.parameters()).device
    rows = []
    for bf16 in precisions(device):
        with bf16_autocast(model, bf16):
            for layer in layers:
                for images in batches:
                    rate = image_steps_per_second(model, layer, images, size, steps)
                    rows.append({"layer": layer, "images": images, "bf16": bf16, "rate": rate})
                    print(f"  {layer:<13} x{images:<3} bf16 {bf16!s:<5} {rate:9.1f} image-steps/s")
    return rows


# --- (3) continuous batching through the server --------------------------------------------------


async def clients_rate(target: str, clients: int, size: int, steps: int) -> float:
    """`clients` concurrent one-image runs; image-steps per second over the wall time."""

    async def one(channel_index: int) -> int:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.FeatureVisualizationServiceStub(channel)
            request = pb.MaximizeRequest(
                layer="block3_conv1", channels=[channel_index], size=size, steps=steps, seed=1
            )
            summary = None
            async for response in stub.Maximize(request):
                if response.HasField("summary"):
                    summary = response.summary
            return summary.steps

    started = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(clients)))
    return sum(done) / (time.perf_counter() - started)


def batching(device: str, client_counts: list[int], size: int, steps: int) -> list[dict]:
    rows = []
    most = max(client_counts)
    common = ("--device", device, "--max-size", "512", "--max-concurrent-runs", str(most))
    flags = {"batched": (), "one at a time": ("--max-batch-images", "1")}
    with ExitStack() as stack:
        servers = {  # both start at once; each is measured while the other idles
            name: stack.enter_context(start_server(*common, *extra, wait=False))
            for name, extra in flags.items()
        }
        for server in servers.values():
            server.wait_serving()
        for name, server in servers.items():
            asyncio.run(clients_rate(server.target, most, size, 4))  # kernels for every batch
            for clients in client_counts:
                rate = asyncio.run(clients_rate(server.target, clients, size, steps))
                rows.append({"server": name, "clients": clients, "rate": rate})
                print(f"  {name:<14} {clients:3} clients {rate:9.1f} image-steps/s")
    for row in rows:
        if row["server"] == "batched":
            alone = next(
                r["rate"]
                for r in rows
                if r["server"] == "one at a time" and r["clients"] == row["clients"]
            )
            row["gain"] = row["rate"] / alone
    return rows


# --- (4) projection ------------------------------------------------------------------------------


def projection(model: VGG16, size: int, measured_at: int, images: int, steps: int) -> dict:
    """Hours for every channel of every conv layer at `size` px, from rates at `measured_at` px
    (scaled by the number of pixels when they differ) and the default preset's step cap for
    each layer."""
    device = next(model.parameters()).device
    caps = {layer.name: recipe(DEFAULT_PRESET, layer=layer.name).steps for layer in CONV_LAYERS}
    scale = (measured_at / size) ** 2
    total = sum(layer.channels for layer in CONV_LAYERS)
    hours = {}
    for bf16 in precisions(device):
        seconds = 0.0
        with bf16_autocast(model, bf16):
            for layer in CONV_LAYERS:
                rate = image_steps_per_second(model, layer.name, images, measured_at, steps)
                seconds += layer.channels * caps[layer.name] / (rate * scale)
            seconds += measure_seconds(model, measured_at, images) / scale * total / images
        hours["bf16" if bf16 else "float32"] = seconds / 3600
    return {
        "images": total,
        "size": size,
        "measured_at": measured_at,
        "steps_per_image": caps,
        "hours": hours,
    }


def measure_seconds(model: VGG16, size: int, images: int) -> float:
    """The robust measure of `images` block5_conv3 images (the deepest cut: an upper bound)."""
    run = Run(Job("block5_conv3", tuple(range(images)), recipe(DEFAULT_PRESET, size=size)), model)
    pixels = (torch.rand(images, 3, size, size) * 255).to(torch.uint8).to(run.device)
    devices.synchronize(run.device)
    started = time.perf_counter()
    run.robust_activation(pixels)
    devices.synchronize(run.device)
    return time.perf_counter() - started


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu")
    parser.add_argument("--quick", action="store_true", help="every section, small")
    parser.add_argument("--json", type=Path, help="also write the figures there")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device: CUDA is not available here (try --device cpu --quick)")
    q = args.quick
    weights = load_weights(default_cache_dir())
    cpu_model = load_model(weights, torch.device("cpu"))
    devices.set_up(cpu_model)
    model = cpu_model
    if device.type != "cpu":
        model = load_model(weights, device)
        devices.set_up(model)  # bf16 off: sections (2) and (4) switch it with bf16_autocast
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}")
    report: dict[str, object] = {"device": name, "torch": torch.__version__, "quick": q}

    print(
        f"(1) agreement with the CPU (tolerances: activations {ACTIVATION_TOLERANCE:g}, "
        f"gradients {GRADIENT_TOLERANCE:g}, runs {RUN_TOLERANCE:.0%})"
    )
    report["agreement"] = rows = agreement(model, cpu_model, 64 if q else 128, 8 if q else None)
    for row in rows:
        print(
            f"  {row['unit']:<17} activations {row['activations']:.1e} gradients "
            f"{row['input_gradients']:.1e}  plain {row['plain']['device']:.1f} / "
            f"{row['plain']['cpu']:.1f}  robust {row['robust']['device']:.1f} / "
            f"{row['robust']['cpu']:.1f}  {'ok' if row['ok'] else 'DIFFERENT'}"
        )

    print("(2) engine image-steps per second" + (" (64 px)" if q else " (224 px)"))
    report["throughput"] = throughput(
        model,
        ["block1_conv2", "block3_conv3"] if q else ["block1_conv2", "block3_conv3", "block5_conv2"],
        [1, 4] if q else [1, 8, 32, 64],
        64 if q else 224,
        3 if q else 20,
    )

    print("(3) continuous batching through the server (block3_conv1, one image per client)")
    report["batching"] = batching(
        args.device, [1, 4] if q else [1, 8, 32], 32 if q else 128, 4 if q else 48
    )

    report["projection"] = p = projection(
        model, 224, 48 if q else 224, 2 if q else 32, 2 if q else 6
    )
    hours = ", ".join(f"{k} {v:.2f} h" for k, v in p["hours"].items())
    extrapolated = f" (measured at {p['measured_at']} px)" if p["measured_at"] != p["size"] else ""
    print(
        f"(4) every channel of every conv layer: {p['images']} images at {p['size']} px, "
        f"{min(p['steps_per_image'].values())}-{max(p['steps_per_image'].values())} steps "
        f"each (the default's caps){extrapolated}: {hours}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
