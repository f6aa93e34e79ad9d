"""Natural exemplars as a caller sees them: the crops of the server's photo collection that
excite each channel most (`top`) and least (`bottom`), assembled from a FindExemplars stream.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from featviz.errors import FeatvizError
from featviz.options import ChannelsLike, channel_list
from featviz.result import Retrying, _require
from featviz.v1 import featviz_pb2

if TYPE_CHECKING:
    import PIL.Image


@dataclass(frozen=True)
class Exemplar:
    """One crop (PNG, exactly the pixels the network saw) and the channel's mean on it,
    post-ReLU (`activation`) and before the ReLU (`pre_activation`); `source` names the photo
    and (`x`, `y`, `side`) the square cut from it, in the photo's pixels."""

    png: bytes = field(repr=False)  # printing a result shows its figures, not kilobytes
    width: int
    height: int
    activation: float
    pre_activation: float
    source: str
    x: int
    y: int
    side: int

    @classmethod
    def from_proto(cls, message: featviz_pb2.Exemplar) -> Exemplar:
        return cls(
            message.png,
            message.width,
            message.height,
            message.activation,
            message.pre_activation,
            message.source,
            message.x,
            message.y,
            message.side,
        )

    def to_pil(self) -> PIL.Image.Image:
        """The crop as an RGB `PIL.Image` (needs Pillow)."""
        return _require("PIL.Image").open(io.BytesIO(self.png)).convert("RGB")


@dataclass(frozen=True)
class ChannelExemplars:
    """One channel's top crops (highest activation first) and bottom crops (lowest
    pre-activation first)."""

    channel: int
    top: tuple[Exemplar, ...]
    bottom: tuple[Exemplar, ...]


@dataclass(frozen=True)
class ScanProgress:
    """The server scans its photo collection for the layer (first request for it only)."""

    photos_done: int
    photos_total: int
    skipped: int


@dataclass(frozen=True)
class Exemplars:
    """What `find_exemplars` returns: each requested channel's crops, and the collection.

    Example::

        found = client.find_exemplars("block5_conv2", [410, 411], count=4)
        best = found.channel(410).top[0]
        print(best.activation, best.source)
    """

    layer: str
    channels: tuple[ChannelExemplars, ...]
    collection: str
    photos: int
    skipped: int
    crops: int
    crop_size: int
    cached: bool

    def channel(self, channel: int) -> ChannelExemplars:
        """The exemplars of `channel` (KeyError if it was not requested)."""
        for found in self.channels:
            if found.channel == channel:
                return found
        raise KeyError(f"channel {channel} was not requested")


ExemplarUpdate = ScanProgress | Retrying


def exemplars_request(
    layer: str, channels: ChannelsLike, count: int
) -> featviz_pb2.FindExemplarsRequest:
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name such as 'block5_conv2', got {layer!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0 (0: the server's default), got {count!r}")
    return featviz_pb2.FindExemplarsRequest(
        layer=layer, channels=channel_list(channels), count=count
    )


class ExemplarsAssembler:
    """Turns FindExemplarsResponse messages (and retries) into updates and the result."""

    def __init__(self, layer: str) -> None:
        self._layer = layer
        self._channels: list[ChannelExemplars] = []
        self.result: Exemplars | None = None

    def feed(self, response: featviz_pb2.FindExemplarsResponse | Retrying) -> list[ExemplarUpdate]:
        if isinstance(response, Retrying):
            self._channels = []
            return [response]
        kind = response.WhichOneof("update")
        if kind == "progress":
            p = response.progress
            return [ScanProgress(p.photos_done, p.photos_total, p.skipped)]
        if kind == "channel":
            c = response.channel
            found = ChannelExemplars(
                c.channel,
                tuple(Exemplar.from_proto(e) for e in c.top),
                tuple(Exemplar.from_proto(e) for e in c.bottom),
            )
            if self._channels and self._channels[-1].channel == c.channel:  # the rest of it
                last = self._channels.pop()
                found = ChannelExemplars(
                    c.channel, last.top + found.top, last.bottom + found.bottom
                )
            self._channels.append(found)
        elif kind == "summary":
            s = response.summary
            self.result = Exemplars(
                self._layer,
                tuple(self._channels),
                s.collection,
                s.photos,
                s.skipped,
                s.crops,
                s.crop_size,
                s.cached,
            )
        return []

    def finish(self) -> Exemplars:
        if self.result is None:
            raise FeatvizError("the server ended FindExemplars without its summary")
        return self.result
