"""Image files <-> tensors, and the VAE: what several stages share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from schemas.errors import InputFileError


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


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> 8-bit RGB, as A1111 converts (255 * x, truncated)."""
    from stages.output.decode import to_pil
    return to_pil(image[None])[0]


def vae_encode(vae, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> scaled latents, using the distribution's mean: deterministic."""
    pixels = images.to(device=vae.device, dtype=vae.dtype) * 2.0 - 1.0
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents.float() - shift) * vae.config.scaling_factor)


def vae_decode(vae, latents: torch.Tensor, warn=None) -> tuple[torch.Tensor, bool]:
    """Scaled latents -> (B, 3, H, W) in [0, 1] on the CPU, with the fp32 retry on NaN (A1111)."""
    from stages.output.decode import decode_latents
    with torch.no_grad():
        images, retried = decode_latents(vae, latents)
    if retried and warn:
        warn("the VAE produced NaN in half precision: that decode was redone in float32")
    return images.float().cpu(), retried
