"""Per-image noise: A1111's "RNG: CPU" generators for initial and ancestral noise, and a deterministic
Brownian motion for the SDE samplers.

Batch size never changes an image: image i draws only from its own generator (seeded with its own
seed) and its own Brownian path. Both can be resumed exactly in another process: the generators
through `get_state`/`set_state`, the Brownian path because every value is a pure function of
(image seed, schedule interval, query point).
"""
from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence

import torch
from sdbake.schemas.names import ANCESTRAL_SAMPLERS, SDE_SAMPLERS

from .stepping import NoiseSampler
from .variation import SeedVariation, first_noise


class ImageNoise:
    """One CPU generator per image, seeded with the image's seed; `draw()` gives (B, C, h, w).

    The first draw is the initial noise (A1111: `torch.Generator("cpu").manual_seed(seed)` then
    `randn((C, h, w))`, float32, moved to the device); ancestral noise continues from the same
    generators, one (C, h, w) draw per image per call.
    """

    def __init__(self, seeds: Sequence[int], shape_chw: Sequence[int], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, variations: Sequence[SeedVariation | None] | None = None):
        if len(shape_chw) != 3:
            raise ValueError(f"shape_chw must be (C, h, w), got {tuple(shape_chw)}")
        self.seeds = [int(seed) for seed in seeds]
        self.shape_chw = tuple(int(size) for size in shape_chw)
        self.device = torch.device(device)
        self.dtype = dtype
        self._generators = [torch.Generator("cpu").manual_seed(seed) for seed in self.seeds]
        # A1111's variation seed / seed resize change the first draw only (stages/samplers/variation.py)
        self._variations = list(variations) if variations is not None else [None] * len(self.seeds)
        if len(self._variations) != len(self.seeds):
            raise ValueError(f"{len(self._variations)} variations for {len(self.seeds)} seeds")
        self._drawn = False

    def draw(self, rows: Sequence[int] | None = None) -> torch.Tensor:
        """The next standard normal sample of every image, stacked: (B, C, h, w) on the device. With `rows`,
        only those images draw (the others get zeros and their generators stay where they are), for a
        sampler whose images step on their own (dpm_adaptive_a1111)."""
        if rows is not None and set(rows) >= set(range(len(self.seeds))):
            rows = None
        if self._drawn:
            per_image = [torch.randn(self.shape_chw, generator=g, dtype=torch.float32)
                         if rows is None or index in rows else torch.zeros(self.shape_chw, dtype=torch.float32)
                         for index, g in enumerate(self._generators)]
        elif rows is not None:
            raise ValueError("the first draw is every image's initial noise: it cannot leave an image out")
        else:
            per_image = [first_noise(seed, g, self.shape_chw, variation)
                         for seed, g, variation in zip(self.seeds, self._generators, self._variations)]
            self._drawn = True
        return torch.stack(per_image).to(device=self.device, dtype=self.dtype)

    def ancestral_noise_sampler(self) -> NoiseSampler:
        """A k-diffusion noise sampler that ignores the sigmas and draws the next noise of each image (of
        `rows` only, when the sampler names them)."""
        return lambda sigma, sigma_next, rows=None: self.draw(rows)

    def get_state(self) -> torch.Tensor:
        """The generators' states as one uint8 tensor (B, state_bytes), for safetensors."""
        return torch.stack([g.get_state() for g in self._generators])

    def set_state(self, state: torch.Tensor) -> None:
        """Resume the generators from `get_state()` output (same seeds, same batch order)."""
        if state.dtype != torch.uint8 or state.ndim != 2 or state.shape[0] != len(self._generators):
            raise ValueError(f"generator state must be uint8 of shape ({len(self._generators)}, n), "
                             f"got {state.dtype} {tuple(state.shape)}")
        for generator, image_state in zip(self._generators, state):
            generator.set_state(image_state.contiguous().clone())
        self._drawn = True          # a saved state is always past the first draw


_CACHED_INCREMENTS = 8


def _derived_seed(image_seed: int, *parts: object) -> int:
    """A 63-bit generator seed for one piece of an image's Brownian path, stable across processes."""
    text = ":".join(str(part) for part in ("sdbake-brownian", image_seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


class BrownianNoise:
    """Per-image Brownian motion W over the positive sigmas of the whole schedule.

    As k-diffusion's BrownianTreeNoiseSampler, `noise(sigma, sigma_next)` is the increment
    (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|): unit normal, independent over disjoint
    intervals, consistent when intervals are joined. W is built from the schedule's own nodes: the
    increment over each schedule interval is a normal draw seeded by (image seed, interval), and a
    point inside an interval (dpmpp_sde's midpoint) is bridged from the interval's ends with noise
    seeded by the point. One draw per step instead of a tree descent; no state, no global RNG, so any
    query returns the same bits in any process and any order. Two different points inside one
    schedule interval are each bridged on their own (no sampler here queries two).
    """

    def __init__(self, seeds: Sequence[int], shape_chw: Sequence[int], schedule: torch.Tensor,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        nodes = sorted({float(sigma) for sigma in schedule.tolist() if sigma > 0}, reverse=True)
        if not nodes:
            raise ValueError("Brownian noise needs a schedule with a positive sigma")
        self.seeds = [int(seed) for seed in seeds]
        self.shape_chw = tuple(int(size) for size in shape_chw)
        self.nodes = nodes                              # descending
        self._ascending_negated_nodes = [-node for node in nodes]
        self.sigma_min, self.sigma_max = nodes[-1], nodes[0]
        self.device = torch.device(device)
        self.dtype = dtype
        self._increments: dict[int, torch.Tensor] = {}  # recent interval increments, a speed-up only

    def __call__(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        sigma, sigma_next = float(sigma), float(sigma_next)
        start_index, start_offset = self._locate(sigma)
        end_index, end_offset = self._locate(sigma_next)
        between = self._node_difference(start_index, end_index)
        increment = between + end_offset - start_offset
        return (increment / math.sqrt(abs(sigma_next - sigma))).to(device=self.device, dtype=self.dtype)

    def _locate(self, sigma: float) -> tuple[int, torch.Tensor | float]:
        """(j, W(sigma) - W(node j)) with node j the schedule sigma at or just above `sigma`."""
        span = self.sigma_max - self.sigma_min
        # sigmas that round differently from the schedule's ends (float32 vs float64) may poke out by a hair
        if not self.sigma_min - 1e-6 * span <= sigma <= self.sigma_max + 1e-6 * span:
            raise ValueError(f"sigma {sigma} is outside the Brownian noise range "
                             f"[{self.sigma_min}, {self.sigma_max}] of the schedule")
        sigma = min(max(sigma, self.sigma_min), self.sigma_max)
        # nodes descend: the first index whose node is <= sigma
        index = bisect.bisect_left(self._ascending_negated_nodes, -sigma)
        if self.nodes[index] == sigma:
            return index, 0.0
        upper, lower = self.nodes[index - 1], self.nodes[index]
        # Brownian bridge from W(upper) to W(lower) = W(upper) + increment, read at sigma
        fraction = (upper - sigma) / (upper - lower)
        bridge_std = math.sqrt((upper - sigma) * (sigma - lower) / (upper - lower))
        point_noise = torch.stack([self._normal(_derived_seed(seed, "bridge", upper.hex(), lower.hex(), sigma.hex()))
                                   for seed in self.seeds])
        return index - 1, fraction * self._increment(index - 1) + bridge_std * point_noise

    def _node_difference(self, start: int, end: int) -> torch.Tensor | float:
        """W(node end) - W(node start), summing the interval increments in between."""
        low, high = min(start, end), max(start, end)
        total: torch.Tensor | float = 0.0
        for index in range(low, high):
            total = total + self._increment(index)
        return total if end >= start else -total

    def _increment(self, index: int) -> torch.Tensor:
        """W(nodes[index + 1]) - W(nodes[index]) for every image: normal with variance the interval's length."""
        if index not in self._increments:
            if len(self._increments) >= _CACHED_INCREMENTS:
                self._increments.pop(next(iter(self._increments)))
            upper, lower = self.nodes[index], self.nodes[index + 1]
            draws = [self._normal(_derived_seed(seed, "interval", upper.hex(), lower.hex())) for seed in self.seeds]
            self._increments[index] = math.sqrt(upper - lower) * torch.stack(draws)
        return self._increments[index]

    def _normal(self, seed: int) -> torch.Tensor:
        generator = torch.Generator("cpu").manual_seed(seed)
        return torch.randn(self.shape_chw, generator=generator, dtype=torch.float64)


def noise_sampler_for(sampler: str, image_noise: ImageNoise, full_sigmas: torch.Tensor) -> NoiseSampler | None:
    """The noise a sampler needs: per-image draws for ancestral samplers, a Brownian path over the
    whole schedule (`full_sigmas`, not the slice being walked: every stage that walks part of one
    schedule must pass the same full schedule) for SDE samplers, None for the deterministic ones."""
    if sampler in ANCESTRAL_SAMPLERS:
        return image_noise.ancestral_noise_sampler()
    if sampler in SDE_SAMPLERS:
        return BrownianNoise(image_noise.seeds, image_noise.shape_chw, full_sigmas,
                             device=image_noise.device, dtype=image_noise.dtype)
    return None
