"""Load test: N concurrent SDK clients for T seconds against a featviz server on loopback.

Each client (its own `featviz.AsyncClient`, so its own connection) runs small Maximize jobs back
to back, each on a random channel and seed so that no result cache answers them. Reported:
throughput (runs/min, image-steps/s), time to first preview and total latency (p50/p95/p99, as the
client sees them, queueing included), failures and SDK retries by status code, the server's active
runs once the load stops, and its RSS before and after (with --soak, sampled during the run).
Starts its own server (tests/serverproc.py) unless --target is given; stops by itself.

    python bench/load.py --clients 32 --duration 60                # overload: queue + retries
    python bench/load.py --clients 1 --duration 60                 # baseline rate
    python bench/load.py --clients 8 --duration 300 --soak 10      # memory growth
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import featviz

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serverproc import (  # the test helpers that run a real server and read it
    ServerError,
    metric_samples,
    rss_mb,
    start_server,
)


@dataclass
class Run:
    """What one client saw of one Maximize call (monotonic seconds)."""

    client: int
    started: float
    first_preview: float | None = None
    finished: float | None = None
    images: int = 0
    error: str | None = None
    retries: list[str] = field(default_factory=list)


@dataclass
class Server:
    """What the bench knows of the server: where its metrics are and which process it is."""

    target: str
    metrics_url: str | None
    pid: int | None

    def rss_mb(self) -> float | None:
        """Resident set size from /proc (Linux), in MiB; None when the process is unknown or has
        exited."""
        if self.pid is None:
            return None
        try:
            return rss_mb(self.pid)
        except ServerError:  # exited, not yet reaped: no VmRSS
            return None

    def metric(self, name: str) -> float | None:
        """One sample of the server's /metrics; None without a metrics URL or that sample."""
        return None if self.metrics_url is None else metric_samples(self.metrics_url).get(name)

    async def wait_idle(self, timeout: float) -> float | None:
        """Active runs once they drop to zero, or after `timeout` seconds (None: no metrics)."""
        deadline = time.monotonic() + timeout
        while (active := self.metric("featviz_active_runs")) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return active


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 by the nearest-rank method (no interpolation on small samples)."""
    ordered = sorted(values)
    return {
        f"p{q}": round(ordered[max(0, -(-q * len(ordered) // 100) - 1)], 3) if ordered else None
        for q in (50, 95, 99)
    }


async def one_run(
    client: featviz.AsyncClient, number: int, channel: int, args: argparse.Namespace
) -> Run:
    run = Run(number, time.monotonic())
    options = {"size": args.size, "steps": args.steps, "seed": random.randrange(2**31)}
    try:
        async for update in client.stream_maximize(args.layer, channel, **options):
            if isinstance(update, featviz.Progress) and run.first_preview is None:
                run.first_preview = time.monotonic()
            elif isinstance(update, featviz.Retrying):
                run.retries.append(update.error.code.name)
            elif isinstance(update, featviz.Finished):
                run.images = len(update.result.images)
        run.finished = time.monotonic()
    except featviz.FeatvizError as error:
        run.error = error.code.name
    return run


async def client_loop(
    number: int, target: str, channels: int, end: float, args: argparse.Namespace, runs: list[Run]
) -> None:
    """Runs back to back until `end`; the run in flight at `end` completes."""
    retries = featviz.RetryPolicy(retries=args.retries, max_backoff=5.0)
    async with featviz.AsyncClient(target, timeout=args.run_timeout, retries=retries) as client:
        while time.monotonic() < end:
            runs.append(await one_run(client, number, random.randrange(channels), args))


async def load(server: Server, args: argparse.Namespace, seconds: float) -> list[Run]:
    """`args.clients` clients for `seconds`; cancelled if they overrun by `args.run_timeout`."""
    async with featviz.AsyncClient(server.target) as client:
        channels = (await client.describe_model()).layer(args.layer).channels
    runs: list[Run] = []
    end = time.monotonic() + seconds
    tasks = [
        client_loop(number, server.target, channels, end, args, runs)
        for number in range(args.clients)
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + args.run_timeout + 10)
    return runs


async def sample_rss(server: Server, every: float, samples: dict[str, float]) -> None:
    """RSS every `every` seconds, keyed by seconds since the measurement began."""
    started = time.monotonic()
    while (rss := server.rss_mb()) is not None:
        samples[f"{time.monotonic() - started:.0f}s"] = round(rss, 1)
        await asyncio.sleep(every)


def summarize(runs: list[Run], wall: float, args: argparse.Namespace) -> dict[str, object]:
    done = [run for run in runs if run.finished is not None]
    image_steps = sum(run.images for run in done) * args.steps
    per_client = Counter(run.client for run in done)
    completed_by_client = [per_client[number] for number in range(args.clients)]
    return {
        "clients": args.clients,
        "seconds": round(wall, 1),
        "runs_completed": len(done),
        "runs_failed": len(runs) - len(done),
        "runs_per_minute": round(len(done) / wall * 60, 1),
        # Fairness: a client that was always turned away shows up here as 0.
        "runs_per_client": {"min": min(completed_by_client), "max": max(completed_by_client)},
        "image_steps_per_second": round(image_steps / wall, 1),
        "time_to_first_preview_s": percentiles(
            [run.first_preview - run.started for run in done if run.first_preview is not None]
        ),
        "latency_s": percentiles([run.finished - run.started for run in done if run.finished]),
        "failures_by_code": dict(Counter(run.error for run in runs if run.error)),
        "retries_by_code": dict(Counter(code for run in runs for code in run.retries)),
    }


async def measure(server: Server, args: argparse.Namespace) -> dict[str, object]:
    if args.warmup > 0:
        await load(server, args, args.warmup)
    rss_before = server.rss_mb()
    samples: dict[str, float] = {}
    sampler = asyncio.create_task(sample_rss(server, args.soak, samples)) if args.soak else None
    started = time.monotonic()
    runs = await load(server, args, args.duration)
    wall = time.monotonic() - started
    if sampler is not None:
        sampler.cancel()
    report = summarize(runs, wall, args)
    report["active_runs_after"] = await server.wait_idle(timeout=30)
    rss_after = server.rss_mb()
    report["rss_mb"] = {"before": rss_before, "after": rss_after}
    if rss_before is not None and rss_after is not None:
        report["rss_mb"]["growth"] = round(rss_after - rss_before, 1)  # type: ignore[index]
    if samples:
        report["rss_samples_mb"] = samples
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=60, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before measuring")
    parser.add_argument("--layer", default="block1_conv2")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--target", help="an already running server (default: start one)")
    parser.add_argument("--metrics-url", help="its /metrics URL, to check active runs drop to 0")
    parser.add_argument("--pid", type=int, help="its process id, for RSS (Linux /proc)")
    parser.add_argument(
        "--server-args", default="", help='flags for the started server, e.g. "--queue-size 64"'
    )
    parser.add_argument("--soak", type=float, help="sample the server's RSS every this many s")
    parser.add_argument("--retries", type=int, default=50, help="SDK retries per run")
    parser.add_argument("--run-timeout", type=float, default=300, help="deadline of one run (s)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--clients must be >= 1, --duration > 0 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    own = args.target is None
    started = (
        start_server("--metrics-port", "0", *shlex.split(args.server_args))
        if own
        else nullcontext()
    )
    with started as process:
        server = (
            Server(process.target, process.metrics_url, process.process.pid)
            if own
            else Server(args.target, args.metrics_url, args.pid)
        )
        report = asyncio.run(measure(server, args))
    report["config"] = {key: str(value) for key, value in vars(args).items()}
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
