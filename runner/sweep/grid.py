"""A labelled X/Y grid of images, as A1111's X/Y/Z plot draws it, and its PNG with metadata.

Layout (as A1111's `draw_grid_annotations`): column labels in a band above the cells, row labels in a
band to their left, black text on white. The font size follows the cell size (A1111 uses
(width + height) // 25), with a floor so that labels stay legible on small images; a label too wide
for its column wraps at spaces. The font is Pillow's built-in scalable font
(`ImageFont.load_default(size=...)`), so nothing is downloaded and the same Pillow draws the same
pixels. A Z value, when there is one, is a title band above everything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
MIN_FONT_SIZE = 12


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes: cell (ix, iy) has its top-left corner at cell_origin(ix, iy)."""
    columns: int
    rows: int
    cell_width: int
    cell_height: int
    left: int                 # width of the row-label band
    top: int                  # height of the z band plus the column-label band
    z_band: int               # height of the z title band (0 without one)
    font_size: int

    @property
    def size(self) -> tuple[int, int]:
        return self.left + self.columns * self.cell_width, self.top + self.rows * self.cell_height

    def cell_origin(self, ix: int, iy: int) -> tuple[int, int]:
        return self.left + ix * self.cell_width, self.top + iy * self.cell_height


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_width(text: str, size: int) -> int:
    left, _, right, _ = font(size).getbbox(text)
    return right - left


def wrap(text: str, size: int, max_width: int) -> list[str]:
    """Lines of at most max_width pixels, broken at spaces (a single long word stays whole)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and _text_width(candidate, size) > max_width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _line_height(size: int) -> int:
    return size + size // 4


def _pad(size: int) -> int:
    return max(2, size // 2)


def caption(title: str, label: str) -> str:
    """What a header cell says: "cfg: 7.0" (A1111's "CFG Scale: 7"), or the bare label without a title."""
    return f"{title}: {label}" if title else label


def layout_grid(cell_sizes: list[tuple[int, int]], columns: int, rows: int, x_texts: list[str],
                y_texts: list[str], z_text: str | None) -> tuple[GridLayout, list[list[str]], list[list[str]],
                                                                list[str]]:
    """The layout and the wrapped lines of every label."""
    cell_width = max(w for w, _ in cell_sizes)
    cell_height = max(h for _, h in cell_sizes)
    size = max(MIN_FONT_SIZE, (cell_width + cell_height) // 25)
    pad, line = _pad(size), _line_height(size)
    x_lines = [wrap(text, size, cell_width - 2 * pad) for text in x_texts]
    y_limit = max(cell_width * 3 // 4, 6 * size)            # A1111 gives row labels 3/4 of a cell
    y_lines = [wrap(text, size, y_limit) for text in y_texts]
    has_x = any(t for t in x_texts)
    has_y = any(t for t in y_texts)
    x_band = (max(len(lines) for lines in x_lines) * line + 2 * pad) if has_x else 0
    left = (max(_text_width(l, size) for lines in y_lines for l in lines) + 2 * pad) if has_y else 0
    grid_width = left + columns * cell_width
    z_lines = wrap(z_text, size, grid_width - 2 * pad) if z_text else []
    z_band = len(z_lines) * line + 2 * pad if z_lines else 0
    layout = GridLayout(columns, rows, cell_width, cell_height, left, z_band + x_band, z_band, size)
    return layout, x_lines, y_lines, z_lines


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], center_x: float, center_y: float, size: int) -> None:
    line = _line_height(size)
    first_y = center_y - (len(lines) - 1) * line / 2
    for n, text in enumerate(lines):
        draw.text((center_x, first_y + n * line), text, fill=TEXT_COLOR, font=font(size), anchor="mm")


def draw_grid(images: list[list[Image.Image | None]], x_labels: list[str], y_labels: list[str],
              x_title: str = "", y_title: str = "", z_label: str | None = None) -> Image.Image:
    """images[iy][ix] in a grid with "title: label" headers; a missing image leaves its cell white."""
    rows, columns = len(images), len(images[0]) if images else 0
    if rows == 0 or columns == 0 or any(len(row) != columns for row in images):
        raise ValueError("draw_grid needs a non-empty rectangle of images")
    if len(x_labels) != columns or len(y_labels) != rows:
        raise ValueError(f"{columns} columns x {rows} rows need as many labels "
                         f"(got {len(x_labels)} and {len(y_labels)})")
    sizes = [im.size for row in images for im in row if im is not None] or [(64, 64)]
    x_texts = [caption(x_title, str(label)) for label in x_labels]
    y_texts = [caption(y_title, str(label)) for label in y_labels]
    layout, x_lines, y_lines, z_lines = layout_grid(sizes, columns, rows, x_texts, y_texts, z_label)
    grid = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(grid)
    size = layout.font_size
    if z_lines:
        _draw_lines(draw, z_lines, layout.size[0] / 2, layout.z_band / 2, size)
    if layout.top > layout.z_band:
        band_middle = (layout.z_band + layout.top) / 2
        for ix, lines in enumerate(x_lines):
            _draw_lines(draw, lines, layout.left + (ix + 0.5) * layout.cell_width, band_middle, size)
    if layout.left:
        for iy, lines in enumerate(y_lines):
            _draw_lines(draw, lines, layout.left / 2, layout.top + (iy + 0.5) * layout.cell_height, size)
    for iy, row in enumerate(images):
        for ix, image in enumerate(row):
            if image is not None:
                grid.paste(image.convert("RGB"), layout.cell_origin(ix, iy))
    return grid


def grid_infotext(base_infotext: str | None, axes: list[tuple[str, str, list[str]]], z_value: str | None) -> str:
    """The first cell's infotext with the axes appended, as A1111 writes "X Type: ..., X Values: ..."."""
    from sdbake.stages.output.infotext import quote
    fields = ["Script: X/Y/Z plot"]
    for name, key, labels in axes:
        fields.append(f"{name} Type: {quote(key)}")
        fields.append(f"{name} Values: {quote(', '.join(labels))}")
    if z_value is not None:
        fields.append(f"Z Value: {quote(z_value)}")
    extra = ", ".join(fields)
    # the parameters line is the infotext's last line: the script's fields continue it
    return f"{base_infotext}, {extra}" if base_infotext else extra


def encode_grid_png(grid: Image.Image, infotext: str, axes_document: dict) -> bytes:
    """PNG bytes carrying the infotext (`parameters`) and an sdbake JSON listing the axes."""
    from sdbake.stages.output.metadata import encode_image
    # keys keep their order: the matrix's key order is the X, Y, Z order
    sdbake_json = json.dumps(axes_document, ensure_ascii=False, separators=(",", ":"))
    return encode_image(grid, "png", infotext, sdbake_json)
