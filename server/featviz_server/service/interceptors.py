"""Cross-cutting concerns of every RPC, kept out of the servicer: request ids, logs, error
hygiene and bearer-token authentication.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ..echo import bounded
from .logs import REQUEST_ID

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
DEADLINE_SLACK = 0.05  # seconds: gRPC's timer and our clock may disagree this much
Behavior = Callable[..., Any]


def deadline_passed(context: grpc.aio.ServicerContext) -> bool:
    """Whether the RPC's deadline has come: a call that ends now ran out of time, rather than
    being cancelled by its client."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= DEADLINE_SLACK


def _replace_behavior(
    handler: grpc.RpcMethodHandler | None, wrap: Callable[[Behavior], Behavior]
) -> grpc.RpcMethodHandler | None:
    """The same handler with its behavior (whichever of the four kinds it is) wrapped."""
    if handler is None:
        return None
    kind = (
        ("stream" if handler.request_streaming else "unary")
        + "_"
        + ("stream" if handler.response_streaming else "unary")
    )
    return handler._replace(**{kind: wrap(getattr(handler, kind))})


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    return next((v for k, v in context.invocation_metadata() or () if k == key), None)


class RequestContext(grpc.aio.ServerInterceptor):
    """Tags each RPC with a request id (the client's `x-request-id` or a new one), echoes it in the
    initial and the trailing metadata, logs one line per RPC, answers undecodable requests with
    INVALID_ARGUMENT (grpc would say UNKNOWN, naming the exception), and turns unexpected
    exceptions into INTERNAL with a generic message: the traceback goes to the log only.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        decode: Callable[[bytes], Any] | None = None
        if not handler.request_streaming and handler.request_deserializer is not None:
            decode = handler.request_deserializer  # decoded in the scope below, not by grpc
            handler = handler._replace(request_deserializer=None)
        method = details.method
        return _replace_behavior(handler, lambda behavior: self._wrap(behavior, method, decode))

    @staticmethod
    def _wrap(behavior: Behavior, method: str, decode: Callable[[bytes], Any] | None) -> Behavior:
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _rpc_scope(context, method):
                    request = await _decoded(request, decode, context)
                    async for response in behavior(request, context):
                        yield response

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _rpc_scope(context, method):
                return await behavior(await _decoded(request, decode, context), context)

        return unary


async def _decoded(
    request: Any, decode: Callable[[bytes], Any] | None, context: grpc.aio.ServicerContext
) -> Any:
    if decode is None:
        return request
    try:
        return decode(request)
    except DecodeError as error:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, bounded(f"malformed request: {error}")
        )


@asynccontextmanager
async def _rpc_scope(context: grpc.aio.ServicerContext, method: str) -> AsyncIterator[None]:
    """Request id in, one log line out; an unexpected exception becomes a generic INTERNAL."""
    request_id = _metadata(context, REQUEST_ID_KEY) or uuid.uuid4().hex
    REQUEST_ID.set(request_id)  # each RPC runs in its own task, hence its own context
    # In both metadata: the initial metadata can be lost to a client when the call fails at once.
    await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
    started = time.monotonic()
    code = grpc.StatusCode.OK
    try:
        yield
    except grpc.aio.AbortError:
        code = context.code()
        raise
    except (asyncio.CancelledError, GeneratorExit):
        # The client cancelled or its deadline passed (GeneratorExit: while a write waited), or
        # the servicer ended the stream with a status of its own.
        code = context.code() or (
            grpc.StatusCode.DEADLINE_EXCEEDED
            if deadline_passed(context)
            else grpc.StatusCode.CANCELLED
        )
        raise
    except Exception:
        code = grpc.StatusCode.INTERNAL
        log.exception("internal error in %s", method)
        await context.abort(code, f"internal server error (request id {request_id})")
    finally:
        fields = {
            "method": method,
            "code": code.name,
            "seconds": round(time.monotonic() - started, 3),
        }
        level = logging.DEBUG if method.startswith(HEALTH_PREFIX) else logging.INFO  # probes
        log.log(level, "rpc %s %s", method, code.name, extra={"fields": fields})


class BearerToken(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every RPC but health checks (load balancers
    and orchestrators probe without credentials). A refused call never reaches the servicer.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if details.method.startswith(HEALTH_PREFIX):
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization")
        if given is not None and hmac.compare_digest(str(given).encode(), self._expected):
            return handler
        message = (
            "missing `authorization: Bearer <token>` metadata"
            if given is None
            else "invalid bearer token"
        )
        return _replace_behavior(handler, lambda _: _refusal(message))


def _refusal(message: str) -> Behavior:
    """A behavior that only refuses; a coroutine fits every RPC kind in grpc.aio."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return refuse
