"""Image files, masks and tensors <-> PIL pictures: what several stages share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from sdbake.schemas.errors import InputFileError
from sdbake.schemas.files import require_regular_file


def open_image(path: Path, what: str = "image") -> Image.Image:
    require_regular_file(path, f"{what} file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise InputFileError(f"{what} file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputFileError(f"{what} file is not a readable image: {path} ({err})") from None


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def mask_to_tensor(image: Image.Image) -> torch.Tensor:
    """(1, H, W) float32 in [0, 1]; white = 1."""
    array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy())[None]


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B,3,H,W] floats in [0, 1] -> RGB images, as A1111: 255 * x truncated to uint8 (no rounding)."""
    array = images.detach().float().clamp(0.0, 1.0).cpu().numpy()
    pixels = (255.0 * np.moveaxis(array, 1, 3)).astype(np.uint8)
    return [Image.fromarray(image) for image in pixels]          # HxWx3 uint8 -> RGB


def read_mask(path: Path, size: tuple[int, int], warn) -> Image.Image:
    """A mask file as an L image of `size` (resized, with a warning, when it is not)."""
    mask = open_image(path, "mask").convert("L")
    if mask.size != size:
        warn(f"mask {path.name} is {mask.size[0]}x{mask.size[1]}: resized to {size[0]}x{size[1]}")
        mask = mask.resize(size, Image.BILINEAR)
    return mask


def draw_rects(mask: Image.Image, rects) -> Image.Image:
    """White [x, y, w, h] rectangles on an L mask, in place; w x h pixels each (PIL's box is inclusive)."""
    draw = ImageDraw.Draw(mask)
    for x, y, w, h in rects:
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=255)
    return mask
