"""The asyncio client: `Client`'s methods as coroutines and async iterators."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from featviz.base import ClientBase
from featviz.connection import TargetLike, TlsLike
from featviz.description import ModelDescription
from featviz.download import OnnxDownload, ProgressCallback
from featviz.exemplars import Exemplars, ExemplarsAssembler, ExemplarUpdate, exemplars_request
from featviz.options import ChannelsLike, maximize_request
from featviz.result import Finished, Result, RunAssembler, Update
from featviz.v1 import featviz_pb2

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from featviz.options import MaximizeOptions


class AsyncClient(ClientBase):
    """`Client` for asyncio: same arguments, same methods, awaited. Create it inside the
    coroutine that uses it (its gRPC channel belongs to that event loop).

    Example::

        import asyncio
        import featviz

        async def main():
            async with featviz.AsyncClient("localhost:50051") as client:
                result = await client.maximize("block5_conv2", 410, size=64, steps=32)
                result.save("block5_conv2_410.png")

        asyncio.run(main())
    """

    _api = grpc.aio

    def _open_channel(self, target: TargetLike, tls: TlsLike) -> grpc.aio.Channel:
        try:
            asyncio.get_running_loop()  # a grpc.aio channel belongs to the loop it was made in
        except RuntimeError:
            raise RuntimeError(
                "create the AsyncClient inside a coroutine: async with featviz.AsyncClient(...)"
            ) from None
        return super()._open_channel(target, tls)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (cancels calls still running)."""
        await self._channel.close()

    async def describe_model(self, input_size: int = 0) -> ModelDescription:
        """See `Client.describe_model`.

        Example::

            description = await client.describe_model(input_size=128)
            print(description.layer("block5_conv2").output_shape)  # (8, 8, 512)
        """
        request = featviz_pb2.DescribeModelRequest(input_size=input_size)
        responses = [r async for r in self._attempts(self._stub.DescribeModel, request)]
        return ModelDescription.from_proto(responses[-1])  # after any Retrying markers

    async def export_onnx(
        self, path: str | os.PathLike[str], on_progress: ProgressCallback | None = None
    ) -> tuple[Path, str]:
        """See `Client.export_onnx`.

        Example::

            path, sha256 = await client.export_onnx("vgg16.onnx")
        """
        with OnnxDownload(path, on_progress) as download:
            request = featviz_pb2.ExportOnnxRequest()
            async for chunk in self._attempts(self._stub.ExportOnnx, request):
                download.feed(chunk)
            return download.finish()

    async def maximize(
        self,
        layer: str | None = None,
        channels: ChannelsLike | None = None,
        *,
        on_progress: Callable[[Update], Awaitable[Any] | Any] | None = None,
        **options: Unpack[MaximizeOptions],
    ) -> Result:
        """See `Client.maximize`; `on_progress` may also be a coroutine function.

        Example::

            result = await client.maximize("block1_conv2", 14, size=64, steps=32)
            print(result.activations)
        """
        result = None
        async for update in self.stream_maximize(layer, channels, **options):
            if isinstance(update, Finished):
                result = update.result
            elif on_progress is not None:
                outcome = on_progress(update)
                if inspect.isawaitable(outcome):
                    await outcome
        assert result is not None  # the stream ends with Finished or raises
        return result

    def stream_maximize(
        self,
        layer: str | None = None,
        channels: ChannelsLike | None = None,
        **options: Unpack[MaximizeOptions],
    ) -> AsyncIterator[Update]:
        """See `Client.stream_maximize`, as an async iterator; to cancel the run on leaving
        the loop early, close it (`await updates.aclose()`, or loop inside
        `contextlib.aclosing(...)`): an async generator left alone is closed only when it is
        garbage-collected.

        Example::

            async for update in client.stream_maximize("block5_conv2", 410, size=64, steps=16):
                print(type(update).__name__)
        """
        request = maximize_request(layer, channels, options)  # bad options raise here, not later
        return self._updates(request)

    async def find_exemplars(
        self,
        layer: str,
        channels: ChannelsLike,
        *,
        count: int = 0,
        on_progress: Callable[[ExemplarUpdate], Awaitable[Any] | Any] | None = None,
    ) -> Exemplars:
        """See `Client.find_exemplars`; `on_progress` may also be a coroutine function.

        Example::

            found = await client.find_exemplars("block1_conv2", [0, 1], count=4)
            print([e.activation for e in found.channel(1).top])
        """
        assembler = ExemplarsAssembler(layer)
        request = exemplars_request(layer, channels, count)
        async for response in self._attempts(self._stub.FindExemplars, request):
            for update in assembler.feed(response):
                if on_progress is not None and inspect.isawaitable(outcome := on_progress(update)):
                    await outcome
        return assembler.finish()

    async def _updates(self, request: featviz_pb2.MaximizeRequest) -> AsyncIterator[Update]:
        assembler = RunAssembler(request.layer)
        async for response in self._attempts(self._stub.Maximize, request):
            for update in assembler.feed(response):
                yield update
        assembler.finish()

    async def _attempts(self, method: Any, request: Any) -> AsyncIterator[Any]:
        """The responses of `method(request)`, with a `Retrying` before each retry."""
        deadline = self._deadline()
        for attempt in itertools.count(1):
            started = False
            call = method(request, timeout=self._time_left(deadline), metadata=self._metadata)
            try:
                if isinstance(method, grpc.aio.UnaryUnaryMultiCallable):
                    yield await call
                else:
                    async for response in call:
                        started = True
                        yield response
                return
            except grpc.RpcError as rpc_error:
                retrying = self._retrying(rpc_error, attempt, started, deadline)
            finally:
                call.cancel()  # a no-op when finished; stops the run if the caller left
            yield retrying
            await asyncio.sleep(retrying.delay)
