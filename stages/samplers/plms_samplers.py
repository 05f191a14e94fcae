"""plms: A1111's "PLMS", pseudo linear multistep (Liu et al. 2022, "Pseudo Numerical Methods for
Diffusion Models on Manifolds"), as modules/sd_samplers_timesteps_impl.py `plms` computes it.

A1111 steps the variance-preserving latent over its DDPM timesteps with a noise estimate eps':
x_prev = sqrt(a_prev) * pred_x0(eps') + sqrt(1 - a_prev) * eps'. Divided by sqrt(a_prev), that is
k-diffusion's x = x0 + sigma * eps with x_next = x + (sigma_next - sigma) * eps', which is what runs
here over any sigma list. eps' is, by how many past noise estimates there are: none, a pseudo improved
Euler step (eps at the Euler step's end, a second model call, averaged with eps); then Adams-Bashforth
of order 2, 3 and 4 over the model's eps of the past steps. Those past eps are the carry (its
`derivatives`: (x - D) / sigma is eps), so a split continues the same multistep.

Where A1111's loop differs (it stops at timestep 1, short of sigma 0; it starts from unit noise in the
variance-preserving latent): docs/design.md, section 4, and schemas/names.py.
"""
from __future__ import annotations

import torch

from .carry import Carry
from .stepping import Denoiser, NoiseSampler, StepCallback, check_sigmas, denoise_at, denoise_step, derivative

PLMS_ORDER = 4
# Adams-Bashforth weights (newest eps first) and their common denominator, by the number of past eps;
# kept as integers over a denominator, the form A1111 evaluates.
_ADAMS_BASHFORTH = {1: ((3, -1), 2), 2: ((23, -16, 5), 12), 3: ((55, -59, 37, -9), 24)}


def plms_eps(eps: torch.Tensor, past: list[torch.Tensor]) -> torch.Tensor:
    """The Adams-Bashforth combination of `eps` and the 1-3 past eps (newest first)."""
    weights, denominator = _ADAMS_BASHFORTH[len(past)]
    total = eps * weights[0]
    for weight, older in zip(weights[1:], past):
        total = total + older * weight
    return total / denominator


def sample_plms(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """PLMS steps; the carry keeps the model's eps of the last 3 steps (not the combined eps')."""
    sigma_values = check_sigmas(sigmas)
    past = list(carry.derivatives) if carry else []      # newest first
    for i in range(len(sigmas) - 1):
        eps = derivative(x, sigmas[i], denoise_step(denoise, x, sigmas, i, callback))
        step = sigmas[i + 1] - sigmas[i]
        if past:
            eps_prime = plms_eps(eps, past)
        elif sigma_values[i + 1] > 0:
            # pseudo improved Euler: the model's eps where an Euler step lands, averaged with eps
            x_euler = x + eps * step
            eps_prime = (eps + derivative(x_euler, sigmas[i + 1], denoise_at(denoise, x_euler, sigmas[i + 1]))) / 2
        else:
            # a fresh start on the last step: the model has no eps at sigma 0, so an Euler step
            eps_prime = eps
        x = x + eps_prime * step
        past = [eps, *past][:PLMS_ORDER - 1]
    return x, Carry(sigmas[-1], derivatives=tuple(past))
