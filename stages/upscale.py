"""Upscalers for hires: latent interpolation (A1111's "Latent (...)" modes) and pixel resamplers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

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
}
PIXEL_FILTERS = {"lanczos": Image.LANCZOS, "nearest": Image.NEAREST}


def upscale_latent(latent: torch.Tensor, width: int, height: int, upscaler: str, factor: int) -> torch.Tensor:
    mode, antialias = LATENT_MODES[upscaler]
    size = (height // factor, width // factor)
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(latent, size=size, mode=mode, align_corners=False, antialias=antialias)
    return F.interpolate(latent, size=size, mode=mode)


def upscale_pil(image: Image.Image, width: int, height: int, upscaler: str) -> Image.Image:
    return image.resize((width, height), PIXEL_FILTERS[upscaler])
