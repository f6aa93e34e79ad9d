"""Which crops of a photo are scanned, and how one is cut: squares at three scales (the photo's
shorter side, a half and a quarter of it), side by side, the last of each row and column flush
with the photo's edge, each resized to `size` pixels. The same `cut` serves the scan and the
crops sent to users, so a crop's PNG holds exactly the pixels that were scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SCALES = (1.0, 0.5, 0.25)
MIN_SIDE = 32  # crops smaller than this (in photo pixels) are too blurry once resized
RESAMPLING = Image.Resampling.BICUBIC
# Names the scheme in cache keys: change it whenever SCALES, MIN_SIDE, RESAMPLING or the layout
# of crop_boxes change.
CROP_SCHEME = "squares-1-1/2-1/4-tiled-bicubic-v1"


@dataclass(frozen=True)
class Crop:
    """A square of a photo: its top-left corner and side, in the photo's pixels."""

    source: str
    x: int
    y: int
    side: int


def crop_boxes(width: int, height: int) -> list[tuple[int, int, int]]:
    """(x, y, side) of every crop of a width x height photo, scale by scale, row by row."""
    boxes = []
    for scale in SCALES:
        side = round(min(width, height) * scale)
        if side < MIN_SIDE:
            continue
        for y in _starts(height, side):
            boxes += [(x, y, side) for x in _starts(width, side)]
    return boxes


def _starts(length: int, side: int) -> list[int]:
    starts = list(range(0, length - side + 1, side))
    if starts[-1] != length - side:
        starts.append(length - side)
    return starts


def cut(photo: Image.Image, x: int, y: int, side: int, size: int) -> np.ndarray:
    """The crop as a (size, size, 3) uint8 RGB array."""
    box = (x, y, x + side, y + side)
    return np.array(photo.resize((size, size), RESAMPLING, box=box))


def open_photo(path: object) -> Image.Image:
    """The photo as an RGB image, fully decoded (errors surface here, not later)."""
    with Image.open(path) as image:  # type: ignore[arg-type]
        return image.convert("RGB")
