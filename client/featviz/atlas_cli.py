"""The `featviz atlas` command: its flags, and running the atlas with a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import fields
from pathlib import Path

from featviz.aio import AsyncClient
from featviz.atlas import IN_FLIGHT, render_atlas
from featviz.atlas_site import Settings
from featviz.connection import TlsLike, split_targets
from featviz.options import OPTIONS
from featviz.progressbar import ProgressBar

DEFAULTS = Settings(
    size=128, steps=None, preset=None, seed=0, variants=3, diversity=0.0, exemplars=0
)


def add_atlas_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="DIR", required=True, help="the site's folder")
    parser.add_argument(
        "--layers", metavar="L1,L2", help="comma-separated layers (default: every conv layer)"
    )
    parser.add_argument(
        "--channels", metavar="CHANNELS", help="channels of every layer, e.g. 0-7 (default: all)"
    )
    d = DEFAULTS
    parser.add_argument("--size", type=int, default=d.size, help=f"image side (default {d.size})")
    parser.add_argument("--steps", type=int, help=OPTIONS["steps"].help)
    parser.add_argument("--preset", choices=OPTIONS["preset"].choices, help="recipe")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed (default {d.seed})")
    parser.add_argument(
        "--variants",
        type=int,
        default=d.variants,
        help=f"variants per channel: further seeds (default {d.variants})",
    )
    parser.add_argument(
        "--diversity",
        type=float,
        default=d.diversity,
        help="weight of Lucid's diversity penalty between the variants (default 0: none)",
    )
    parser.add_argument(
        "--exemplars",
        type=int,
        default=d.exemplars,
        help="top and bottom natural exemplars per channel (default 0: the server's number)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=IN_FLIGHT,
        metavar="N",
        help=f"runs kept in flight on each server (default {IN_FLIGHT})",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run_atlas(args: argparse.Namespace, targets: list[str], tls: TlsLike) -> int:
    """Render the atlas of `args` through every target (over TLS as `AsyncClient` takes it); the
    exit status."""
    settings = Settings(**{field.name: getattr(args, field.name) for field in fields(Settings)})
    layers = [name.strip() for name in args.layers.split(",")] if args.layers else None
    bar = ProgressBar("atlas", enabled=not args.quiet)

    async def main() -> tuple[int, int]:
        clients = [
            AsyncClient(target, args.token, tls, args.timeout, args.retries)
            for target in split_targets(targets)
        ]
        try:
            return await render_atlas(
                clients,
                Path(args.output),
                settings,
                layers=layers,
                channels=args.channels,
                in_flight=args.in_flight,
                report=lambda done, total, text: bar.update(int(done), int(total), text),
            )
        finally:
            for client in clients:
                await client.close()

    try:
        rendered, done = asyncio.run(main())
    finally:
        bar.close()
    index = Path(args.output) / "index.html"
    print(f"{index}  ({rendered} units rendered now, {done} already done)", file=sys.stderr)
    return 0
