"""Prometheus metrics of one server, in their own registry (several servers may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..engine import RenderResult
from ..engine.measures import VIEWS

# Runs last from well under a second (cached, tiny) to many minutes (Lucid's 512 steps at 512 px).
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
RATE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# Robust / plain activation of an image: ~1 holds up under small shifts, well below 1 does not.
ROBUSTNESS_BUCKETS = (0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.5)
FRACTION_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class Metrics:
    """Runs started/finished, queue depth, active runs, durations and optimization speed."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.runs_started = Counter(
            "featviz_runs_started",
            "Runs that left the queue and began optimizing.",
            registry=registry,
        )
        self.runs_finished = Counter(
            "featviz_runs_finished",
            "Runs that ended, by status: ok, cancelled (the client left), deadline_exceeded (its "
            "deadline passed), error, unavailable (the server shut down).",
            ["status"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "featviz_queue_depth", "Runs waiting for a slot.", registry=registry
        )
        self.active_runs = Gauge(
            "featviz_active_runs",
            "Runs being optimized now (until they leave the batcher).",
            registry=registry,
        )
        self.run_duration = Histogram(
            "featviz_run_duration_seconds",
            "Optimization wall time of finished runs.",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.time_to_first_preview = Histogram(
            "featviz_time_to_first_preview_seconds",
            "From the request's admission (queueing included) to its first progress update.",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.steps = Counter(
            "featviz_optimization_steps",
            "Optimization steps done; rate() gives steps/s.",
            registry=registry,
        )
        self.steps_per_second = Histogram(
            "featviz_run_steps_per_second",
            "Optimization speed of finished runs.",
            buckets=RATE_BUCKETS,
            registry=registry,
        )
        self.batch_images = Histogram(
            "featviz_batch_images",
            "Images advanced together in one forward/backward (continuous batching).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )
        self.result_cache = Counter(
            "featviz_result_cache_lookups", "Result cache lookups, by result: hit or miss.",
            ["result"], registry=registry,
        )  # fmt: skip
        self.shared_runs = Counter(
            "featviz_shared_runs",
            "Requests that joined an identical run already in flight instead of starting one.",
            registry=registry,
        )
        self.result_cache_damaged = Counter(
            "featviz_result_cache_damaged",
            "Result cache files deleted as damaged instead of served (then recomputed), by what "
            "was wrong: unreadable, size, format, checksum, key, job, shape, facts, partial.",
            ["reason"],
            registry=registry,
        )
        self.progress_dropped = Counter(
            "featviz_progress_dropped",
            "Progress updates a client never got because it read slower than its run advanced "
            "(it gets the latest one instead).",
            registry=registry,
        )
        self.unread_streams = Counter(
            "featviz_unread_streams_ended",
            "Streams ended because the client read nothing for unread_result_timeout seconds "
            "after its run had finished (the result stays in the result cache).",
            registry=registry,
        )
        self.runs_stopped = Counter(
            "featviz_runs_stopped",
            "Finished runs, by why they stopped: step_limit or converged (early stop).",
            ["reason"],
            registry=registry,
        )
        self.image_robustness = Histogram(
            "featviz_image_robustness",
            f"Per computed image: its unit's mean over the fixed {VIEWS} views / its plain "
            "activation.",
            buckets=ROBUSTNESS_BUCKETS,
            registry=registry,
        )
        self.image_saturation = Histogram(
            "featviz_image_saturated_fraction",
            "Per computed image: share of its 8-bit values at 0 or 255.",
            buckets=FRACTION_BUCKETS,
            registry=registry,
        )
        self._http = None

    def observe_result(self, result: RenderResult) -> None:
        """A computed (not cached) result's quality figures."""
        self.runs_stopped.labels(result.stop_reason).inc()
        for plain, robust in zip(result.activation, result.robust_activation, strict=True):
            if plain > 0:
                self.image_robustness.observe(robust / plain)
        for share in result.saturated_fraction:
            self.image_saturation.observe(share)

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP in a daemon thread; returns the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
