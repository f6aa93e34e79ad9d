"""The grpc.aio server: binds first, loads the model in the background (health NOT_SERVING until
then), serves featviz + health + reflection behind the interceptors, and drains on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from functools import partial

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc

from .. import exemplars
from ..config import Settings
from ..engine import device as devices
from ..model import VGG16, load_model
from ..weights import Weights, load_weights
from .backend import Backend
from .exemplar_search import ExemplarSearch
from .interceptors import BearerToken, RequestContext
from .memory import limit_malloc_arenas
from .metrics import Metrics
from .result_cache import ResultCache
from .scheduler import Scheduler
from .servicer import FeatureVisualizationServicer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FeatureVisualizationService"].full_name
Loader = Callable[[], tuple[Weights, VGG16]]


def load(settings: Settings) -> tuple[Weights, VGG16]:
    """The verified weights (fetched on first start if the cache is empty) and the model, its
    device set up for the engine."""
    weights = load_weights(settings.cache_dir, settings.weights_source)
    model = load_model(weights, settings.device)
    devices.set_up(model, bf16=settings.bf16)
    return weights, model


class Server:
    """One featviz server. `loader`, when given, loads the weights and model in place of `load`."""

    def __init__(self, settings: Settings, loader: Loader | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.servicer = FeatureVisualizationServicer(settings, self.metrics)
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.metrics_port: int | None = None
        self.loading: asyncio.Task[None] | None = None
        self._loader = loader or (lambda: load(settings))
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING); the model loads in the background."""
        interceptors: list[grpc.aio.ServerInterceptor] = [RequestContext()]
        if self.settings.token:
            interceptors.append(BearerToken(self.settings.token))
        # so_reuseport off: a second server on a taken port must fail, not share it silently.
        server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_FeatureVisualizationServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self._bind(server)
        await server.start()
        self._server = server
        if self.settings.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.settings.host, self.settings.metrics_port)
        self.loading = asyncio.create_task(self._load())
        return self.port

    def _bind(self, server: grpc.aio.Server) -> int:
        """Listen (with TLS when configured); the bound port, or OSError naming the address."""
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            if self.settings.tls_cert and self.settings.tls_key:
                credentials = grpc.ssl_server_credentials(
                    [(self.settings.tls_key.read_bytes(), self.settings.tls_cert.read_bytes())]
                )
                return server.add_secure_port(address, credentials)
            return server.add_insecure_port(address)
        except RuntimeError as error:  # grpc says only "Failed to bind"
            raise OSError(f"cannot listen on {address}: in use, or not this machine's") from error

    async def stop(self) -> None:
        """Drain: NOT_SERVING, no new runs, in-flight runs get the grace period, then stop."""
        await self.health.enter_graceful_shutdown()
        if self.loading is not None and not self.loading.done():
            self.loading.cancel()
        if (backend := self.servicer.backend) is not None:
            await backend.scheduler.drain(self.settings.drain_grace)
        if self._server is not None:
            await self._server.stop(grace=1.0)  # runs have ended; let their last messages out
        self.metrics.close()

    async def _load(self) -> None:
        weights, model = await asyncio.to_thread(self._loader)
        settings = self.settings
        cache = None
        if settings.result_cache_mb:
            directory = settings.result_cache_dir or settings.cache_dir / "results"
            computed_by = f"{weights.sha256} {devices.arithmetic(model)}"
            cache = ResultCache(
                directory, settings.result_cache_mb << 20, computed_by, self.metrics
            )
        scheduler = Scheduler(
            model,
            self.metrics,
            max_active=settings.max_concurrent_runs,
            queue_size=settings.queue_size,
            retry_after=settings.retry_after,
            max_batch_images=settings.max_batch_images,
            pending_updates=settings.stream_pending_updates,
            pending_bytes=settings.stream_pending_mb << 20,
            cache=cache,
        )
        photos = settings.exemplars_dir
        scanner = exemplars.Scanner(
            model,
            partial(exemplars.directory, photos) if photos else exemplars.bundled_photos,
            settings.exemplar_size,
            settings.cache_dir / "exemplars",
            weights.sha256,
        )
        self.servicer.backend = Backend(
            weights, model, scheduler, ExemplarSearch(scanner), settings.cache_dir
        )
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "model loaded; serving",
            extra={
                "fields": {
                    "device": self.servicer.backend.device,
                    "weights": weights.source,
                }
            },
        )

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)


async def serve(settings: Settings) -> None:
    """Run a server until SIGTERM/SIGINT, then drain. A failed model load stops it and raises."""
    limit_malloc_arenas()
    server = Server(settings)
    port = await server.start()
    if server.metrics_port is not None:
        print(f"featviz-server metrics on http://{settings.host}:{server.metrics_port}/metrics")
    print(f"featviz-server listening on {settings.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loading = server.loading
    assert loading is not None
    await asyncio.wait((asyncio.ensure_future(stop.wait()), loading), return_when="FIRST_COMPLETED")
    if loading.done() and (error := loading.exception()) is not None:
        await server.stop()
        raise error
    await stop.wait()
    log.info("shutting down", extra={"fields": {"grace_seconds": settings.drain_grace}})
    await server.stop()
