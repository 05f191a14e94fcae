"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes"), as A1111
v1.10's `restart_sampler` (modules/sd_samplers_extra.py) runs it: Heun steps down the schedule, and
at a restart point fresh noise takes the latent back up to a higher sigma, from where Heun steps walk
down to the restart point again.

From 20 steps on, A1111 replaces the schedule it is given by a shorter Karras schedule between its
ends and spends the steps it saved on one restart segment (9 steps, or steps // 4 steps twice from 36
steps on) from sigma ~2 back down to sigma ~0.1, so a run still takes `steps` Heun steps in all.
Because it chooses its own steps over the whole range it is given, a split run cannot equal one run
(schemas/names.py `whole_range`: validate refuses splits); a slice (img2img, hires, inpaint) is run as
its own whole range, as A1111's img2img does.
"""
from __future__ import annotations

from itertools import pairwise

import torch

from .carry import Carry
from .karras_samplers import heun_stage
from .schedules import karras_sigmas
from .stepping import Denoiser, NoiseSampler, StepCallback, check_sigmas, denoise_at, derivative

# A1111's automatic restart list: {restart at sigma ~0.1: (restart Karras sigmas, times, up to sigma ~2)}
RESTART_AT, RESTART_UP_TO = 0.1, 2.0


def restart_step_list(sigmas: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sigma, sigma_next) pairs Restart walks for the schedule `sigmas` (ending with 0), in order;
    a pair whose sigma is above the previous pair's sigma_next starts a restart (noise is added)."""
    steps = len(sigmas) - 1
    restarts = {}
    if steps >= 20:
        segment_steps, times = (steps // 4, 2) if steps >= 36 else (9, 1)
        # the main walk: a Karras schedule over what is left, between the given ends (last nonzero sigma)
        sigmas = karras_sigmas(steps - segment_steps * times, float(sigmas[-2]), float(sigmas[0]),
                               sigmas.dtype).to(sigmas.device)
        restarts = {_nearest(sigmas, RESTART_AT): (segment_steps + 1, times, RESTART_UP_TO)}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 not in restarts:
            continue
        count, times, up_to = restarts[i + 1]
        low, high = i + 1, _nearest(sigmas, up_to)
        if high < low:      # the range reaches up to the restart's top (an img2img slice may not)
            segment = karras_sigmas(count, float(sigmas[low]), float(sigmas[high]), sigmas.dtype)[:-1]
            segment = segment.to(sigmas.device)
            pairs.extend(list(pairwise(segment)) * times)
    return pairs


def _nearest(sigmas: torch.Tensor, value: float) -> int:
    """The index of the sigma nearest to `value` (the first on a tie, as torch.argmin)."""
    return int(torch.argmin((sigmas - value).abs()))


def sample_restart(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                   noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                   callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """Heun steps over `restart_step_list(sigmas)` (Euler on a step to 0); going back up from sigma_a
    to sigma_b adds noise of std sqrt(sigma_b^2 - sigma_a^2), drawn from the noise source (A1111 draws
    it with randn_like from each image's generator). One callback per step, after its first model call."""
    sigma_values = check_sigmas(sigmas)
    if sigma_values[-1] != 0:
        # A1111's schedule rebuild always ends at 0: a slice that stops early would be silently extended
        raise ValueError(f"restart walks down to sigma 0; these sigmas end at {sigma_values[-1]!r} "
                         f"(a split run, which restart cannot do)")
    pairs = restart_step_list(sigmas)
    pair_values = torch.stack([torch.stack(pair) for pair in pairs]).tolist() if pairs else []  # one host sync
    for i, ((sigma, sigma_next), (sigma_value, next_value)) in enumerate(zip(pairs, pair_values)):
        if i > 0 and pair_values[i - 1][1] < sigma_value:
            last_sigma = pairs[i - 1][1]
            x = x + noise_sampler(last_sigma, sigma) * (sigma ** 2 - last_sigma ** 2) ** 0.5
        denoised = denoise_at(denoise, x, sigma)
        if callback is not None:
            callback(i)
        d = derivative(x, sigma, denoised)
        if next_value == 0:
            x = x + d * (sigma_next - sigma)
        else:
            x = heun_stage(denoise, x, d, sigma, sigma_next)
    return x, Carry(sigmas[-1])
