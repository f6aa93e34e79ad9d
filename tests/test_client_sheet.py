"""The contact sheet: a labelled grid from PNG bytes, numpy arrays or PIL images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featviz.sheet import contact_sheet


def png(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_grid_of_mixed_inputs_keeps_order_and_labels() -> None:
    red = png((255, 0, 0))
    green = np.zeros((16, 16, 3), np.uint8)
    green[..., 1] = 255
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    sheet = contact_sheet([red, green, blue], ["ch 0", "ch 1", "ch 2"], columns=2)
    assert sheet.mode == "RGB"
    cell_width, cell_height = sheet.width // 2, sheet.height // 2
    assert cell_width >= 16 and cell_height > 16  # room for the label under each tile
    centre = (8 + 4, 8 + 4)  # MARGIN = 4
    assert sheet.getpixel(centre) == (255, 0, 0)
    assert sheet.getpixel((cell_width + centre[0], centre[1])) == (0, 255, 0)
    assert sheet.getpixel((centre[0], cell_height + centre[1])) == (0, 0, 255)
    label_band = np.asarray(sheet)[20:cell_height, :cell_width]
    assert (label_band < 128).any()  # dark label text below the first tile
    empty_cell = np.asarray(sheet)[cell_height:, cell_width:]
    assert (empty_cell == 255).all()


def test_default_columns_make_a_square_ish_grid() -> None:
    tiles = [png((i * 20, 0, 0), 8) for i in range(10)]
    sheet = contact_sheet(tiles, [str(i) for i in range(10)])
    one = contact_sheet(tiles[:1], ["0"])
    assert sheet.width == 4 * one.width and sheet.height == 3 * one.height


def test_smaller_images_are_centred_in_tiles_of_the_largest() -> None:
    sheet = contact_sheet([png((0, 0, 0), 20), png((0, 0, 0), 10)], ["big", "small"], columns=2)
    cell = sheet.width // 2
    assert sheet.getpixel((cell + 4 + 1, 4 + 1)) == (255, 255, 255)  # margin of the small one
    assert sheet.getpixel((cell + 4 + 10, 4 + 10)) == (0, 0, 0)


@pytest.mark.parametrize(
    ("images", "labels", "columns", "field"),
    [
        ([png((0, 0, 0))], ["a", "b"], None, "labels"),
        ([], [], None, "images"),
        ([png((0, 0, 0))], ["a"], 0, "columns"),
    ],
)
def test_bad_arguments_name_the_field(
    images: list[bytes], labels: list[str], columns: int | None, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        contact_sheet(images, labels, columns)
