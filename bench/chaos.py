"""Hostile clients and a damaged disk against one featviz server on loopback, bounded in time.

    python bench/chaos.py slow-reader               # a slow reader: bounded memory, slows nobody
    python bench/chaos.py mix --duration 180        # normal, slow, abandoning and deadline
                                                    # clients while the result cache is damaged

slow-reader: two streams of 8 channels at 128 px with a preview every step, one never read and
one read every 10 s, for --steps steps; meanwhile another client's 20-step run is timed and
compared with its time on the idle server (measured just before). Reports the server's RSS before,
at its peak, at the end of the slow runs and once they are gone.

mix: for --duration seconds, normal clients repeat requests from a small pool (so that repeats
come from the result cache), slow readers read a message every few seconds and then leave,
abandoning clients cancel after a few messages, deadline clients run out of time, and a damager
spoils a random cache entry (empty, truncated, garbled, stray partial file) every few seconds.
Reports runs by kind and status, the server's metrics, its RSS over time, and whether every
normal client's final images are byte for byte those of a clean server (no cache) for the same
request.

Both start their own servers (tests/serverproc.py) and stop by themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serverproc import (  # the test helpers that run a real server and read it
    ServerProcess,
    final_pngs,
    metric_samples,
    rss_mb,
    start_server,
)

OTHER = pb.MaximizeRequest(layer="block2_conv1", channels=[7], size=64, steps=20, seed=1)
# The normal clients' pool: small runs, repeated, so that the cache answers (and can be damaged).
POOL = [
    pb.MaximizeRequest(layer=layer, channels=channels, size=size, steps=steps, seed=seed)
    for layer, channels, size, steps, seed in [
        ("block1_conv2", [14], 48, 20, 1),
        ("block1_conv2", [3, 9], 48, 20, 2),
        ("block2_conv1", [5], 64, 15, 3),
        ("block2_conv2", [40], 48, 15, 4),
        ("block3_conv1", [100], 48, 10, 5),
        ("block1_conv1", [0, 1, 2], 64, 25, 6),
    ]
]
# Long runs ask for the classic preset, which runs every step it is given (the default may stop
# early by itself).
LONG = {"layer": "block2_conv1", "size": 64, "steps": 400, "preview_every": 1,
        "preset": pb.PRESET_CLASSIC}  # fmt: skip


def metrics(server: ServerProcess, prefix: str = "featviz_") -> dict[str, float]:
    """Every non-zero featviz counter and gauge sample, by name with labels."""
    assert server.metrics_url is not None
    return {
        name: value
        for name, value in metric_samples(server.metrics_url).items()
        if name.startswith(prefix) and "_bucket" not in name and "_created" not in name and value
    }


# --- slow reader ---------------------------------------------------------------------------------


def timed_run(stub: pb_grpc.FeatureVisualizationServiceStub, request: pb.MaximizeRequest) -> float:
    started = time.monotonic()
    responses = list(stub.Maximize(request, timeout=600))
    assert responses[-1].HasField("summary")
    return time.monotonic() - started


def read_every(call: grpc.Call, seconds: float, stop: threading.Event, read: Counter) -> None:
    """Read `call`, one message every `seconds` (0: as fast as it comes), until `stop`."""
    try:
        for response in call:
            read[response.WhichOneof("update")] += 1
            if stop.wait(seconds):
                return
    except grpc.RpcError:
        pass


def while_running(
    server: ServerProcess, stub: pb_grpc.FeatureVisualizationServiceStub
) -> tuple[list[float], list[float]]:
    """Until the server's runs end: its RSS every second, and the other run timed every 5 s."""
    server.wait_metric("featviz_active_runs", 2, timeout=60)
    samples, busy = [], []
    started = time.monotonic()
    while server.metric("featviz_active_runs") > 0:
        samples.append(rss_mb(server.process.pid))
        if len(busy) < 3 and time.monotonic() - started > 5 * (len(busy) + 1):
            busy.append(round(timed_run(stub, OTHER), 2))
        time.sleep(1)
    return samples, busy


def slow_reader(args: argparse.Namespace) -> dict[str, object]:
    """The slow readers, then as a control the same two runs read as fast as they come."""
    slow = {"layer": args.layer, "channels": range(8), "size": 128, "steps": args.steps,
            "preview_every": 1, "preset": pb.PRESET_CLASSIC}  # fmt: skip
    report: dict[str, object] = {"slow_request": f"{args.layer}, 8 channels, 128 px, preview 1"}
    with (
        start_server("--metrics-port", "0", *args.server_args) as server,
        server.channel() as channel,
    ):
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        timed_run(stub, OTHER)  # warm-up
        idle = [round(timed_run(stub, OTHER), 2) for _ in range(3)]
        rss: dict[str, object] = {"before": rss_mb(server.process.pid)}
        phases = {}
        for phase, (first, second) in {"slow": (None, 10.0), "control": (0.0, 0.0)}.items():
            started = time.monotonic()
            calls = [
                stub.Maximize(pb.MaximizeRequest(**slow, seed=s), timeout=3600) for s in (1, 2)
            ]
            stop, read = threading.Event(), Counter()
            readers = [
                threading.Thread(target=read_every, args=(call, every, stop, read))
                for call, every in zip(calls, (first, second), strict=True)
                if every is not None  # the first slow stream is never read
            ]
            for reader in readers:
                reader.start()
            samples, busy = while_running(server, stub)
            end = rss_mb(server.process.pid)
            stop.set()
            for call in calls:
                call.cancel()
            for reader in readers:
                reader.join()
            phases[phase] = {
                "seconds": round(time.monotonic() - started, 1),
                "other_run_s": busy,
                "other_over_idle": round(max(busy) / min(idle), 2),
                "rss_peak_mb": max(samples),
                "rss_growth_mb": round(max(samples) - rss["before"], 1),
                "rss_end_of_runs_mb": end,
                "rss_samples_mb_every_s": samples,
                "messages_read": dict(read),
            }
            time.sleep(3)
            rss[f"after_{phase}"] = rss_mb(server.process.pid)
        report |= {
            "other_run_idle_s": idle,
            "rss_mb": rss,
            **phases,
            "metrics": metrics(server),
        }
    return report


# --- mix -----------------------------------------------------------------------------------------


class Mix:
    def __init__(self, server: ServerProcess, cache: Path, end: float) -> None:
        self.server = server
        self.cache = cache
        self.end = end
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.results: list[tuple[int, list[bytes]]] = []  # (pool index, final PNGs)
        self.damage: Counter[str] = Counter()

    async def call(self, kind: str, request: pb.MaximizeRequest, read, timeout=None) -> None:
        async with grpc.aio.insecure_channel(self.server.target) as channel:
            stub = pb_grpc.FeatureVisualizationServiceStub(channel)
            call = stub.Maximize(request, timeout=timeout)
            try:
                await read(call)
                self.outcomes[kind, "OK"] += 1
            except grpc.aio.AioRpcError as error:
                self.outcomes[kind, error.code().name] += 1
            except asyncio.CancelledError:
                raise
            finally:
                call.cancel()

    async def normal(self) -> None:
        while time.monotonic() < self.end:
            index = random.randrange(len(POOL))

            async def read(call, index=index) -> None:
                responses = [response async for response in call]
                self.results.append((index, final_pngs(responses)))

            await self.call("normal", POOL[index], read, timeout=300)

    async def slow(self) -> None:
        while time.monotonic() < self.end:
            request = pb.MaximizeRequest(channels=[random.randrange(64)], seed=9, **LONG)

            async def read(call) -> None:
                for _ in range(6):
                    await call.read()
                    await asyncio.sleep(4)

            await self.call("slow_reader", request, read)

    async def abandoning(self) -> None:
        while time.monotonic() < self.end:
            request = pb.MaximizeRequest(channels=[random.randrange(64)], seed=8, **LONG)

            async def read(call) -> None:
                for _ in range(random.randint(1, 5)):
                    await call.read()

            await self.call("abandoning", request, read)

    async def deadline(self) -> None:
        while time.monotonic() < self.end:
            request = pb.MaximizeRequest(channels=[random.randrange(64)], seed=7, **LONG)

            async def read(call) -> None:
                async for _ in call:
                    pass

            await self.call("deadline", request, read, timeout=random.uniform(1, 3))

    async def damager(self) -> None:
        kinds = ["empty", "truncated", "garbled", "partial"]
        while time.monotonic() < self.end:
            await asyncio.sleep(3)
            entries = list(self.cache.glob("*.result"))
            kind = random.choice(kinds)
            if kind == "partial":
                (self.cache / f"leftover{random.randrange(10**6)}.part").write_bytes(b"x" * 4096)
            elif entries:
                entry = random.choice(entries)
                data = entry.read_bytes()
                if not data:  # already emptied, not yet healed
                    continue
                if kind == "empty":
                    data = b""
                elif kind == "truncated":
                    data = data[: len(data) // 2]
                else:
                    position = random.randrange(len(data))
                    data = data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :]
                entry.write_bytes(data)
            else:
                continue
            self.damage[kind] += 1

    async def rss(self, every: float, samples: dict[str, float]) -> None:
        started = time.monotonic()
        while time.monotonic() < self.end:
            samples[f"{time.monotonic() - started:.0f}s"] = rss_mb(self.server.process.pid)
            await asyncio.sleep(every)


def mix(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="featviz-chaos-") as tmp:
        cache = Path(tmp)
        env = {"FEATVIZ_RESULT_CACHE_MB": "64", "FEATVIZ_RESULT_CACHE_DIR": str(cache)}
        with start_server("--metrics-port", "0", *args.server_args, env=env) as server:
            rss: dict[str, float] = {"0s_before": rss_mb(server.process.pid)}
            chaos = Mix(server, cache, time.monotonic() + args.duration)

            async def everything() -> None:
                tasks = [chaos.normal() for _ in range(args.normal)]
                tasks += [chaos.slow() for _ in range(args.slow)]
                tasks += [chaos.abandoning() for _ in range(args.abandoning)]
                tasks += [chaos.deadline() for _ in range(args.deadlines)]
                tasks += [chaos.damager(), chaos.rss(10, rss)]
                await asyncio.wait_for(asyncio.gather(*tasks), args.duration + 600)

            started = time.monotonic()
            asyncio.run(everything())
            wall = time.monotonic() - started
            server.wait_metric("featviz_active_runs", 0, timeout=120)
            time.sleep(2)
            rss["after"] = rss_mb(server.process.pid)
            server_metrics = metrics(server)
            alive = server.process.poll() is None
            tracebacks = server.log().count('"traceback"')
    reference: dict[int, list[bytes]] = {}
    with start_server() as clean, clean.channel() as channel:  # no result cache
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        for index in sorted({index for index, _ in chaos.results}):
            reference[index] = final_pngs(list(stub.Maximize(POOL[index], timeout=600)))
    mismatched = sum(pngs != reference[index] for index, pngs in chaos.results)
    by_kind: dict[str, dict[str, int]] = {}
    for (kind, status), count in sorted(chaos.outcomes.items()):
        by_kind.setdefault(kind, {})[status] = count
    return {
        "seconds": round(wall, 1),
        "calls_by_kind_and_status": by_kind,
        "normal_results_compared": len(chaos.results),
        "normal_results_matching_a_clean_server": len(chaos.results) - mismatched,
        "cache_damage_planted": dict(chaos.damage),
        "server_metrics": server_metrics,
        "server_alive": alive,
        "server_tracebacks_logged": tracebacks,
        "rss_mb": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["slow-reader", "mix"])
    parser.add_argument("--steps", type=int, default=500, help="slow-reader: steps of slow runs")
    parser.add_argument("--layer", default="block1_conv1", help="slow-reader: their layer")
    parser.add_argument("--duration", type=float, default=180, help="mix: seconds of chaos")
    parser.add_argument("--normal", type=int, default=3, help="mix: normal clients")
    parser.add_argument("--slow", type=int, default=2, help="mix: slow readers")
    parser.add_argument("--abandoning", type=int, default=2, help="mix: abandoning clients")
    parser.add_argument("--deadlines", type=int, default=1, help="mix: clients that time out")
    parser.add_argument(
        "--server-args", default="", help='flags for the server, e.g. "--max-concurrent-runs 8"'
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    args.server_args = shlex.split(args.server_args)
    report = slow_reader(args) if args.mode == "slow-reader" else mix(args)
    report["config"] = {key: str(value) for key, value in vars(args).items()}
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
