"""Atlas throughput: channels (three runs each: image, variants, negative) per hour for one
layer at the atlas' defaults, through one server, through two servers on loopback, and through
one server with continuous batching off (--max-batch-images 1), side by side in one run.

    .venv/bin/python bench/atlas.py                              # block1_conv2, all 64 channels
    .venv/bin/python bench/atlas.py --channels 0-3 --steps 64    # a bounded run (~5 min, 2 cores)

Each configuration starts its own servers (tests/serverproc.py; result cache off), warms the
exemplar cache of the layer (a one-off scan, not part of the rate), renders the atlas into a
fresh folder and times it. Also printed: the mean images per forward/backward that the batcher
chose (featviz_batch_images from /metrics). The two servers run on one machine and share its
CPU cores (or its GPU), so they show the cost of splitting them, not the gain of a second device.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import featviz
from featviz.atlas import IN_FLIGHT, KINDS, render_atlas
from featviz.atlas_cli import DEFAULTS
from featviz.atlas_site import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serverproc import ServerProcess, start_server  # the test helper that runs a real server

CONFIGURATIONS = {
    "one server": (1, ()),
    "two servers": (2, ()),
    "one server, no batching": (1, ("--max-batch-images", "1")),
}


def mean_batch(servers: list[ServerProcess]) -> float:
    images = sum(s.metric("featviz_batch_images_sum", 0.0) for s in servers)
    passes = sum(s.metric("featviz_batch_images_count", 0.0) for s in servers)
    return images / passes if passes else 0.0


async def render(
    targets: list[str], root: Path, settings: Settings, args: argparse.Namespace
) -> int:
    clients = [featviz.AsyncClient(target, timeout=None) for target in targets]
    try:
        rendered, _ = await render_atlas(
            clients, root, settings, layers=[args.layer], channels=args.channels,
            in_flight=args.in_flight,
        )  # fmt: skip
    finally:
        for client in clients:
            await client.close()
    return rendered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", default="block1_conv2")
    parser.add_argument("--channels", help="e.g. 0-3 (default: every channel of the layer)")
    parser.add_argument("--size", type=int, default=DEFAULTS.size)
    parser.add_argument("--steps", type=int, help="default: the preset's step cap")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    args = parser.parse_args()
    settings = dataclasses.replace(DEFAULTS, size=args.size, steps=args.steps)
    server_args = ("--max-size", str(max(512, args.size)), "--metrics-port", "0")
    print(
        f"{args.layer} channels {args.channels or 'all'}, {args.size} px, "
        f"{args.steps or 'the preset'} steps, {settings.variants} variants + image + negative "
        f"per channel, {args.in_flight} runs in flight per server"
    )
    rates = {}
    for name, (count, extra) in CONFIGURATIONS.items():
        with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            servers = [
                stack.enter_context(start_server(*server_args, *extra)) for _ in range(count)
            ]
            for server in servers:  # the exemplar scan is a one-off per layer: warm it
                with featviz.Client(server.target) as client:
                    client.find_exemplars(args.layer, 0, count=1)
            started = time.perf_counter()
            rendered = asyncio.run(render([s.target for s in servers], Path(tmp), settings, args))
            seconds = time.perf_counter() - started
            channels = rendered // len(KINDS)
            rates[name] = channels / seconds * 3600
            print(
                f"{name:<26} {channels} channels in {seconds:6.1f} s = "
                f"{rates[name]:7.1f} channels/hour   (mean batch {mean_batch(servers):.2f} images)",
                flush=True,
            )
    one = rates["one server"]
    print(f"two servers / one server:            {rates['two servers'] / one:.2f}x")
    print(f"continuous batching (on / off):      {one / rates['one server, no batching']:.2f}x")


if __name__ == "__main__":
    main()
