"""The FeatureVisualizationService: proto in, validated domain objects to the scheduler, proto
out. Nothing else happens here (grpc's own examples keep servicers this thin).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import ParamSpec, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc

from ..config import Settings
from . import messages, validation
from .backend import Backend
from .interceptors import REQUEST_ID_KEY
from .logs import REQUEST_ID
from .scheduler import Event, Finished, Overloaded, Queued, ShuttingDown

ONNX_CHUNK = 1 << 20  # 1 MiB
P = ParamSpec("P")
T = TypeVar("T")


class FeatureVisualizationServicer(pb_grpc.FeatureVisualizationServiceServicer):
    """Serves DescribeModel, Maximize and ExportOnnx once `backend` is set (model loaded)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
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
        try:
            async with aclosing(backend.scheduler.run(plan.job, plan.preview_every)) as events:
                async for event in events:
                    for message in await asyncio.to_thread(_responses, event, plan):
                        yield message
        except Overloaded as error:
            await _abort_with_retry(context, str(error), error.retry_after)
        except ShuttingDown as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{error}; retry elsewhere")

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
            field=error.field, description=error.description
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
    status = rpc_status.to_status(status_pb2.Status(code=code, message=message, details=[packed]))
    request_id = ((REQUEST_ID_KEY, REQUEST_ID.get() or ""),)  # abort replaces the trailers
    await context.abort(status.code, status.details, (*status.trailing_metadata, *request_id))
