"""What the gRPC path costs over calling the engine in-process; how soon the first preview comes.

    .venv/bin/python bench/grpc_overhead.py [--layer block5_conv2 --channel 410 --size 64
                                             --steps 256 --repeats 3]

In-process: `engine.render(model, job)` in this process, in a worker thread as the server does
(on a loaded CPU, torch runs several times slower from the main thread than from a worker
thread, which would flatter the server; that is the engine's threading, not gRPC's overhead).
gRPC: a real `featviz-server` subprocess on loopback, a blocking client streaming the same job
with the default ~10 previews (PNG-encoded and sent), the final PNG and the summary; timed at the
client from call to last message. The two alternate so that background load affects both alike;
medians are reported. Time to first preview is measured at the client twice: with the default
preview interval (steps/10) and with `preview_every=1` (admission + one step + encoding +
transport). Last, the same request repeated against a server with a result cache: the latency of
a cached answer (final images and summary).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server import engine
from featviz_server.engine import device as devices
from featviz_server.model import load_model
from featviz_server.weights import load_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serverproc import start_server


def grpc_run(
    stub: pb_grpc.FeatureVisualizationServiceStub, request: pb.MaximizeRequest
) -> tuple[float | None, float, float]:
    """Seconds to the first progress message, to the end of the stream, and the server's own
    optimization time (RunSummary.duration_seconds: from the run's start to its result)."""
    started = time.perf_counter()
    first = None
    for response in stub.Maximize(request):
        if first is None and response.HasField("progress"):
            first = time.perf_counter() - started
    return first, time.perf_counter() - started, response.summary.duration_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", default="block5_conv2")
    parser.add_argument("--channel", type=int, default=410)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_model(load_weights(), "cpu")
    devices.set_up(model)
    recipe = engine.recipe(engine.DEFAULT_PRESET, size=args.size, steps=args.steps)
    job = engine.Job(args.layer, (args.channel,), recipe)
    request = pb.MaximizeRequest(
        layer=args.layer, channels=[args.channel], size=args.size, steps=args.steps
    )
    worker = ThreadPoolExecutor(1)

    def render_in_thread() -> float:
        started = time.perf_counter()
        worker.submit(engine.render, model, job).result()
        return time.perf_counter() - started

    render_in_thread()  # warm-up (first-call allocations), not timed

    local, remote, first_default, first_one, outside = [], [], [], [], []
    with start_server("--max-steps", str(args.steps)) as server, server.channel() as channel:
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        grpc_run(stub, request)  # warm-up of the server process
        for _ in range(args.repeats):
            local.append(render_in_thread())
            first, total, optimizing = grpc_run(stub, request)
            remote.append(total)
            outside.append(total - optimizing)
            first_default.append(first)
            quick = pb.MaximizeRequest(
                layer=args.layer, channels=[args.channel], size=args.size, steps=1,
                preview_every=1,
            )  # fmt: skip
            first_one.append(grpc_run(stub, quick)[0])

    with tempfile.TemporaryDirectory() as results:
        cache = (
            "--max-steps",
            str(args.steps),
            "--result-cache-dir",
            results,
            "--result-cache-mb",
            "64",
        )
        with start_server(*cache) as server, server.channel() as channel:
            stub = pb_grpc.FeatureVisualizationServiceStub(channel)
            grpc_run(stub, request)  # computes and stores the result
            cached = [grpc_run(stub, request)[1] for _ in range(20)]

    local_s, remote_s = statistics.median(local), statistics.median(remote)
    print(
        f"job: {args.layer} channel {args.channel}, {args.size} px, {args.steps} steps, "
        f"preset {engine.DEFAULT_PRESET}, cpu, {torch.get_num_threads()} torch threads"
    )
    print(f"in-process render:   median {local_s:.3f} s  (runs {[round(t, 3) for t in local]})")
    print(f"gRPC Maximize:       median {remote_s:.3f} s  (runs {[round(t, 3) for t in remote]})")
    pairs = [100 * (r - loc) / loc for loc, r in zip(local, remote, strict=True)]
    print(
        f"gRPC overhead:       {100 * (remote_s - local_s) / local_s:+.1f} % of the medians; "
        f"median of back-to-back pairs {statistics.median(pairs):+.1f} %"
    )
    print(
        f"outside the engine:  median {1000 * statistics.median(outside):.1f} ms per run = "
        f"{100 * statistics.median(outside) / remote_s:.2f} % (client wall time minus the "
        "server-reported optimization time: validation, queueing, final PNG, transport)"
    )
    print(f"time to 1st preview: median {statistics.median(first_default):.3f} s "
          f"(default interval {max(1, args.steps // 10)} steps)")  # fmt: skip
    print(f"time to 1st preview: median {statistics.median(first_one):.3f} s (preview_every=1)")
    print(
        f"cached repeat:       median {1000 * statistics.median(cached):.1f} ms, "
        f"max {1000 * max(cached):.1f} ms (20 repeats, whole stream)"
    )


if __name__ == "__main__":
    main()
