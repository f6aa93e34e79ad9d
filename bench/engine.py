"""Engine benchmark: per-step overhead, time to quality, batching, and the quality bars.

    .venv/bin/python bench/engine.py            # the full-size figures (~10 min on 2 quiet cores)
    .venv/bin/python bench/engine.py --quick    # the same sections, smaller (~2 min)
    .venv/bin/python bench/engine.py --docs     # also write docs/*.png

(a) Overhead: wall time of the engine's steps (`advance` on a `fast` run: parameterization,
    transforms, forward, backward, optimizer) / the same number of bare forward+backward passes
    of the cut network on a batch of the same shape. The engine computes only each image's own
    channel of the target layer (engine/forward.py), so it is also divided by a bare pass that
    does the same: that second ratio is the engine's own cost (parameterization, warp, Adam,
    Python). They alternate step by step, so background load hits them alike. Then the robust
    measure of a final image (32 views), on the whole cut network / as the engine computes it
    (only the image's own channel of the target layer).
(b) Time to quality, for block1_conv2 ch 14 and block5_conv2 ch 410 at 128 px, seed 0: the
    `lucid` preset runs 512 steps; its final activation (mean of the channel on the final 8-bit
    image, no transforms) is the target. The `fast` preset then runs with growing step counts;
    the first that reaches the target gives the time. Also printed: the ratio of network input
    pixels processed (independent of machine load), and the `fast` preset's 256-step activation,
    which must be >= the unit's quality bar (BARS).
(c) Batching: all 64 channels of block1_conv2 as one job vs 64 one-channel jobs (images/s).
(d) Quality: all 64 channels of block1_conv2 (the default preset at its defaults) against the
    median activation of each channel over ~120 natural 128-px crops of scikit-image's photos;
    none may be blank.
(e) Natural photos under the same views (only with --sections e): for each unit that (b')
    compares, views ÷ plain of the 8 crops of scikit-image's photos (128 px, and 256 px scaled
    to 128) that excite it most.
--lucent adds, side by side in the same run:
(b') Lucent 0.1.8's `render_vis` at its defaults (512 steps) against the default preset, for the
    two canonical units and one channel of every other conv layer (~25 min; or the units `--units`
    names, e.g. `--sections a --lucent --units block3_conv1:41`): each one's time, robust
    activation (engine/measures.py, the same 32 views for both) and plain activation, views ÷
    plain and saturated share, and how much less time the default takes (when its robust
    activation reaches Lucent's).
(b'') block5_conv2 ch 410 (when compared): Lucent, Lucent without its upsampling to 224 px, and
    the lucid preset.
Lucent is installed aside, e.g.
    pip install --no-deps --target /tmp/lucent torch-lucent==0.1.8 kornia==0.4.1 decorator
    plus stubs for `torchvision.transforms.Normalize` and `IPython.display` (Lucent imports them;
    neither is used here), then PYTHONPATH=/tmp/lucent .venv/bin/python bench/engine.py --lucent
--sections picks among (a)-(e), e.g. `--sections a --lucent` for the overhead and Lucent only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from skimage import data

from featviz.sheet import contact_sheet
from featviz_server.engine import DEFAULT_PRESET, Job, Run, advance, recipe, render
from featviz_server.engine import device as devices
from featviz_server.engine.forward import activations, apply_layer
from featviz_server.engine.measures import robust_activation, saturated_fraction
from featviz_server.engine.objectives import Channel
from featviz_server.model import VGG16, load_model
from featviz_server.weights import default_cache_dir, load_weights

DOCS = Path(__file__).resolve().parent.parent / "docs"
# The canonical units and their quality bars: the `fast` preset's activation after 256 steps at
# 128 px must be >= the bar (section (b); bench/gpu.py and tests/test_engine_quality.py read it).
BARS = {("block1_conv2", 14): 230.0, ("block5_conv2", 410): 1600.0}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def natural_crops(size: int = 128) -> torch.Tensor:
    """Non-overlapping size-px crops of scikit-image's colour photos, (N, 3, size, size) [0, 1]."""
    photos = [getattr(data, name)() for name in PHOTOS] + [data.stereo_motorcycle()[0]]
    crops = [
        photo[y : y + size, x : x + size, :3]
        for photo in photos
        for y in range(0, photo.shape[0] - size + 1, size)
        for x in range(0, photo.shape[1] - size + 1, size)
    ]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def natural_activations(model: VGG16, layer: str, size: int = 128) -> torch.Tensor:
    """Mean activation of every channel of `layer` on every natural crop, (N, C)."""
    return torch.cat([model.cut(layer)(c).mean((2, 3)) for c in natural_crops(size).split(32)])


def unit_reader(
    model: VGG16, layer: str, channel: int, images: int = 1
) -> tuple[Callable[[torch.Tensor], dict[str, torch.Tensor]], Channel]:
    """A forward to `layer` as the engine reads it, and the channel's term for `images` images
    (for the measures; the forward ignores the image the measure names)."""
    network = model.cut(layer)
    term = Channel(layer, (channel,) * images)
    return (lambda batch, image=None: {layer: activations(network, batch)}), term


@torch.no_grad()
def natural_robustness(model: VGG16, chosen: tuple[tuple[str, int], ...], top: int = 8) -> None:
    """(e) Views ÷ plain of the natural crops that excite each unit most: what an image that
    shows the unit's feature, not a synthesized one, keeps under the measure's views. The crops:
    the 128 px ones, and 256 px ones scaled down to 128 px (antialiased)."""
    crops = torch.cat(
        [
            natural_crops(128),
            torch.nn.functional.interpolate(
                natural_crops(256), size=128, mode="bicubic", antialias=True
            ).clamp(0, 1),
        ]
    )
    pixels = (crops * 255).round().to(torch.uint8)
    for layer, channel in chosen:
        forward, term = unit_reader(model, layer, channel, top)
        plain = torch.cat([forward(c.float() / 255)[layer][:, channel] for c in pixels.split(32)])
        plain = plain.mean((1, 2))
        best = plain.argsort(descending=True)[:top]
        ratios = (robust_activation(forward, pixels[best], term) / plain[best]).numpy()
        print(
            f"  {layer} ch {channel}: the top {top} of {len(pixels)} crops, views / plain "
            f"{ratios.mean():.2f} (min {ratios.min():.2f}, max {ratios.max():.2f})",
            flush=True,
        )


def timed(work: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = work()
    return time.perf_counter() - start, value


# --- (a) overhead ------------------------------------------------------------------------------


def overhead(
    model: VGG16, layer: str, channels: tuple[int, ...], steps: int
) -> tuple[float, float]:
    """Engine time over a whole `fast` run divided by the same number of bare forward+backward
    passes (1) of the cut network (must be <= 1.15) and (2) of what the engine computes (only
    each image's own channel of the target layer): its own cost. The three alternate step by
    step, so that background load hits them alike."""
    job = Job(layer, channels, recipe("fast", steps=steps))
    run = Run(job, model)

    def full(batch: torch.Tensor) -> None:
        x = batch.clone().requires_grad_(True)
        Channel(layer, channels)({layer: run.network(x)}).sum().backward()

    def narrowed(batch: torch.Tensor) -> None:
        x = batch.clone().requires_grad_(True)
        out = apply_layer(run.target, activations(run.head, x), channels=run.target_channels)
        out.mean((1, 2, 3)).sum().backward()

    warm_up = Run(job, model)  # first calls allocate and pick kernels: not what is measured
    advance([warm_up])
    full(torch.rand(len(channels), 3, run.canvas, run.canvas))
    narrowed(torch.rand(len(channels), 3, run.canvas, run.canvas))
    engine_time = full_time = narrowed_time = 0.0
    while not run.done:
        batch = torch.rand(len(channels), 3, run.canvas, run.canvas)
        full_time += timed(lambda batch=batch: full(batch))[0]
        narrowed_time += timed(lambda batch=batch: narrowed(batch))[0]
        engine_time += timed(lambda: advance([run]))[0]
    return engine_time / full_time, engine_time / narrowed_time


def measure_speedup(model: VGG16, layer: str, channel: int, repeats: int) -> float:
    """The robust measure of one 128 px image on the whole cut network / the engine's, which
    computes only the image's own channel of the target layer; alternating, `repeats` times."""
    run = Run(Job(layer, (channel,), recipe(DEFAULT_PRESET, size=128)), model)
    pixels = (torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255).byte()
    whole_time = engine_time = 0.0
    for _ in range(repeats):
        whole_time += timed(
            lambda: robust_activation(lambda views, _: run.read(views), pixels, run.unit)
        )[0]
        engine_time += timed(lambda: run.robust_activation(pixels))[0]
    return whole_time / engine_time


# --- (b) time to quality -----------------------------------------------------------------------


@dataclass
class Timed:
    """One timed run of one preset."""

    steps: int
    seconds: float
    activation: float
    input_pixels: int  # network input pixels processed over the run (load-independent cost)
    image: np.ndarray


def timed_render(model: VGG16, layer: str, channel: int, preset: str, steps: int) -> Timed:
    """`render`'s loop, timed, counting the network input pixels of every step."""
    run = Run(Job(layer, (channel,), recipe(preset, steps=steps)), model)
    pixels, start = 0, time.perf_counter()
    while not run.done:
        pixels += run.canvas**2
        advance([run])
    seconds = time.perf_counter() - start
    result = run.result()
    return Timed(steps, seconds, result.activation[0], pixels, result.images[0])


def time_to_quality(
    model: VGG16, layer: str, channel: int, lucid_steps: int, grid: list[int], docs: bool
) -> None:
    lucid = timed_render(model, layer, channel, "lucid", lucid_steps)
    print(
        f"  {layer} ch {channel}: lucid preset {lucid_steps} steps -> {lucid.activation:.1f} "
        f"in {lucid.seconds:.1f} s",
        flush=True,
    )
    reach(model, layer, channel, lucid.activation, lucid.seconds, lucid.input_pixels, grid)
    full = timed_render(model, layer, channel, "fast", 256)
    bar = BARS[(layer, channel)]
    verdict = "ok" if full.activation >= bar else "BELOW THE BAR"
    print(f"    fast  256 steps -> {full.activation:7.1f} (bar >= {bar:.0f}: {verdict})")
    if docs:
        save_png(full.image, DOCS / f"{layer}_{channel}.png")


def reach(
    model: VGG16,
    layer: str,
    channel: int,
    target: float,
    seconds: float,
    input_pixels: int,
    grid: list[int],
) -> None:
    """Run `fast` with growing step counts until its activation reaches `target`."""
    for steps in grid:
        fast = timed_render(model, layer, channel, "fast", steps)
        reached = fast.activation >= target
        print(
            f"    fast {steps:4d} steps -> {fast.activation:7.1f} in {fast.seconds:6.1f} s"
            + (
                f"  reached: {seconds / fast.seconds:.1f}x less time, "
                f"{input_pixels / fast.input_pixels:.1f}x fewer input pixels (target >= 4x)"
                if reached
                else ""
            ),
            flush=True,
        )
        if reached:
            return
    print("    fast did not reach the target on this grid")


# --- (b') against Lucent, side by side -----------------------------------------------------------

# The canonical units, then one channel of every other conv layer that no test names (the last
# eight drawn with random.Random(9)).
LUCENT_UNITS = (
    ("block1_conv2", 14),
    ("block5_conv2", 410),
    ("block2_conv2", 61),
    ("block3_conv3", 123),
    ("block4_conv3", 301),
    ("block1_conv1", 59),
    ("block2_conv1", 47),
    ("block3_conv1", 41),
    ("block3_conv2", 20),
    ("block4_conv1", 432),
    ("block4_conv2", 172),
    ("block5_conv1", 135),
    ("block5_conv3", 298),
)


@dataclass
class Scored:
    """One image as users see it: its plain and robust activation and saturated share."""

    seconds: float
    plain: float
    robust: float
    saturated: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.robust / self.plain if self.plain > 0 else float("nan")


def score(model: VGG16, layer: str, channel: int, pixels: np.ndarray, seconds: float) -> Scored:
    """The engine's measures of an (H, W, 3) uint8 image, for an image that Lucent made."""
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    forward, term = unit_reader(model, layer, channel)
    with torch.no_grad():
        plain = term(forward(x.float() / 255.0)).item()
    robust = robust_activation(forward, x, term).item()
    return Scored(seconds, plain, robust, saturated_fraction(x).item())


def lucent_image(model: VGG16, layer: str, channel: int, steps: int, **options) -> Scored:
    """Lucent's `render_vis` with its defaults (a 128 px Fourier image, upsampled to 224 px for
    the network unless `fixed_image_size` says otherwise); `preprocess=False` because our model
    normalizes its input."""
    from lucent.optvis import render as lucent_render

    torch.manual_seed(0)
    np.random.seed(0)
    seconds, images = timed(
        lambda: lucent_render.render_vis(
            model,
            f"{layer}:{channel}",
            thresholds=(steps,),
            preprocess=False,
            progress=False,
            show_image=False,
            **options,
        )
    )
    pixels = np.round(images[-1][0] * 255).astype(np.uint8)  # type: ignore[index]
    return score(model, layer, channel, pixels, seconds)


def default_image(model: VGG16, layer: str, channel: int, preset: str = DEFAULT_PRESET, **kw):
    """A preset's image, timed as a user waits for it (the measures included)."""
    job = Job(layer, (channel,), recipe(preset, layer=layer, **kw))
    seconds, result = timed(lambda: render(model, job))
    note = f"{result.steps} steps, {result.stop_reason.replace('_', ' ')}"
    return Scored(
        seconds,
        result.activation[0],
        result.robust_activation[0],
        result.saturated_fraction[0],
        note,
    ), result.images[0]


def units(text: str) -> tuple[tuple[str, int], ...]:
    """Units written "block3_conv1:41,block2_conv2:100", as ((layer, channel), ...)."""
    pairs = [unit.partition(":") for unit in text.split(",")]
    return tuple((layer, int(channel)) for layer, _, channel in pairs)


def against_lucent(
    model: VGG16, chosen: tuple[tuple[str, int], ...], steps: int, docs: bool
) -> dict[tuple[str, int], Scored]:
    print(
        "| unit | Lucent: time, robust (plain) | default: time, robust (plain), steps "
        "| time ratio at >= Lucent's robust | views / plain: Lucent, default "
        "| saturated: Lucent, default |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    lucent = {}
    for layer, channel in chosen:
        theirs = lucent[(layer, channel)] = lucent_image(model, layer, channel, steps)
        ours, image = default_image(model, layer, channel)
        reached = (
            f"{theirs.seconds / ours.seconds:.1f}x less"
            if ours.robust >= theirs.robust
            else "not reached"
        )
        print(
            f"| {layer} ch {channel} | {theirs.seconds:.1f} s, {theirs.robust:.1f} "
            f"({theirs.plain:.1f}) | {ours.seconds:.1f} s, {ours.robust:.1f} ({ours.plain:.1f}), "
            f"{ours.note} | {reached} | {theirs.ratio:.2f}, {ours.ratio:.2f} "
            f"| {theirs.saturated:.1%}, {ours.saturated:.1%} |",
            flush=True,
        )
        if docs and (layer, channel) in BARS:
            save_png(image, DOCS / f"{layer}_{channel}.png")
    return lucent


def lucid_against_lucent(model: VGG16, steps: int, lucent: Scored) -> None:
    """Where the lucid preset and Lucent part: Lucent's upsampling to 224 px, without which it
    sees the 128 px image (plus its 12 px pad) at its own scale, as the lucid preset does."""
    layer, channel = "block5_conv2", 410
    rows = {
        "Lucent 0.1.8 defaults (network sees 224 px)": lucent,
        "Lucent, fixed_image_size=152 (no upsampling)": lucent_image(
            model, layer, channel, steps, fixed_image_size=152
        ),
        "lucid preset": default_image(model, layer, channel, "lucid", steps=steps)[0],
    }
    for name, row in rows.items():
        print(
            f"  {name:46s} plain {row.plain:7.1f}  robust {row.robust:7.1f}  "
            f"views/plain {row.ratio:.2f}  saturated {row.saturated:.1%}  {row.seconds:.1f} s",
            flush=True,
        )


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    print(f"    wrote {path}")


# --- (c) batching ------------------------------------------------------------------------------


def batching(model: VGG16, layer: str, steps: int) -> None:
    channels = tuple(range(64))
    fast = recipe("fast", steps=steps)
    one_job = timed(lambda: render(model, Job(layer, channels, fast)))[0]
    one_by_one = timed(lambda: [render(model, Job(layer, (c,), fast)) for c in channels])[0]
    print(
        f"  {layer}, 64 channels, {steps} steps: batched {64 / one_job:.2f} images/s, "
        f"one at a time {64 / one_by_one:.2f} images/s ({one_by_one / one_job:.2f}x)"
    )


# --- (d) quality -------------------------------------------------------------------------------


def quality(model: VGG16, layer: str, steps: int | None, docs: bool) -> None:
    """The default preset on 64 channels of `layer` (`steps`: its own cap for it when None)."""
    overrides = {} if steps is None else {"steps": steps}
    job = Job(layer, tuple(range(64)), recipe(DEFAULT_PRESET, layer=layer, **overrides))
    result = render(model, job)
    medians = natural_activations(model, layer).median(0).values[:64].numpy()
    activation = np.array(result.activation)
    spread = result.images.reshape(64, -1).std(1)
    above = int((activation > medians).sum())
    blank = int((spread < 2.0).sum())  # fewer than ~2 grey levels of variation
    print(
        f"  {layer}, 64 channels, default preset, {result.steps} steps: {above}/64 above the "
        "natural-crop median "
        f"(lowest ratio {np.min(activation / medians):.2f}), {blank} blank"
    )
    if docs:
        sheet = contact_sheet(list(result.images), [f"{c}" for c in range(64)], columns=8)
        sheet.save(DOCS / f"{layer}_sheet.png")
        print(f"    wrote {DOCS / f'{layer}_sheet.png'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, smaller grids")
    parser.add_argument("--docs", action="store_true", help="write the images into docs/")
    parser.add_argument(
        "--lucent", action="store_true", help="also compare with Lucent 0.1.8 (must be importable)"
    )
    parser.add_argument(
        "--sections", default="abcd", help="which of the sections (a)-(e) to run (default: a-d)"
    )
    parser.add_argument(
        "--units",
        type=units,
        default=LUCENT_UNITS,
        help="with --lucent, and for (e): the units to compare, e.g. "
        "block3_conv1:41,block2_conv2:100 (default: the two canonical units and one channel of "
        "every other conv layer)",
    )
    args = parser.parse_args(argv)
    model = load_model(load_weights(default_cache_dir()), torch.device("cpu"))
    devices.set_up(model)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    if "a" in args.sections:
        overheads(model, args.quick)
    lucid_steps = 128 if args.quick else 512
    if "b" in args.sections:
        print(
            f"(b) time to reach the lucid preset's {lucid_steps}-step activation (target >= 4x less"
            + (" at 512 steps; --quick only checks that this runs)" if args.quick else ")")
        )
        grid = [16, 24, 32, 48, 64] if args.quick else [64, 96, 128, 160, 192, 256]
        for layer, channel in BARS:
            time_to_quality(model, layer, channel, lucid_steps, grid, args.docs)
    if args.lucent:
        print(f"(b') Lucent 0.1.8 render_vis, {lucid_steps} steps, against the default preset")
        lucent = against_lucent(model, args.units, lucid_steps, args.docs)
        if ("block5_conv2", 410) in lucent:
            print("(b'') block5_conv2 ch 410: is the lucid preset Lucent?")
            lucid_against_lucent(model, lucid_steps, lucent[("block5_conv2", 410)])
    if "c" in args.sections:
        print("(c) 64 channels batched vs one at a time")
        batching(model, "block1_conv2", 8 if args.quick else 16)
    if "d" in args.sections:
        print("(d) quality of all 64 channels of block1_conv2")
        quality(model, "block1_conv2", 64 if args.quick else None, args.docs)
    if "e" in args.sections:
        print("(e) natural photos under the same views: the crops that excite each unit most")
        natural_robustness(model, args.units)


def overheads(model: VGG16, quick: bool) -> None:
    print(
        "(a) engine step / bare forward+backward of the cut network (target <= 1.15), "
        "and / a bare pass of only each image's channel of the target layer (what the engine runs)"
    )
    cases = [("block1_conv2", (14,), 256), ("block5_conv2", (410,), 64)]
    cases.append(("block1_conv2", tuple(range(64)), 32))
    for name, channels, steps in cases:
        steps = steps // 4 if quick else steps
        full, narrowed = overhead(model, name, channels, steps)
        print(
            f"  {name} x{len(channels)}, {steps} steps: {full:.3f} of the cut network, "
            f"{narrowed:.3f} of the narrowed one",
            flush=True,
        )
    print("  the robust measure of a 128 px image: on the whole cut network / the engine's")
    for name, channel in (("block1_conv2", 14), ("block3_conv1", 41), ("block5_conv2", 410)):
        speedup = measure_speedup(model, name, channel, 1 if quick else 3)
        print(f"  {name} ch {channel}: {speedup:.2f}x", flush=True)


if __name__ == "__main__":
    sys.exit(main())
