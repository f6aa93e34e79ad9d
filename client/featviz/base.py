"""What the blocking and the asyncio client share: configuration, channel, deadlines, retries.

The two clients differ only in how they wait (threads vs. the event loop); everything that
decides something lives here or in the modules it imports.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

import grpc

from featviz.connection import DEFAULT_TARGET, TargetLike, TlsLike, call_metadata, open_channel
from featviz.errors import from_rpc_error
from featviz.result import Retrying
from featviz.retry import RetryPolicy
from featviz.v1 import featviz_pb2_grpc


class ClientBase:
    """Connection settings shared by `Client` and `AsyncClient` (see `Client` for the docs)."""

    _api: ModuleType  # grpc or grpc.aio

    def __init__(
        self,
        target: TargetLike = DEFAULT_TARGET,
        token: str | None = None,
        tls: TlsLike = None,
        timeout: float | None = None,
        retries: RetryPolicy | int = RetryPolicy(),  # noqa: B008 - frozen, safe to share
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
        self.target = target
        self.timeout = timeout
        self.retry = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        self._metadata = call_metadata(token)
        self._channel = self._open_channel(target, tls)
        self._stub = featviz_pb2_grpc.FeatureVisualizationServiceStub(self._channel)

    def _open_channel(self, target: TargetLike, tls: TlsLike) -> Any:
        return open_channel(self._api, target, tls)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self.target!r})"

    def _deadline(self) -> float | None:
        """When the whole call (all its attempts) must be over, on the monotonic clock."""
        return None if self.timeout is None else time.monotonic() + self.timeout

    @staticmethod
    def _time_left(deadline: float | None) -> float | None:
        return None if deadline is None else max(deadline - time.monotonic(), 0.0)

    def _retrying(
        self, rpc_error: grpc.RpcError, attempt: int, started: bool, deadline: float | None
    ) -> Retrying:
        """How to retry after this failed attempt; raises the typed error when giving up."""
        error = from_rpc_error(rpc_error)
        delay = self.retry.delay(attempt, error, self._time_left(deadline))
        if delay is None:
            raise error from None
        return Retrying(attempt, delay, error, restarted=started)
