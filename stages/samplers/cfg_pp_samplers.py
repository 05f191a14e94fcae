"""CFG++ samplers (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for
Diffusion Models"): the guided clean estimate D is where a step lands, but the noise it carries on to
the next sigma is the unconditional model's, (x - D_uncond) / sigma, not the guided one. Guidance scales
are small (about 0.3-1 where CFG uses 5-8).

Their denoiser returns Guided(denoised, uncond) (SamplerInfo.needs_uncond; stages/denoiser.py computes
the uncond rows even at cfg 1, as ComfyUI's disable_cfg1_optimization). The math follows ComfyUI's
comfy/k_diffusion/sampling.py at commit 02159d81 (sample_euler_ancestral_cfg_pp with eta 1 and 0,
sample_dpmpp_2m_cfg_pp, sample_dpmpp_2s_ancestral_cfg_pp) for an eps or v model, whose alpha is 1 in k-diffusion's x, and A1111 v1.10's
"DDIM CFG++" (sd_samplers_timesteps_impl.py ddim_cfgpp at eta 0), which is the Euler step below in
variance-preserving x: pred_x0 from the guided eps, direction from the unconditional eps. A1111 guides
that one with cfg / 12.5 (SamplerInfo.cfg_scale, applied by the guided denoiser).
"""
from __future__ import annotations

import torch

from .carry import Carry
from .dpm_solver_samplers import dpmpp_2s_step
from .stepping import (
    Denoiser,
    Guided,
    NoiseSampler,
    StepCallback,
    ancestral_step,
    ancestral_steps,
    as_guided,
    check_sigmas,
    denoise_at,
    denoise_step,
    derivative,
)


def sample_euler_cfg_pp(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                        noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                        callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """x_next = D + sigma_next * (x - D_uncond) / sigma: deterministic, no history."""
    check_sigmas(sigmas)
    for i in range(len(sigmas) - 1):
        denoised, uncond = as_guided(denoise_step(denoise, x, sigmas, i, callback))
        x = denoised + derivative(x, sigmas[i], uncond) * sigmas[i + 1]
    return x, Carry(sigmas[-1])


def _euler_cfg_pp_down(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_down: torch.Tensor,
                       out: Guided) -> torch.Tensor:
    denoised, uncond = as_guided(out)
    return denoised + derivative(x, sigma, uncond) * sigma_down


def sample_euler_ancestral_cfg_pp(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                                  noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                                  callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """The CFG++ Euler step down to sigma_down, then fresh noise up to the next sigma (eta 1)."""
    return ancestral_steps(denoise, x, sigmas, noise_sampler, callback, _euler_cfg_pp_down)


def sample_dpmpp_2m_cfg_pp(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                           noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                           callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver++(2M) with CFG++: in log-SNR time t = -log sigma and h = t_next - t,
    x_next = D + e^-h (x - D_uncond) - expm1(-h) / (2r) (D - D_uncond of the last step), r = h_last / h;
    first order (no last term) on the first step of the whole run and on the last, to sigma 0. The carry
    keeps the last step's D_uncond and sigma."""
    sigma_values = check_sigmas(sigmas)
    old_uncond = carry.denoised[0] if carry else None
    old_sigma = carry.sigmas[0] if carry else None
    for i in range(len(sigmas) - 1):
        denoised, uncond = as_guided(denoise_step(denoise, x, sigmas, i, callback))
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        mix = -torch.exp(-h) * uncond
        if old_uncond is not None and sigma_values[i + 1] != 0:
            r = (t - old_sigma.log().neg()) / h
            mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond, old_sigma = uncond, sigmas[i]
    if old_uncond is None:
        return x, Carry(sigmas[-1])
    return x, Carry(sigmas[-1], denoised=(old_uncond,), sigmas=(old_sigma,))


def sample_dpmpp_2s_ancestral_cfg_pp(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                                     noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                                     callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """As ComfyUI's: the DPM-Solver++(2S) step down to sigma_down over the unconditional estimates (the
    midpoint's too, from a second guided call), fresh noise up to the next sigma, then the step's guidance
    D - D_uncond added to x (an Euler step along the unconditional noise on the last step, to 0)."""
    sigma_values = check_sigmas(sigmas)
    for i in range(len(sigmas) - 1):
        denoised, uncond = as_guided(denoise_step(denoise, x, sigmas, i, callback))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1])
        if float(sigma_down) == 0:
            x = x + derivative(x, sigmas[i], uncond) * (sigma_down - sigmas[i])
        else:
            x = dpmpp_2s_step(x, sigmas[i], sigma_down, uncond,
                              lambda x_mid, s: as_guided(denoise_at(denoise, x_mid, s)).uncond)
        if sigma_values[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
        x = x + (denoised - uncond)
    return x, Carry(sigmas[-1])
