"""Latents to images: VAE decode with A1111's NaN guard, and A1111's float-to-uint8 conversion.

A half-precision VAE (fp16 above all; the SD1.x VAE is known for it) can overflow to inf/NaN on
some latents. As A1111 does with "automatically revert VAE to 32-bit floats": when a fp16/bf16
decode holds a NaN or inf anywhere, the image that holds one is decoded again in float32, with a
warning, instead of aborting the batch. `force_fp32` (`--no-half-vae`) decodes in float32 from the start.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from itertools import chain

import numpy as np
import torch
from PIL import Image
from sdbake.schemas.errors import ModelError

_HALF_DTYPES = (torch.float16, torch.bfloat16)


class VaeNanWarning(RuntimeWarning):
    """A half-precision VAE decode produced NaN/inf and was redone in float32."""


def _vae_dtype(vae: torch.nn.Module) -> torch.dtype:
    return next(vae.parameters()).dtype


@contextmanager
def _in_float32(vae: torch.nn.Module):
    """The VAE computes in float32 inside the block; its own tensors are put back after, untouched."""
    originals = [(tensor, tensor.data) for tensor in chain(vae.parameters(), vae.buffers())
                 if tensor.is_floating_point()]
    for tensor, data in originals:
        tensor.data = data.float()
    try:
        yield vae
    finally:
        for tensor, data in originals:
            tensor.data = data


def _unscale(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Undo the latent scaling the UNet works in (diffusers: z / scaling_factor + shift_factor)."""
    config = vae.config
    unscaled = latents / config.scaling_factor
    shift = getattr(config, "shift_factor", None)
    return unscaled + shift if shift else unscaled


def _decode(vae: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """One decode in the VAE's current dtype, output as float32 in [-1, 1] (NaN/inf left as is)."""
    parameter = next(vae.parameters())
    with torch.no_grad():
        return vae.decode(_unscale(vae, latent).to(parameter.device, parameter.dtype)).sample.float()


def _decode_float32(vae: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
    if _vae_dtype(vae) == torch.float32:
        return _decode(vae, latent)
    with _in_float32(vae):
        return _decode(vae, latent)


def decode_latents(vae: torch.nn.Module, latents: torch.Tensor, *,
                   force_fp32: bool = False) -> tuple[torch.Tensor, bool]:
    """(images [B,3,H,W] float32 in [0, 1], whether a NaN/inf forced a float32 retry)."""
    half_precision = _vae_dtype(vae) in _HALF_DTYPES and not force_fp32
    decoded, retried = [], False
    for index in range(latents.shape[0]):
        # As A1111 (decode_latent_batch): one image at a time, so the batch never changes an image
        # and a retry redoes exactly the image that failed.
        latent = latents[index:index + 1]
        image = _decode(vae, latent) if half_precision else _decode_float32(vae, latent)
        if half_precision and not torch.isfinite(image).all():
            warnings.warn(f"VAE decode in {_vae_dtype(vae)} produced NaN/inf in image {index} of "
                          f"the batch; decoded it again in float32", VaeNanWarning, stacklevel=2)
            image = _decode_float32(vae, latent)
            retried = True
        if not torch.isfinite(image).all():
            raise ModelError(f"the VAE decode produced NaN/inf in float32 (image {index} of the batch): "
                             "the VAE weights or the latents are broken")
        decoded.append(image)
    # As A1111: x in [-1, 1] -> clamp((x + 1) / 2, 0, 1)
    return torch.clamp((torch.cat(decoded) + 1.0) / 2.0, min=0.0, max=1.0), retried


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B,3,H,W] floats in [0, 1] -> RGB images, as A1111: 255 * x truncated to uint8 (no rounding)."""
    array = images.detach().float().clamp(0.0, 1.0).cpu().numpy()
    pixels = (255.0 * np.moveaxis(array, 1, 3)).astype(np.uint8)
    return [Image.fromarray(image) for image in pixels]          # HxWx3 uint8 -> RGB
