"""Pixel edits for `intervene`: paste, replace with an edited file, adjust colours, blur, fill."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageEnhance, ImageFilter
from sdbake.schemas.errors import InputFileError
from sdbake.schemas.stages import AdjustOp, BlurOp, FillOp, ImageOp, PasteOp
from sdbake.stages.images import draw_rects, open_image, read_mask


def _color(value) -> tuple[int, int, int]:
    if isinstance(value, list):
        if len(value) != 3 or not all(0 <= v <= 255 for v in value):
            raise InputFileError(f"fill colour {value} must be [r, g, b] with values 0-255")
        return tuple(value)
    try:
        return ImageColor.getrgb(value)[:3]
    except ValueError:
        raise InputFileError(f"unknown colour {value!r} (use '#rrggbb', a CSS colour name or [r, g, b])") from None


def _shift_hue(image: Image.Image, degrees: float) -> Image.Image:
    hsv = np.asarray(image.convert("HSV")).copy()
    shift = round(degrees / 360.0 * 256) % 256
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def apply_op(image: Image.Image, op, files: dict[str, Path], index: int, warn) -> Image.Image:
    """One op on an RGB image; `files` maps `ops.<index>.<field>` to resolved paths."""
    if isinstance(op, PasteOp):
        patch = open_image(files[f"ops.{index}.image"], "paste image").convert("RGBA")
        alpha = patch.getchannel("A")
        if op.mask:
            alpha = Image.fromarray(np.minimum(np.asarray(alpha), np.asarray(
                read_mask(files[f"ops.{index}.mask"], patch.size, warn))))
        if op.alpha < 1.0:
            alpha = alpha.point(lambda v: int(v * op.alpha))
        result = image.copy()
        result.paste(patch.convert("RGB"), tuple(op.at), alpha)
        return result
    if isinstance(op, ImageOp):
        edited = open_image(files[f"ops.{index}.image"], "edited image").convert("RGB")
        if edited.size != image.size:
            warn(f"edited image is {edited.size[0]}x{edited.size[1]}: resized to {image.size[0]}x{image.size[1]}")
            edited = edited.resize(image.size, Image.LANCZOS)
        return edited
    if isinstance(op, AdjustOp):
        result = ImageEnhance.Brightness(image).enhance(op.brightness)
        result = ImageEnhance.Contrast(result).enhance(op.contrast)
        result = ImageEnhance.Color(result).enhance(op.saturation)
        return _shift_hue(result, op.hue) if op.hue else result
    if isinstance(op, BlurOp):
        return image.filter(ImageFilter.GaussianBlur(op.radius))
    if isinstance(op, FillOp):
        colour = _color(op.color)
        if op.mask:
            region = read_mask(files[f"ops.{index}.mask"], image.size, warn)
        else:
            region = draw_rects(Image.new("L", image.size, 0), [op.rect]) if op.rect else \
                Image.new("L", image.size, 255)
        return Image.composite(Image.new("RGB", image.size, colour), image, region)
    raise TypeError(f"unknown op {op!r}")
