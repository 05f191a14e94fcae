"""Image files <-> tensors, and the VAE: what several stages share."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from sdbake.schemas.errors import InputFileError


def open_image(path: Path, what: str = "image") -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise InputFileError(f"{what} file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputFileError(f"{what} file is not a readable image: {path} ({err})") from None


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def mask_to_tensor(image: Image.Image) -> torch.Tensor:
    """(1, H, W) float32 in [0, 1]; white = 1."""
    array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy())[None]


# Above this many pixels the VAE works in tiles unless a stage says otherwise: a 2048x2048 decode
# in one piece needs several GB of activations.
AUTO_TILE_PIXELS = 1024 * 1024


@contextmanager
def vae_tiling(vae, tiled: bool | None, pixels: int):
    """diffusers' tiled VAE for the block when asked, or automatically for large images."""
    use = tiled if tiled is not None else pixels > AUTO_TILE_PIXELS
    if not use or getattr(vae, "use_tiling", False):
        yield
        return
    vae.enable_tiling()
    try:
        yield
    finally:
        vae.disable_tiling()


def vae_encode(vae, images: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> scaled latents, using the distribution's mean: deterministic."""
    pixels = images.to(device=vae.device, dtype=vae.dtype) * 2.0 - 1.0
    with torch.no_grad(), vae_tiling(vae, tiled, images.shape[-1] * images.shape[-2]):
        latents = vae.encode(pixels).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents.float() - shift) * vae.config.scaling_factor)


def vae_decode(vae, latents: torch.Tensor, warn=None, tiled: bool | None = None,
               scale_factor: int = 8, force_fp32: bool = False) -> tuple[torch.Tensor, bool]:
    """Scaled latents -> (B, 3, H, W) in [0, 1] on the CPU, with the fp32 retry on NaN (A1111)."""
    from sdbake.stages.output.decode import decode_latents
    pixels = latents.shape[-1] * latents.shape[-2] * scale_factor ** 2
    with torch.no_grad(), vae_tiling(vae, tiled, pixels):
        images, retried = decode_latents(vae, latents, force_fp32=force_fp32)
    if retried and warn:
        warn("the VAE produced NaN in half precision: that decode was redone in float32")
    return images.float().cpu(), retried
