"""Samplers that draw fresh noise every step from the posterior of a discrete diffusion: ddpm (Ho et
al. 2020, the ancestral step of the variance-preserving chain) and lcm (Luo et al. 2023: jump to the
clean estimate, then noise it to the next sigma). The math follows ComfyUI's `sample_ddpm` (its
`DDPMSampler_step` inside `generic_step_sampler`) and `sample_lcm` (comfy/k_diffusion/sampling.py at
ComfyUI commit 02159d81, with s_noise = 1 and no noise clipping), written here in k-diffusion's
variance-exploding x. Their noise is ancestral: one draw per step from the image generators, none on
the last step to sigma 0, so a split run continues the same draws.
"""
from __future__ import annotations

import torch

from .carry import Carry
from .stepping import Denoiser, NoiseSampler, StepCallback, check_sigmas, denoise_step, derivative


def sample_ddpm(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """DDPM's posterior step from sigma to sigma_next with alpha_bar = 1 / (1 + sigma^2): the mean
    from the predicted noise, plus the posterior's standard deviation times fresh noise."""
    sigma_values = check_sigmas(sigmas)
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        alpha_bar = 1 / (1 + sigmas[i] ** 2)
        alpha_bar_next = 1 / (1 + sigmas[i + 1] ** 2)
        alpha = alpha_bar / alpha_bar_next                    # DDPM's alpha_t = 1 - beta_t of this step
        eps = derivative(x, sigmas[i], denoised)               # the predicted noise
        x_vp = x * alpha_bar.sqrt()                            # the variance-preserving latent
        mean = (x_vp - (1 - alpha) / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()
        if sigma_values[i + 1] > 0:
            posterior_std = ((1 - alpha) * (1 - alpha_bar_next) / (1 - alpha_bar)).sqrt()
            x = (mean + posterior_std * noise_sampler(sigmas[i], sigmas[i + 1])) / alpha_bar_next.sqrt()
        else:
            x = mean                                           # at sigma 0 both parameterisations agree
    return x, Carry(sigmas[-1])


def sample_lcm(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
               noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
               callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """Latent-consistency steps: the denoised estimate, re-noised with fresh noise to the next sigma."""
    sigma_values = check_sigmas(sigmas)
    for i in range(len(sigmas) - 1):
        x = denoise_step(denoise, x, sigmas, i, callback)
        if sigma_values[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x, Carry(sigmas[-1])
