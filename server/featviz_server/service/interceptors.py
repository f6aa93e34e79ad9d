"""Cross-cutting concerns of every RPC, kept out of the servicer: request ids, logs, error
hygiene and bearer-token authentication.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from .logs import REQUEST_ID

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
Behavior = Callable[..., Any]


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
    initial metadata, logs one line per RPC, and turns unexpected exceptions into INTERNAL with a
    generic message: the traceback goes to the log only.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = details.method
        return _replace_behavior(
            await continuation(details), lambda behavior: self._wrap(behavior, method)
        )

    @staticmethod
    def _wrap(behavior: Behavior, method: str) -> Behavior:
        async def begin(context: grpc.aio.ServicerContext) -> tuple[str, float]:
            request_id = _metadata(context, REQUEST_ID_KEY) or uuid.uuid4().hex
            REQUEST_ID.set(request_id)  # each RPC runs in its own task, hence its own context
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            return request_id, time.monotonic()

        async def fail(context: grpc.aio.ServicerContext, request_id: str) -> None:
            log.exception("internal error in %s", method)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal server error (request id {request_id})"
            )

        def end(context: grpc.aio.ServicerContext, started: float) -> None:
            code = context.code() or grpc.StatusCode.OK
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            fields = {
                "method": method,
                "code": name,
                "seconds": round(time.monotonic() - started, 3),
            }
            level = logging.DEBUG if method.startswith(HEALTH_PREFIX) else logging.INFO  # probes
            log.log(level, "rpc %s %s", method, name, extra={"fields": fields})

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                request_id, started = await begin(context)
                try:
                    async for response in behavior(request, context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception:
                    await fail(context, request_id)
                finally:
                    end(context, started)

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id, started = await begin(context)
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception:
                await fail(context, request_id)
            finally:
                end(context, started)

        return unary


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
