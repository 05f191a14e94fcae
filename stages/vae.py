"""The VAE, for every stage: pixels <-> latents, tiled for large images, with A1111's NaN guard.

Every encode and decode takes one VaeOptions, so each honours tiling and `--no-half-vae` alike.
A half-precision VAE (fp16 above all; the SD1.x VAE is known for it) can overflow to inf/NaN on
some latents. As A1111 does with "automatically revert VAE to 32-bit floats": when a fp16/bf16
decode holds a NaN or inf anywhere, the image that holds one is decoded again in float32, with a
warning, instead of aborting the batch. `force_fp32` (`--no-half-vae`) decodes in float32 from the start.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from itertools import chain

import torch
from sdbake.schemas.errors import ModelError

_HALF_DTYPES = (torch.float16, torch.bfloat16)
# Above this many pixels the VAE works in tiles unless a stage says otherwise: a 2048x2048 decode
# in one piece needs several GB of activations.
AUTO_TILE_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class VaeOptions:
    """How a stage runs the VAE: the run's `--no-half-vae` and the image's tiling choice."""
    tiled: bool | None = None     # None: tile automatically above AUTO_TILE_PIXELS
    fp32: bool = False            # --no-half-vae: compute in float32 even when the model is half


def vae_options(state, ctx, tiled: bool | None = None) -> VaeOptions:
    """The options for a state's image: its tiling (unless `tiled` overrides it) and the run's fp32 flag."""
    return VaeOptions(tiled=state.vae_tiled if tiled is None else tiled, fp32=ctx.vae_fp32)


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


def vae_encode(model, images: torch.Tensor, options: VaeOptions) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> scaled latents (float32), using the distribution's mean: deterministic."""
    vae = model.vae
    fp32 = options.fp32 and _vae_dtype(vae) in _HALF_DTYPES
    parameter = next(vae.parameters())
    pixels = images.to(device=parameter.device, dtype=torch.float32 if fp32 else parameter.dtype) * 2.0 - 1.0
    with torch.no_grad(), _in_float32(vae) if fp32 else nullcontext(), \
            vae_tiling(vae, options.tiled, images.shape[-1] * images.shape[-2]):
        latents = vae.encode(pixels).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents.float() - shift) * vae.config.scaling_factor


def vae_decode(model, latents: torch.Tensor, options: VaeOptions, warn=None) -> tuple[torch.Tensor, bool]:
    """Scaled latents -> ((B, 3, H, W) in [0, 1] on the CPU, whether a NaN forced a float32 retry)."""
    pixels = latents.shape[-1] * latents.shape[-2] * model.vae_scale_factor ** 2
    with torch.no_grad(), vae_tiling(model.vae, options.tiled, pixels):
        images, retried = decode_latents(model.vae, latents, force_fp32=options.fp32)
    if retried and warn:
        warn("the VAE produced NaN in half precision: that decode was redone in float32")
    return images.float().cpu(), retried
