"""Pieces every sampler uses: the callable types, the denoiser call, the ODE derivative, ancestral steps."""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .carry import Carry

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]       # (x, sigma of shape [batch]) -> denoised
NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (sigma, sigma_next) -> unit noise like x
StepCallback = Callable[[int], None] | None                           # step index within the slice


class Guided(NamedTuple):
    """What the denoiser of a CFG++ sampler returns (SamplerInfo.needs_uncond): the guided clean estimate
    and the unconditional one of the same model call."""
    denoised: torch.Tensor
    uncond: torch.Tensor


def as_guided(out) -> Guided:
    """`out` when it holds the unconditional prediction; a plain tensor would unpack along the batch."""
    if not isinstance(out, Guided):
        raise TypeError("a CFG++ sampler steps along the unconditional prediction: its denoiser must return "
                        "Guided(denoised, uncond) (stages/denoiser.py with_uncond)")
    return out


def denoise_at(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """D(x, sigma) with sigma broadcast to one value per image, as k-diffusion's `sigma * s_in`."""
    return denoise(x, sigma * x.new_ones([x.shape[0]]))


def denoise_step(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, i: int,
                 callback: StepCallback) -> torch.Tensor:
    """D(x, sigmas[i]) at the start of step i, then the step's progress callback."""
    denoised = denoise_at(denoise, x, sigmas[i])
    if callback is not None:
        callback(i)
    return denoised


def derivative(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE (Karras et al. 2022, eq. 4 with s = 1)."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_down, sigma_up) for eta = 1: step deterministically down to sigma_down, then add noise of
    std sigma_up, so that the marginal at sigma_to is right (k-diffusion's get_ancestral_step)."""
    sigma_up = torch.minimum(sigma_to, (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def ancestral_steps(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: NoiseSampler,
                     callback: StepCallback, step_down) -> tuple[torch.Tensor, Carry]:
    """k-diffusion's ancestral loop: `step_down(denoise, x, sigma, sigma_down, denoised)` takes x
    deterministically to sigma_down, then fresh noise of std sigma_up brings it to the next sigma
    (no draw when sigma_down is 0: the last step to sigma 0)."""
    check_sigmas(sigmas)
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1])
        x = step_down(denoise, x, sigmas[i], sigma_down, denoised)
        if float(sigma_down) != 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
    return x, Carry(sigmas[-1])


def check_sigmas(sigmas: torch.Tensor) -> list[float]:
    """The sigmas as floats, for the branches (one host sync per call, none per step)."""
    if sigmas.ndim != 1 or sigmas.shape[0] < 1:
        raise ValueError(f"sigmas must be a non-empty 1-d tensor, got shape {tuple(sigmas.shape)}")
    return sigmas.tolist()
