"""The FeatureVisualizationService: proto in, validated domain objects to the scheduler, proto
out. Nothing else happens here (grpc's own examples keep servicers this thin).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, contextmanager, nullcontext
from typing import ParamSpec, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc

from ..config import Settings
from ..echo import bounded
from ..exemplars import EmptyCollection
from . import messages, validation
from .backend import Backend
from .interceptors import REQUEST_ID_KEY, deadline_passed
from .logs import REQUEST_ID
from .metrics import Metrics
from .scheduler import Event, Finished, Overloaded, Queued, ShuttingDown, TooLarge

log = logging.getLogger(__name__)

ONNX_CHUNK = 1 << 20  # 1 MiB
P = ParamSpec("P")
T = TypeVar("T")


class FeatureVisualizationServicer(pb_grpc.FeatureVisualizationServiceServicer):
    """Serves DescribeModel, Maximize, ExportOnnx and FindExemplars once `backend` is set (model
    loaded)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self.backend: Backend | None = None

    async def DescribeModel(
        self, request: pb.DescribeModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeModelResponse:
        backend = await self._ready(context)
        size = await _validated(context, validation.describe_size, request, self._settings)
        return messages.describe(backend.weights, backend.device, size, self._settings)

    async def Maximize(
        self, request: pb.MaximizeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.MaximizeResponse]:
        backend = await self._ready(context)
        plan = await _validated(context, validation.maximization, request, self._settings)
        run = backend.scheduler.run(plan.job, plan.preview_every, lambda: deadline_passed(context))
        try:
            async with aclosing(run) as events:
                async for event in events:
                    finished = isinstance(event, Finished)
                    for message in await asyncio.to_thread(_responses, event, plan):
                        with self._ended_if_unread(context) if finished else nullcontext():
                            yield message
        except Overloaded as error:
            await _abort_with_retry(context, str(error), error.retry_after)
        except ShuttingDown as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{error}; retry elsewhere")
        except TooLarge as error:  # no RetryInfo: not "not now"
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))

    async def ExportOnnx(
        self, request: pb.ExportOnnxRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportOnnxResponse]:
        backend = await self._ready(context)
        await _validated(context, validation.reject_unknown_fields, request)
        export = await backend.onnx_export()
        message = pb.ExportOnnxResponse(  # the first message also says what the file is
            total_bytes=export.size_bytes, sha256=export.sha256, file_name=export.path.name
        )
        with export.path.open("rb") as file:
            while chunk := await asyncio.to_thread(file.read, ONNX_CHUNK):
                message.data = chunk
                yield message
                message = pb.ExportOnnxResponse()

    async def FindExemplars(
        self, request: pb.FindExemplarsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FindExemplarsResponse]:
        backend = await self._ready(context)
        query = await _validated(context, validation.exemplar_query, request, self._settings)
        try:
            async with aclosing(backend.exemplars.find(query)) as events:
                async for event in events:
                    for message in await asyncio.to_thread(messages.exemplar_update, event):
                        yield message
        except EmptyCollection as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))

    @contextmanager
    def _ended_if_unread(self, context: grpc.aio.ServicerContext) -> Iterator[None]:
        """Within: a client that reads nothing for unread_result_timeout seconds is cut off."""
        timer = asyncio.get_running_loop().call_later(
            self._settings.unread_result_timeout,
            self._end_unread,
            context,
            asyncio.current_task(),
        )
        try:
            yield
        finally:
            timer.cancel()

    def _end_unread(
        self, context: grpc.aio.ServicerContext, handler: asyncio.Task[None] | None
    ) -> None:
        """End a stream whose client has read nothing for a while since its run finished: the
        status waits behind what the client has not read, and stopping the handler frees
        everything else now."""
        seconds = self._settings.unread_result_timeout
        cached = " (the result cache answers at once)" if self._settings.result_cache_mb else ""
        log.warning("ending a stream that is not read", extra={"fields": {"seconds": seconds}})
        self._metrics.unread_streams.inc()
        ending = asyncio.ensure_future(
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"nothing was read for {seconds:g} s after the run finished; ask again{cached}",
            )
        )
        ending.add_done_callback(lambda done: done.cancelled() or done.exception())
        if handler is not None:
            handler.cancel()

    async def _ready(self, context: grpc.aio.ServicerContext) -> Backend:
        if self.backend is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry in a few seconds"
            )
        return self.backend


def _responses(event: Event, plan: validation.Maximization) -> list[pb.MaximizeResponse]:
    """The messages for one scheduler event (PNG encoding: run in a thread)."""
    if isinstance(event, Queued):
        return [messages.queued(event.position)]
    if isinstance(event, Finished):
        return messages.final(event.result, plan.job, event.queued_seconds, cached=event.cached)
    return messages.progress(event, plan.job, plan.preview_size, plan.preview_images)


async def _validated(
    context: grpc.aio.ServicerContext, check: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """`check(*args)` (in a thread: it may decode a picture), or INVALID_ARGUMENT with a
    google.rpc.BadRequest naming the field."""
    try:
        return await asyncio.to_thread(check, *args, **kwargs)
    except validation.InvalidArgument as error:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=bounded(error.description)
        )
        await _abort(
            context,
            code_pb2.INVALID_ARGUMENT,
            str(error),
            error_details_pb2.BadRequest(field_violations=[violation]),
        )


async def _abort_with_retry(
    context: grpc.aio.ServicerContext, message: str, seconds: float
) -> None:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(seconds * 1e9))
    await _abort(
        context,
        code_pb2.RESOURCE_EXHAUSTED,
        message,
        error_details_pb2.RetryInfo(retry_delay=delay),
    )


async def _abort(
    context: grpc.aio.ServicerContext, code: int, message: str, detail: Message
) -> None:
    """Abort with a google.rpc.Status carrying one detail message (grpcio-status encoding)."""
    packed = any_pb2.Any()
    packed.Pack(detail)
    status = rpc_status.to_status(
        status_pb2.Status(code=code, message=bounded(message), details=[packed])
    )
    request_id = ((REQUEST_ID_KEY, REQUEST_ID.get() or ""),)  # abort replaces the trailers
    await context.abort(status.code, status.details, (*status.trailing_metadata, *request_id))
