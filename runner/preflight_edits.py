"""Intervene edits that could change nothing: an op whose extent (its own rect, a paste's `at` and the
pasted image's size) lies entirely outside the image or outside the stage's `rect`. At run time such
an op would be clipped to nothing and the edit silently lost, so `validate` refuses it. An op partly
outside is clipped (PIL draws and pastes only what falls inside), as the docs say.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from sdbake.schemas.stages import FillOp, InterveneParams, PasteOp

Problem = tuple[tuple[Any, ...], str]
Box = tuple[int, int, int, int]          # [x, y, width, height]


def _meets(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _image_size(path: Path) -> tuple[int, int] | None:
    """The pasted image's size from its header (None when unreadable: the file checks report that). PNG
    and GIF headers are read here, so that `validate` stays free of PIL for them."""
    try:
        with open(path, "rb") as file:
            head = file.read(24)
    except OSError:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head.startswith((b"GIF87a", b"GIF89a")):
        return struct.unpack("<HH", head[6:10])
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _extent(op, resolve) -> Box | None:
    """Where an op draws, or None when it draws over the whole image (adjust, blur, an edited file, a
    fill over a mask, which is resized to the image)."""
    if isinstance(op, FillOp) and op.rect and not op.mask:
        return tuple(op.rect)
    if isinstance(op, PasteOp):
        size = _image_size(resolve(op.image))
        return (op.at[0], op.at[1], *size) if size else None
    return None


def edit_problems(where: tuple, stage: InterveneParams, width: int, height: int, resolve) -> list[Problem]:
    """Problems of one intervene stage at a width x height image; `resolve(name)` finds a recipe file."""
    image: Box = (0, 0, width, height)
    if stage.rect and not _meets(tuple(stage.rect), image):
        return [(where + ("rect",), (f"the rect {stage.rect} lies entirely outside the {width}x{height} image: "
                                    "nothing can change"))]
    problems: list[Problem] = []
    for n, op in enumerate(stage.ops):
        extent = _extent(op, resolve)
        if extent is None:
            continue
        if not _meets(extent, image):
            outside = f"the {width}x{height} image"
        elif stage.rect and not _meets(extent, tuple(stage.rect)):
            outside = f"the stage's rect {stage.rect}"
        else:
            continue
        problems.append((where + ("ops", n), (f"the {op.op} op's extent {list(extent)} lies entirely outside "
                                             f"{outside}: it would change nothing")))
    return problems
