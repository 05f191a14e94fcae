"""The X/Y grid: cells at the right offsets, labels drawn in the bands, deterministic pixels, metadata."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image, ImageChops
from sdbake.runner.sweep.grid import (
    BACKGROUND,
    MIN_FONT_SIZE,
    caption,
    draw_grid,
    encode_grid_png,
    grid_infotext,
    layout_grid,
    wrap,
)


def solid(color, size=(64, 64)) -> Image.Image:
    return Image.new("RGB", size, color)


COLORS = [[(200, 0, 0), (0, 200, 0), (0, 0, 200)], [(200, 200, 0), (0, 200, 200), (200, 0, 200)]]


def three_by_two(**kwargs) -> Image.Image:
    images = [[solid(c) for c in row] for row in COLORS]
    return draw_grid(images, ["1", "2", "3"], ["5.0", "7.0"], "seed", "cfg", **kwargs)


def band_has_ink(image: Image.Image, box) -> bool:
    crop = image.crop(box)
    return ImageChops.difference(crop, Image.new("RGB", crop.size, BACKGROUND)).getbbox() is not None


def test_cells_sit_after_the_label_bands():
    grid = three_by_two()
    texts_x = [caption("seed", v) for v in "123"]
    texts_y = [caption("cfg", v) for v in ("5.0", "7.0")]
    layout, _, _, _ = layout_grid([(64, 64)], 3, 2, texts_x, texts_y, None)
    assert grid.size == layout.size == (layout.left + 3 * 64, layout.top + 2 * 64)
    assert layout.left > 0 and layout.top > 0 and layout.z_band == 0
    for iy, row in enumerate(COLORS):
        for ix, color in enumerate(row):
            x, y = layout.cell_origin(ix, iy)
            assert grid.getpixel((x, y)) == color and grid.getpixel((x + 63, y + 63)) == color
            assert grid.getpixel((x + 32, y + 32)) == color


def test_labels_are_drawn_above_each_column_and_left_of_each_row():
    grid = three_by_two()
    layout, _, _, _ = layout_grid([(64, 64)], 3, 2, [caption("seed", v) for v in "123"],
                                  [caption("cfg", v) for v in ("5.0", "7.0")], None)
    for ix in range(3):                               # ink in each column's header, none in the corner
        x0, _ = layout.cell_origin(ix, 0)
        assert band_has_ink(grid, (x0, 0, x0 + 64, layout.top))
    for iy in range(2):
        _, y0 = layout.cell_origin(0, iy)
        assert band_has_ink(grid, (0, y0, layout.left, y0 + 64))
    assert not band_has_ink(grid, (0, 0, layout.left, layout.top))
    # different labels draw different pixels
    x1, _ = layout.cell_origin(0, 0)
    x2, _ = layout.cell_origin(1, 0)
    first = grid.crop((x1, 0, x1 + 64, layout.top)).tobytes()
    second = grid.crop((x2, 0, x2 + 64, layout.top)).tobytes()
    assert first != second


def test_text_is_legible_on_small_cells_and_scales_with_large_ones():
    small, _, _, _ = layout_grid([(64, 64)], 1, 1, ["a"], [""], None)
    large, _, _, _ = layout_grid([(1024, 1024)], 1, 1, ["a"], [""], None)
    assert small.font_size == MIN_FONT_SIZE
    assert large.font_size == (1024 + 1024) // 25         # A1111's size rule
    assert large.top > small.top


def test_long_labels_wrap_inside_their_column():
    lines = wrap("a very long prompt with many words in it", 12, 64)
    assert len(lines) > 1 and " ".join(lines) == "a very long prompt with many words in it"
    grid = draw_grid([[solid((1, 2, 3))]], ["a very long prompt with many words in it"], [""], "prompt")
    short = draw_grid([[solid((1, 2, 3))]], ["a"], [""], "prompt")
    assert grid.size[0] == short.size[0] == 64 and grid.size[1] > short.size[1]


def test_z_label_adds_a_title_band_and_one_axis_has_no_row_band():
    with_z = three_by_two(z_label="steps: 20")
    without = three_by_two()
    assert with_z.size[0] == without.size[0] and with_z.size[1] > without.size[1]
    band = with_z.size[1] - without.size[1]
    assert band_has_ink(with_z, (0, 0, with_z.size[0], band))
    single = draw_grid([[solid((9, 9, 9)), solid((8, 8, 8))]], ["a", "b"], [""], "x")
    assert single.getpixel((0, single.size[1] - 1)) == (9, 9, 9)        # no left band


def test_missing_cell_stays_white_and_sizes_take_the_largest_image():
    grid = draw_grid([[solid((5, 5, 5), (64, 64)), None], [solid((6, 6, 6), (96, 80)), solid((7, 7, 7))]],
                     ["a", "b"], ["c", "d"])
    layout, _, _, _ = layout_grid([(64, 64), (96, 80)], 2, 2, ["a", "b"], ["c", "d"], None)
    assert layout.cell_width == 96 and layout.cell_height == 80 and grid.size == layout.size
    x, y = layout.cell_origin(1, 0)
    assert grid.getpixel((x + 10, y + 10)) == BACKGROUND


def test_drawing_is_deterministic():
    assert three_by_two(z_label="z").tobytes() == three_by_two(z_label="z").tobytes()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        draw_grid([[solid((0, 0, 0))], []], ["a"], ["b", "c"])
    with pytest.raises(ValueError):
        draw_grid([[solid((0, 0, 0))]], ["a", "b"], ["c"])


def test_grid_png_carries_infotext_and_axes():
    infotext = grid_infotext("a cat\nSteps: 4, Seed: 1", [("X", "seed", ["1", "2"]), ("Y", "defaults.cfg", ["5.0"])],
                             None)
    assert infotext.startswith("a cat\nSteps: 4, Seed: 1, Script: X/Y/Z plot, X Type: seed, X Values: \"1, 2\"")
    assert "Y Type: defaults.cfg" in infotext
    data = encode_grid_png(three_by_two(), infotext, {"sweep": {"axes": [{"key": "seed", "values": [1, 2]}]}})
    with Image.open(io.BytesIO(data)) as image:
        assert image.text["parameters"] == infotext
        assert json.loads(image.text["sdbake"])["sweep"]["axes"][0]["values"] == [1, 2]
