"""One pass of a photo collection through the network, every channel of every layer at once.

A scan for a layer runs each crop (crops.py) up to that layer in batches and, for every layer on
the way (conv and pool), keeps each channel's MAX_EXEMPLARS highest and lowest crops, with
    activation      the channel's mean over the crop, post-ReLU (what `Maximize` maximizes);
    pre_activation  the same before the ReLU (for conv layers; equal for pools).
Top crops rank by activation (ties: pre-activation), bottom crops by pre-activation, since a
post-ReLU mean bottoms out at 0 for many crops while the pre-activation still tells which
inhibit the unit most. Ties keep the earlier crop, so a scan's outcome is deterministic.

The result of each layer is stored under `cache_dir`, keyed by the weights, the collection's
fingerprint, the crop scheme and size: the first request for a layer pays the scan (and fills
the layers before it), later ones read a file. Photos that cannot be read are skipped and
counted, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..architecture import LAYERS_BY_NAME
from ..model import VGG16, ConvReLU
from ..weights import atomic_path
from .collection import Collection, EmptyCollection
from .crops import CROP_SCHEME, Crop, crop_boxes, cut, open_photo

log = logging.getLogger(__name__)

MAX_EXEMPLARS = 16  # kept per channel and side; a request asks for at most this many
BATCH = 16  # crops per forward pass
FORMAT = 1  # bump when the stored layout changes
_OPEN_PHOTOS = 8  # decoded photos kept for cutting the crops sent to users


@dataclass(frozen=True)
class ScanProgress:
    """Photos read so far (skipped ones included) of all, and how many could not be read."""

    photos_done: int
    photos_total: int
    skipped: int


@dataclass(frozen=True)
class Exemplar:
    """A crop and what one channel does on it."""

    crop: Crop
    activation: float
    pre_activation: float


@dataclass(frozen=True, eq=False)
class LayerExemplars:
    """Every channel's top and bottom crops of one layer, from one scan of one collection.

    `crops` rows are (source index, x, y, side); the top_*/bottom_* arrays are (channels, k):
    indices into `crops` and the activations there, best first.
    """

    layer: str
    sources: tuple[str, ...]
    crops: np.ndarray
    photos: int
    skipped: int
    arrays: dict[str, np.ndarray]

    def exemplars(self, channel: int, count: int) -> tuple[list[Exemplar], list[Exemplar]]:
        """The `count` top and bottom exemplars of `channel`, most extreme first."""
        return self._side("top", channel, count), self._side("bottom", channel, count)

    def _side(self, side: str, channel: int, count: int) -> list[Exemplar]:
        result = []
        for k in range(min(count, self.arrays[f"{side}_index"].shape[1])):
            source, x, y, length = (
                int(v) for v in self.crops[self.arrays[f"{side}_index"][channel, k]]
            )
            result.append(
                Exemplar(
                    Crop(self.sources[source], x, y, length),
                    float(self.arrays[f"{side}_activation"][channel, k]),
                    float(self.arrays[f"{side}_pre_activation"][channel, k]),
                )
            )
        return result


class _Extremes:
    """The running top (or bottom) MAX_EXEMPLARS of every channel, merged batch by batch."""

    def __init__(self, channels: int, top: bool) -> None:
        self.top = top
        self.index = torch.zeros(channels, 0, dtype=torch.int64)
        self.activation = torch.zeros(channels, 0)
        self.pre = torch.zeros(channels, 0)

    def merge(self, index: torch.Tensor, activation: torch.Tensor, pre: torch.Tensor) -> None:
        """Add a batch: `index` (b,) crop numbers, `activation` and `pre` (b, channels)."""
        channels = self.index.shape[0]
        index = torch.cat([self.index, index.expand(channels, -1)], dim=1)
        activation = torch.cat([self.activation, activation.T], dim=1)
        pre = torch.cat([self.pre, pre.T], dim=1)
        # Lexicographic order by two stable sorts: the tie-breaker first, then the main key.
        first, then = (pre, activation) if self.top else (activation, pre)
        order = torch.sort(first, dim=1, descending=self.top, stable=True).indices
        second = torch.gather(then, 1, order)
        order = torch.gather(
            order, 1, torch.sort(second, dim=1, descending=self.top, stable=True).indices
        )
        order = order[:, :MAX_EXEMPLARS]
        self.index = torch.gather(index, 1, order)
        self.activation = torch.gather(activation, 1, order)
        self.pre = torch.gather(pre, 1, order)

    def arrays(self, side: str) -> dict[str, np.ndarray]:
        return {
            f"{side}_index": self.index.numpy(),
            f"{side}_activation": self.activation.numpy(),
            f"{side}_pre_activation": self.pre.numpy(),
        }


class Scanner:
    """Scans `collection` with `model` at crops of `size` pixels; results cached on disk.

    Thread-safe: the collection is listed once, and one scan runs at a time (callers wanting a
    layer that is not cached yet wait for it); a cached layer and the crops' pixels are read
    without waiting for a scan.
    """

    def __init__(
        self,
        model: VGG16,
        collection: Callable[[], Collection],
        size: int,
        cache_dir: Path,
        weights_sha256: str,
    ) -> None:
        self._model = model
        self._collection_factory = collection
        self._collection: tuple[Collection, str] | None = None
        self.size = size
        self._cache_dir = cache_dir
        self._weights_sha256 = weights_sha256
        self._scanning = threading.Lock()  # one scan at a time
        self._listing = threading.Lock()  # one listing of the collection
        self._opening = threading.Lock()  # the open photos below
        self._photos: OrderedDict[str, Image.Image] = OrderedDict()

    def collection(self) -> tuple[Collection, str]:
        """The collection and its fingerprint, listed once (on first use)."""
        with self._listing:
            if self._collection is None:
                collection = self._collection_factory()
                self._collection = collection, collection.fingerprint
            return self._collection

    def is_cached(self, layer: str) -> bool:
        return self._path(layer).is_file()

    def layer(
        self, layer: str, progress: Callable[[ScanProgress], None] | None = None
    ) -> LayerExemplars:
        """The exemplars of every channel of `layer`: from the cache, else from a scan."""
        stored = self._load(layer)  # cache files appear whole (written aside, then renamed)
        if stored is not None:
            return stored
        with self._scanning:
            stored = self._load(layer)  # the scan this call waited for may have stored it
            if stored is not None:
                return stored
            scanned = self._scan(layer, progress or (lambda _: None))
            for result in scanned.values():
                self._store(result)
            return scanned[layer]

    def pixels(self, crop: Crop) -> np.ndarray:
        """The crop as scanned: (size, size, 3) uint8 RGB."""
        with self._opening:
            photo = self._photos.pop(crop.source, None)
            if photo is None:
                collection, _ = self.collection()
                path = next(s.path for s in collection.sources if s.name == crop.source)
                photo = open_photo(path)
            self._photos[crop.source] = photo
            while len(self._photos) > _OPEN_PHOTOS:
                self._photos.popitem(last=False)
        return cut(photo, crop.x, crop.y, crop.side, self.size)

    # --- scanning -------------------------------------------------------------------------------

    def _scan(
        self, layer: str, progress: Callable[[ScanProgress], None]
    ) -> dict[str, LayerExemplars]:
        collection, _ = self.collection()
        network = self._model.cut(layer)
        device = next(self._model.parameters()).device
        layers = [(name, module) for name, module in network.named_children()][1:]
        extremes = {
            name: (
                _Extremes(LAYERS_BY_NAME[name].channels, True),
                _Extremes(LAYERS_BY_NAME[name].channels, False),
            )
            for name, _ in layers
        }
        crops: list[tuple[int, int, int, int]] = []
        pending: list[np.ndarray] = []
        skipped = 0

        def flush() -> None:
            if not pending:
                return
            pixels = torch.from_numpy(np.stack(pending)).to(device)
            x = network.preprocess(pixels.permute(0, 3, 1, 2).float() / 255.0)
            index = torch.arange(len(crops) - len(pending), len(crops))
            for name, module in layers:
                if isinstance(module, ConvReLU):
                    y = module.conv(x)
                    pre = y.mean((2, 3))
                    x = torch.relu(y)
                    activation = x.mean((2, 3))
                else:
                    x = module(x)
                    activation = pre = x.mean((2, 3))
                top, bottom = extremes[name]
                top.merge(index, activation.float().cpu(), pre.float().cpu())
                bottom.merge(index, activation.float().cpu(), pre.float().cpu())
            pending.clear()

        total = len(collection.sources)
        with torch.inference_mode():
            for number, source in enumerate(collection.sources):
                try:
                    photo = open_photo(source.path)
                except Exception as error:  # any undecodable file: skipped, counted
                    log.warning("skipping unreadable photo %s: %s", source.name, error)
                    skipped += 1
                else:
                    for x0, y0, side in crop_boxes(*photo.size):
                        crops.append((number, x0, y0, side))
                        pending.append(cut(photo, x0, y0, side, self.size))
                        if len(pending) == BATCH:
                            flush()
                progress(ScanProgress(number + 1, total, skipped))
            flush()
        if not crops:
            raise EmptyCollection(
                f"no readable photo in the exemplar collection {collection.name} "
                f"({total} files, {skipped} unreadable)"
            )
        names = tuple(source.name for source in collection.sources)
        table = np.array(crops, dtype=np.int64)
        return {
            name: LayerExemplars(
                name, names, table, total, skipped, {**top.arrays("top"), **bottom.arrays("bottom")}
            )
            for name, (top, bottom) in extremes.items()
        }

    # --- the cache ------------------------------------------------------------------------------

    def _path(self, layer: str) -> Path:
        collection, fingerprint = self.collection()
        identity = {
            "format": FORMAT,
            "weights": self._weights_sha256,
            "collection": [collection.name, fingerprint],
            "crops": [CROP_SCHEME, self.size],
            "kept": MAX_EXEMPLARS,
            "layer": layer,
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self._cache_dir / f"{layer}-{key[:32]}.npz"

    def _load(self, layer: str) -> LayerExemplars | None:
        path = self._path(layer)
        try:
            with np.load(path) as stored:
                facts = json.loads(str(stored["facts"]))
                arrays = {
                    name: stored[name] for name in stored.files if name not in ("facts", "crops")
                }
                crops = stored["crops"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as error:
            log.warning("dropping damaged exemplar cache %s: %s", path.name, error)
            path.unlink(missing_ok=True)
            return None
        return LayerExemplars(
            layer, tuple(facts["sources"]), crops, facts["photos"], facts["skipped"], arrays
        )

    def _store(self, result: LayerExemplars) -> None:
        facts = {"sources": result.sources, "photos": result.photos, "skipped": result.skipped}
        with atomic_path(self._path(result.layer)) as partial, partial.open("wb") as file:
            np.savez(file, facts=np.array(json.dumps(facts)), crops=result.crops, **result.arrays)
