"""A1111's variation seed and seed resize for an image's first noise (modules/rng.py ImageRNG.first).

With a subseed and a strength s, the first noise is slerp(s, noise(seed), noise(subseed)), the subseed's
noise drawn from a fresh CPU generator. With "resize seed from" W x H, both noises are drawn at the
latent size of W x H, and the result is pasted centred into a full-size draw of the image's own
generator (cropped when it is larger). Either way the image's generator has made exactly one
full-size draw, so ancestral noise continues as without a variation (A1111's ImageRNG.next()).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SeedVariation:
    """One image's variation: its subseed (None: none) and strength, and the noise size in latent cells."""
    subseed: int | None = None
    strength: float = 0.0
    resize_from_hw: tuple[int, int] | None = None


def _fresh_randn(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    # A1111's randn(seed, shape): the global CPU generator re-seeded, i.e. a fresh one.
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of two (C, h, w) noises. Its norms run along dim 1 (the rows of
    each channel), one angle per (channel, column); when the mean cosine exceeds 0.9995 it falls back to
    low * strength + high * (1 - strength), weights swapped as A1111 has them."""
    unit_low = low / torch.norm(low, dim=1, keepdim=True)
    unit_high = high / torch.norm(high, dim=1, keepdim=True)
    cosine = (unit_low * unit_high).sum(1)
    if cosine.mean() > 0.9995:
        return low * strength + high * (1 - strength)
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    low_weight = (torch.sin((1.0 - strength) * angle) / sine).unsqueeze(1)
    high_weight = (torch.sin(strength * angle) / sine).unsqueeze(1)
    return low_weight * low + high_weight * high


def _paste_centred(target: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`noise` centred on `target` (C, h, w), cropped where it is larger; A1111's offsets round down."""
    offset_x = (target.shape[2] - noise.shape[2]) // 2
    offset_y = (target.shape[1] - noise.shape[1]) // 2
    width = noise.shape[2] if offset_x >= 0 else noise.shape[2] + 2 * offset_x
    height = noise.shape[1] if offset_y >= 0 else noise.shape[1] + 2 * offset_y
    to_x, to_y = max(offset_x, 0), max(offset_y, 0)
    from_x, from_y = max(-offset_x, 0), max(-offset_y, 0)
    target[:, to_y:to_y + height, to_x:to_x + width] = noise[:, from_y:from_y + height, from_x:from_x + width]
    return target


def first_noise(seed: int, generator: torch.Generator, shape_chw: tuple[int, int, int],
                variation: SeedVariation | None) -> torch.Tensor:
    """The first (C, h, w) noise of an image whose generator is `generator` (seeded with `seed`)."""
    if variation is None:
        return torch.randn(shape_chw, generator=generator, dtype=torch.float32)
    noise_shape = shape_chw if variation.resize_from_hw is None else (shape_chw[0], *variation.resize_from_hw)
    resized = tuple(noise_shape) != tuple(shape_chw)
    if resized:
        noise = _fresh_randn(seed, noise_shape)
    else:
        noise = torch.randn(shape_chw, generator=generator, dtype=torch.float32)
    if variation.subseed is not None and variation.strength != 0:
        noise = slerp(variation.strength, noise, _fresh_randn(variation.subseed, noise_shape))
    if resized:
        noise = _paste_centred(torch.randn(shape_chw, generator=generator, dtype=torch.float32), noise)
    return noise
