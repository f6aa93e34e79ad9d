"""The blocking client."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from featviz.base import ClientBase
from featviz.description import ModelDescription
from featviz.download import OnnxDownload, ProgressCallback
from featviz.exemplars import Exemplars, ExemplarsAssembler, ExemplarUpdate, exemplars_request
from featviz.options import ChannelsLike, maximize_request
from featviz.result import Finished, Result, RunAssembler, Update
from featviz.v1 import featviz_pb2

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from featviz.options import MaximizeOptions

T = TypeVar("T")


class Client(ClientBase):
    """A connection to a featviz server (or to several replicas of it).

    `target` is ``"host:port"``, any gRPC target URI (``"dns:///featviz-headless:50051"``), or
    a list / comma-separated string of replicas, balanced with gRPC's ``round_robin``. If a
    replica dies during a run, the run is resubmitted to another one; with the same seed it
    gives the same images. `token` is sent as ``authorization: Bearer <token>``; `tls` is None
    (plaintext), True (system CAs), a CA bundle path or `grpc.ChannelCredentials`. `timeout`
    bounds each method call in seconds, retries included. `retries` is a `RetryPolicy` or the
    number of retries for UNAVAILABLE and RESOURCE_EXHAUSTED that says "not now" (RetryPolicy).

    Example::

        import featviz

        with featviz.Client("localhost:50051") as client:
            result = client.maximize("block5_conv2", 410, size=64, steps=32)
            result.save("block5_conv2_410.png")
            print(result.activations[0])
    """

    _api = grpc

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (cancels calls still running)."""
        self._channel.close()

    def describe_model(self, input_size: int = 0) -> ModelDescription:
        """The network's layers (shapes at `input_size`; 0: the server's default),
        parameter counts and weights.

        Example::

            description = client.describe_model()
            print(description.total_parameters)  # 14714688
        """
        request = featviz_pb2.DescribeModelRequest(input_size=input_size)
        responses = self._attempts(self._stub.DescribeModel, request)
        return ModelDescription.from_proto(_last(responses))

    def export_onnx(
        self, path: str | os.PathLike[str], on_progress: ProgressCallback | None = None
    ) -> tuple[Path, str]:
        """Download the model's ONNX export to `path` (a file, or a directory to put the
        server's file name in), verify its sha256 and return (path, sha256).

        Example::

            path, sha256 = client.export_onnx("vgg16.onnx")
        """
        with OnnxDownload(path, on_progress) as download:
            for chunk in self._attempts(self._stub.ExportOnnx, featviz_pb2.ExportOnnxRequest()):
                download.feed(chunk)
            return download.finish()

    def maximize(
        self,
        layer: str | None = None,
        channels: ChannelsLike | None = None,
        *,
        on_progress: Callable[[Update], Any] | None = None,
        **options: Unpack[MaximizeOptions],
    ) -> Result:
        """Synthesize an image for each channel (int, list, or text like ``"0-63"``) of `layer`
        and wait for the result; or, with ``objective=`` an objective expression instead of a
        layer and channels, `images_per_channel` images that maximize it (and move to
        `interpolate_to` if given). `options` are named like the CLI's flags (`size`, `steps`,
        `preset`, `seed`, `objective`, `neuron`, ...); `on_progress` gets every `Queued`,
        `Progress` and `Retrying` update on the way.

        Example::

            result = client.maximize("block1_conv2", [14, 15], size=64, steps=32, seed=1)
            result.save("out/")
            both = featviz.channel("block4_conv3", 12) - 0.5 * featviz.channel("block3_conv3", 40)
            client.maximize(objective=both, size=64, steps=32).save("interaction.png")
        """
        result = None
        for update in self.stream_maximize(layer, channels, **options):
            if isinstance(update, Finished):
                result = update.result
            elif on_progress is not None:
                on_progress(update)
        assert result is not None  # the stream ends with Finished or raises
        return result

    def stream_maximize(
        self,
        layer: str | None = None,
        channels: ChannelsLike | None = None,
        **options: Unpack[MaximizeOptions],
    ) -> Iterator[Update]:
        """Like `maximize`, as an iterator of updates ending with `Finished(result)`. Closing
        it early cancels the run on the server: `updates.close()`, or dropping the last
        reference to it (a loop over the call itself does so when it breaks).

        Example::

            for update in client.stream_maximize("block5_conv2", 410, size=64, steps=16):
                if isinstance(update, featviz.Progress):
                    print(update.step, update.total_steps, update.objective)
                elif isinstance(update, featviz.Finished):
                    update.result.save("out.png")
        """
        request = maximize_request(layer, channels, options)  # bad options raise here, not later
        return self._updates(request)

    def find_exemplars(
        self,
        layer: str,
        channels: ChannelsLike,
        *,
        count: int = 0,
        on_progress: Callable[[ExemplarUpdate], Any] | None = None,
    ) -> Exemplars:
        """The `count` (0: the server's default) crops of the server's photo collection that
        excite each channel most and least. The first request for a layer makes the server scan
        its collection; `on_progress` gets its `ScanProgress` (and any `Retrying`).

        Example::

            found = client.find_exemplars("block5_conv2", 410, count=4)
            found.channel(410).top[0].to_pil().save("best.png")
        """
        assembler = ExemplarsAssembler(layer)
        request = exemplars_request(layer, channels, count)
        for response in self._attempts(self._stub.FindExemplars, request):
            for update in assembler.feed(response):
                if on_progress is not None:
                    on_progress(update)
        return assembler.finish()

    def _updates(self, request: featviz_pb2.MaximizeRequest) -> Iterator[Update]:
        assembler = RunAssembler(request.layer)
        for response in self._attempts(self._stub.Maximize, request):
            yield from assembler.feed(response)
        assembler.finish()

    def _attempts(self, method: Any, request: Any) -> Iterator[Any]:
        """The responses of `method(request)`, with a `Retrying` before each retry."""
        deadline = self._deadline()
        for attempt in itertools.count(1):
            started = False
            call = None
            try:
                call = method(request, timeout=self._time_left(deadline), metadata=self._metadata)
                unary = isinstance(method, grpc.UnaryUnaryMultiCallable)
                for response in [call] if unary else call:
                    started = True
                    yield response
                return
            except grpc.RpcError as rpc_error:
                retrying = self._retrying(rpc_error, attempt, started, deadline)
            finally:
                if isinstance(call, grpc.Call):
                    call.cancel()  # a no-op when finished; stops the run if the caller left
            yield retrying
            time.sleep(retrying.delay)


def _last(items: Iterable[T]) -> T:
    """The last item, e.g. the response after any `Retrying` markers."""
    *_, last = items
    return last
