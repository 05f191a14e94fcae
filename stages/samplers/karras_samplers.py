"""Samplers on the probability-flow ODE in sigma (Karras et al. 2022): euler, heun, dpm_2, their
ancestral variants, and lms. The math follows k-diffusion's `sampling.py` as ComfyUI v0.3.64 ships
it, with eta = 1, s_noise = 1 and no churn; ComfyUI's `ddim` is `euler`.

Every sampler walks `sigmas` (a slice of the schedule) and returns (x, carry); giving the carry to
the call on the next slice continues exactly where this one stopped. The functions are nameless: the
registry (registry.py) hands each one only a carry of its own, checks its noise source and stamps
its name on the carry it returns.
"""
from __future__ import annotations

import math

import torch

from .carry import Carry
from .stepping import (
    Denoiser,
    NoiseSampler,
    StepCallback,
    ancestral_steps,
    check_sigmas,
    denoise_at,
    denoise_step,
    derivative,
)


def sample_euler(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                 callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """Euler steps (Karras et al. 2022, Algorithm 2 without churn). Deterministic, no history."""
    check_sigmas(sigmas)
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        x = x + derivative(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x, Carry(sigmas[-1])


def _euler_down(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_down: torch.Tensor,
                denoised: torch.Tensor) -> torch.Tensor:
    if float(sigma_down) == 0:
        return denoised
    return x + derivative(x, sigma, denoised) * (sigma_down - sigma)


def sample_euler_ancestral(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                           noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                           callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """Euler step down to sigma_down, then fresh noise up to the next sigma."""
    return ancestral_steps(denoise, x, sigmas, noise_sampler, callback, _euler_down)


def _second_order_steps(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback,
                        second_stage) -> tuple[torch.Tensor, Carry]:
    """A model call at each sigma, then `second_stage(denoise, x, d, sigma, sigma_next)` (one more model
    call), except on the last step to sigma 0, which is an Euler step as in k-diffusion."""
    sigma_values = check_sigmas(sigmas)
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        d = derivative(x, sigmas[i], denoised)
        if sigma_values[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            x = second_stage(denoise, x, d, sigmas[i], sigmas[i + 1])
    return x, Carry(sigmas[-1])


def heun_stage(denoise: Denoiser, x: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor,
                sigma_next: torch.Tensor) -> torch.Tensor:
    dt = sigma_next - sigma
    x_euler = x + d * dt
    d_next = derivative(x_euler, sigma_next, denoise_at(denoise, x_euler, sigma_next))
    return x + (d + d_next) / 2 * dt


def sample_heun(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """Heun's method (Karras et al. 2022, Algorithm 2): two model calls per step, Euler on the last."""
    return _second_order_steps(denoise, x, sigmas, callback, heun_stage)


def _log_midpoint(sigma_a: torch.Tensor, sigma_b: torch.Tensor) -> torch.Tensor:
    """The geometric mean of two sigmas, computed as DPM-Solver-2's midpoint in log sigma."""
    return sigma_a.log().lerp(sigma_b.log(), 0.5).exp()


def _dpm_2_stage(denoise: Denoiser, x: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor,
                 sigma_next: torch.Tensor) -> torch.Tensor:
    sigma_mid = _log_midpoint(sigma, sigma_next)
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = derivative(x_mid, sigma_mid, denoise_at(denoise, x_mid, sigma_mid))
    return x + d_mid * (sigma_next - sigma)


def sample_dpm_2(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                 callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver-2-style midpoint steps in log sigma (two model calls per step), Euler on the last."""
    return _second_order_steps(denoise, x, sigmas, callback, _dpm_2_stage)


def _dpm_2_down(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_down: torch.Tensor,
                denoised: torch.Tensor) -> torch.Tensor:
    d = derivative(x, sigma, denoised)
    if float(sigma_down) == 0:
        return x + d * (sigma_down - sigma)
    return _dpm_2_stage(denoise, x, d, sigma, sigma_down)


def sample_dpm_2_ancestral(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                           noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                           callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """dpm_2 down to sigma_down, then fresh noise up to the next sigma."""
    return ancestral_steps(denoise, x, sigmas, noise_sampler, callback, _dpm_2_down)


LMS_ORDER = 4
# Gauss-Legendre nodes and weights on [0, 1], exact for polynomials up to degree 5 (LMS uses degree 3)
_GAUSS_NODES = (0.5 - 0.5 * math.sqrt(3 / 5), 0.5, 0.5 + 0.5 * math.sqrt(3 / 5))
_GAUSS_WEIGHTS = (5 / 18, 8 / 18, 5 / 18)


def lms_coefficient(past_sigmas: list[float], sigma_next: float, j: int) -> float:
    """Integral from past_sigmas[0] to sigma_next of the Lagrange basis polynomial of past_sigmas[j]
    (past_sigmas newest first), the weight of the j-th newest derivative in a linear multistep step.
    k-diffusion integrates it numerically (scipy quad); the closed quadrature agrees to rounding."""
    start = past_sigmas[0]

    def basis(tau: float) -> float:
        value = 1.0
        for k, sigma_k in enumerate(past_sigmas):
            if k != j:
                value *= (tau - sigma_k) / (past_sigmas[j] - sigma_k)
        return value

    width = sigma_next - start
    return width * sum(w * basis(start + node * width) for node, w in zip(_GAUSS_NODES, _GAUSS_WEIGHTS))


def sample_lms(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
               noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
               callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """Linear multistep of order 4 on the ODE derivative; the carry keeps the last 3 derivatives and sigmas."""
    sigma_values = check_sigmas(sigmas)
    history = carry
    derivatives = list(history.derivatives) if history else []   # newest first
    past_sigmas = list(history.sigmas) if history else []
    past_sigma_values = [float(s) for s in past_sigmas]
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        derivatives = [derivative(x, sigmas[i], denoised)] + derivatives[:LMS_ORDER - 1]
        past_sigmas = [sigmas[i]] + past_sigmas[:LMS_ORDER - 1]
        past_sigma_values = [sigma_values[i]] + past_sigma_values[:LMS_ORDER - 1]
        if sigma_values[i + 1] == 0:
            x = denoised
        else:
            coefficients = [lms_coefficient(past_sigma_values, sigma_values[i + 1], j)
                            for j in range(len(past_sigma_values))]
            x = x + sum(c * d for c, d in zip(coefficients, derivatives))
    keep = LMS_ORDER - 1
    return x, Carry(sigmas[-1], derivatives=tuple(derivatives[:keep]), sigmas=tuple(past_sigmas[:keep]))
