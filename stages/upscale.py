"""Upscalers for hires: latent interpolation (A1111's "Latent (...)" modes), pixel resamplers, and
upscaler models (loaded by the runner) run in tiles."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from sdbake.schemas.errors import ModelError
from sdbake.stages.images import to_pil

# As A1111 does for ESRGAN models (settings ESRGAN_tile, ESRGAN_tile_overlap): 192 px tiles, 8 px overlap.
TILE_PX = 192
TILE_OVERLAP_PX = 8
# As A1111's Upscaler.upscale: run the model again while the image is smaller than the target, at most 3 times.
MAX_PASSES = 3

# A1111's latent upscale modes (modules/shared_items.py latent_upscale_modes).
LATENT_MODES = {
    "latent-nearest-exact": ("nearest-exact", False), "latent-nearest": ("nearest", False),
    "latent-bilinear": ("bilinear", False), "latent-bicubic": ("bicubic", False),
    "latent-bilinear-antialiased": ("bilinear", True), "latent-bicubic-antialiased": ("bicubic", True),
}
A1111_NAMES = {
    "latent-nearest-exact": "Latent (nearest-exact)", "latent-nearest": "Latent (nearest)",
    "latent-bilinear": "Latent", "latent-bicubic": "Latent (bicubic)",
    "latent-bilinear-antialiased": "Latent (antialiased)",
    "latent-bicubic-antialiased": "Latent (bicubic antialiased)", "lanczos": "Lanczos", "nearest": "Nearest",
    "none": "None",
}
PIXEL_FILTERS = {"lanczos": Image.LANCZOS, "nearest": Image.NEAREST, "none": Image.LANCZOS}


def upscale_latent(latent: torch.Tensor, width: int, height: int, upscaler: str, factor: int) -> torch.Tensor:
    mode, antialias = LATENT_MODES[upscaler]
    size = (height // factor, width // factor)
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(latent, size=size, mode=mode, align_corners=False, antialias=antialias)
    return F.interpolate(latent, size=size, mode=mode)


def upscale_pil(image: Image.Image, width: int, height: int, upscaler: str) -> Image.Image:
    return image.resize((width, height), PIXEL_FILTERS[upscaler])


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one side: every `tile - overlap` px, the last one flush with the far edge."""
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


@torch.inference_mode()
def upscale_tiled(model, image: torch.Tensor, tile: int = TILE_PX,
                  overlap: int = TILE_OVERLAP_PX) -> torch.Tensor:
    """One model pass over (1, 3, H, W) in square tiles, overlaps averaged (as A1111's tiled upscale)."""
    _, channels, height, width = image.shape
    tile = min(tile, height, width)
    overlap = min(overlap, tile - 1)
    scale = model.scale
    result = torch.zeros((1, channels, height * scale, width * scale), dtype=torch.float32)
    weights = torch.zeros_like(result)
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            patch = image[..., top:top + tile, left:left + tile].to(model.device, model.dtype)
            out = model.forward(patch).float().cpu()
            if out.shape[-2:] != (tile * scale, tile * scale):
                raise ModelError(f"upscaler returned {tuple(out.shape[-2:])} for a {tile}x{tile} tile, "
                                 f"expected x{scale}", file=model.name)
            region = (..., slice(top * scale, (top + tile) * scale), slice(left * scale, (left + tile) * scale))
            result[region] += out
            weights[region] += 1
    return (result / weights).clamp(0.0, 1.0)


def model_passes(model, image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """As A1111's Upscaler.upscale: repeat the model until the image reaches the target (at most 3 passes)."""
    for _ in range(MAX_PASSES):
        size_before = image.shape[-2:]
        image = upscale_tiled(model, image)
        if (image.shape[-1] >= width and image.shape[-2] >= height) or image.shape[-2:] == size_before:
            break
    return image


def upscale_with_model(model, images: torch.Tensor, width: int, height: int) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> B pictures of exactly width x height, upscaled by a loaded upscaler model
    (`forward` maps (1, 3, h, w) in [0, 1] to (1, 3, h*scale, w*scale) on its `device` and `dtype`)."""
    pictures = to_pil(torch.cat([model_passes(model, image[None].float(), width, height) for image in images]))
    # As A1111: when the model's scale is not the wanted one, Lanczos to the exact size.
    return [picture if picture.size == (width, height) else picture.resize((width, height), Image.LANCZOS)
            for picture in pictures]
