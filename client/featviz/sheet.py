"""A contact sheet: many images in one labelled grid (Pillow only; numpy arrays welcome)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

MARGIN = 4  # pixels around every tile
LABEL_GAP = 2  # pixels between a tile and its label
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def _to_image(image: bytes | Any | Image.Image) -> Image.Image:
    """PNG/JPEG bytes, an (h, w, 3) uint8 array or a PIL image -> an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, bytes | bytearray):
        return Image.open(io.BytesIO(image)).convert("RGB")
    return Image.fromarray(image).convert("RGB")  # numpy: PIL reads the array interface


def contact_sheet(
    images: Sequence[bytes | Any | Image.Image],
    labels: Sequence[str],
    columns: int | None = None,
) -> Image.Image:
    """A grid of `images`, each with its label underneath, row by row.

    Tiles take the size of the largest image (smaller ones are centred); `columns` defaults to
    a square-ish grid.
    """
    if len(images) != len(labels):
        raise ValueError(f"labels: got {len(labels)} labels for {len(images)} images")
    if not images:
        raise ValueError("images: at least one image is required")
    if columns is not None and columns < 1:
        raise ValueError(f"columns: must be at least 1, got {columns}")
    tiles = [_to_image(image) for image in images]
    columns = min(columns or math.ceil(math.sqrt(len(tiles))), len(tiles))
    rows = math.ceil(len(tiles) / columns)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_height = max(measure.textbbox((0, 0), label or " ", font=font)[3] for label in labels)
    tile_width = max(tile.width for tile in tiles)
    tile_height = max(tile.height for tile in tiles)
    cell_width = tile_width + 2 * MARGIN
    cell_height = tile_height + LABEL_GAP + label_height + 2 * MARGIN
    sheet = Image.new("RGB", (columns * cell_width, rows * cell_height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        left = (index % columns) * cell_width + MARGIN
        top = (index // columns) * cell_height + MARGIN
        sheet.paste(
            tile, (left + (tile_width - tile.width) // 2, top + (tile_height - tile.height) // 2)
        )
        text_width = draw.textlength(label, font=font)
        draw.text(
            (left + (tile_width - text_width) / 2, top + tile_height + LABEL_GAP),
            label,
            fill=INK,
            font=font,
        )
    return sheet
