"""DPM-Solver++ samplers (Lu et al. 2022) in log-SNR time lambda = -log sigma: dpmpp_2s_ancestral,
dpmpp_sde, dpmpp_2m, dpmpp_2m_sde (midpoint), dpmpp_2m_sde_heun, dpmpp_3m_sde. The math follows k-diffusion's
`sampling.py` as ComfyUI v0.3.64 ships it for eps/v models, with eta = 1, s_noise = 1, r = 1/2.

The multistep ones keep their past denoised estimates and step sizes in the carry, so a split run
continues the same recurrence instead of restarting at first order. As every sampler function,
these get their name, their own carry and the noise check from the registry (registry.py).
"""
from __future__ import annotations

import torch

from .carry import Carry
from .stepping import (
    Denoiser,
    NoiseSampler,
    StepCallback,
    ancestral_step,
    check_sigmas,
    denoise_at,
    denoise_step,
    derivative,
)


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    """Half log-SNR of a sigma: log(alpha / sigma) = -log sigma for variance-exploding sigmas."""
    return sigma.log().neg()


def _sigma(lambda_: torch.Tensor) -> torch.Tensor:
    return lambda_.neg().exp()


def dpmpp_2s_step(x: torch.Tensor, sigma: torch.Tensor, sigma_down: torch.Tensor, denoised: torch.Tensor,
                  denoise_mid) -> torch.Tensor:
    """One DPM-Solver++(2S) step from sigma to sigma_down: `denoise_mid(x_mid, sigma_mid)` gives the
    estimate at the midpoint in half-log-SNR, which the step takes."""
    lambda_now, lambda_down = _lambda(sigma), _lambda(sigma_down)
    h = lambda_down - lambda_now
    lambda_mid = lambda_now + 0.5 * h
    x_mid = (_sigma(lambda_mid) / _sigma(lambda_now)) * x - (-h * 0.5).expm1() * denoised
    return (_sigma(lambda_down) / _sigma(lambda_now)) * x - (-h).expm1() * denoise_mid(x_mid, _sigma(lambda_mid))


def sample_dpmpp_2s_ancestral(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                              noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                              callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver++(2S) single-step second order down to sigma_down, then fresh noise."""
    sigma_values = check_sigmas(sigmas)
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1])
        if float(sigma_down) == 0:
            x = x + derivative(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            x = dpmpp_2s_step(x, sigmas[i], sigma_down, denoised, lambda x_mid, s: denoise_at(denoise, x_mid, s))
        if sigma_values[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
    return x, Carry(sigmas[-1])


def sample_dpmpp_sde(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                     noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                     callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver++ stochastic, two stages per step (r = 1/2), Brownian noise at both stages."""
    sigma_values = check_sigmas(sigmas)
    r = 0.5
    weight_second = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        if sigma_values[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_mid = lambda_s + r * h
        sigma_mid = _sigma(lambda_mid)
        # alpha = sigma * exp(lambda) is 1 for these models; kept as the formula computes it
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_mid = sigma_mid * lambda_mid.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        # stage 1: ancestral step from sigma to sigma_mid
        sigma_down, sigma_up = ancestral_step(_sigma(lambda_s), _sigma(lambda_mid))
        h_down = _lambda(sigma_down) - lambda_s
        x_mid = (alpha_mid / alpha_s) * (-h_down).exp() * x - alpha_mid * (-h_down).expm1() * denoised
        x_mid = x_mid + alpha_mid * noise_sampler(sigmas[i], sigma_mid) * sigma_up
        denoised_mid = denoise_at(denoise, x_mid, sigma_mid)

        # stage 2: ancestral step from sigma to sigma_next with the combined estimate
        sigma_down, sigma_up = ancestral_step(_sigma(lambda_s), _sigma(lambda_t))
        h_down = _lambda(sigma_down) - lambda_s
        denoised_combined = (1 - weight_second) * denoised + weight_second * denoised_mid
        x = (alpha_t / alpha_s) * (-h_down).exp() * x - alpha_t * (-h_down).expm1() * denoised_combined
        x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
    return x, Carry(sigmas[-1])


def sample_dpmpp_2m(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                    noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                    callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver++(2M): second order from the previous denoised estimate; first order on the first
    step of the whole run and on the last (to sigma 0)."""
    sigma_values = check_sigmas(sigmas)
    history = carry
    old_denoised = history.denoised[0] if history else None
    old_sigma = history.sigmas[0] if history else None
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        t, t_next = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigma_values[i + 1] == 0:
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _lambda(old_sigma)) / h
            denoised_extrapolated = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_extrapolated
        old_denoised, old_sigma = denoised, sigmas[i]
    if old_denoised is None:
        return x, Carry(sigmas[-1])
    return x, Carry(sigmas[-1], denoised=(old_denoised,), sigmas=(old_sigma,))


def _sde_first_order(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                     h: torch.Tensor, alpha_next: torch.Tensor) -> torch.Tensor:
    """The exact first-order step of the DPM-Solver++ SDE with eta = 1 (so h_eta = 2h)."""
    return sigma_next / sigma * (-h).exp() * x + alpha_next * (-2 * h).expm1().neg() * denoised


def _sde_noise(noise_sampler: NoiseSampler, sigma: torch.Tensor, sigma_next: torch.Tensor,
               h: torch.Tensor) -> torch.Tensor:
    return noise_sampler(sigma, sigma_next) * sigma_next * (-2 * h).expm1().neg().sqrt()


def _midpoint_correction(alpha_t: torch.Tensor, h: torch.Tensor, r: torch.Tensor,
                         difference: torch.Tensor) -> torch.Tensor:
    """k-diffusion's solver_type 'midpoint' (the default): half the first-order weight."""
    return 0.5 * alpha_t * (-2 * h).expm1().neg() * (1 / r) * difference


def _heun_correction(alpha_t: torch.Tensor, h: torch.Tensor, r: torch.Tensor,
                     difference: torch.Tensor) -> torch.Tensor:
    """k-diffusion's solver_type 'heun': the phi_2 weight (1 - e^-2h) / -2h + 1 of the exponential integrator."""
    h_eta = 2 * h
    return alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * difference


def _dpmpp_2m_sde(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: NoiseSampler | None,
                  carry: Carry | None, callback: StepCallback, correction) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver++(2M) SDE with eta = 1; `correction` is the second-order term from the last denoised
    estimate. The carry keeps that estimate and the last step size (the same for either correction)."""
    sigma_values = check_sigmas(sigmas)
    history = carry
    old_denoised = history.denoised[0] if history and history.denoised else None
    h = history.step_sizes[0] if history and history.step_sizes else None
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        if sigma_values[i + 1] == 0:
            x = denoised
        else:
            h_last = h
            lambda_s, lambda_t = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
            h = lambda_t - lambda_s
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = _sde_first_order(x, denoised, sigmas[i], sigmas[i + 1], h, alpha_t)
            if old_denoised is not None:
                x = x + correction(alpha_t, h, h_last / h, denoised - old_denoised)
            x = x + _sde_noise(noise_sampler, sigmas[i], sigmas[i + 1], h)
        old_denoised = denoised
    return x, Carry(sigmas[-1], denoised=_present(old_denoised), step_sizes=_present(h))


def sample_dpmpp_2m_sde(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                        noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                        callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver++(2M) SDE, midpoint correction."""
    return _dpmpp_2m_sde(denoise, x, sigmas, noise_sampler, carry, callback, _midpoint_correction)


def sample_dpmpp_2m_sde_heun(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                             noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                             callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver++(2M) SDE, Heun correction (k-diffusion's solver_type='heun'; A1111's "DPM++ 2M SDE Heun")."""
    return _dpmpp_2m_sde(denoise, x, sigmas, noise_sampler, carry, callback, _heun_correction)


def sample_dpmpp_3m_sde(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                        noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                        callback: StepCallback = None) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver++(3M) SDE: third order from the two previous denoised estimates (second, then first
    order while the history is shorter); the carry keeps both and their step sizes."""
    sigma_values = check_sigmas(sigmas)
    history = carry
    denoised_1, denoised_2 = _pad_two(history.denoised if history else ())
    h_1, h_2 = _pad_two(history.step_sizes if history else ())
    h = h_1
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(denoise, x, sigmas, i, callback)
        if sigma_values[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * 2.0
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = _sde_first_order(x, denoised, sigmas[i], sigmas[i + 1], h, alpha_t)
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                x = x + (alpha_t * phi_2) * ((denoised - denoised_1) / (h_1 / h))
            x = x + _sde_noise(noise_sampler, sigmas[i], sigmas[i + 1], h)
        # on the final step to 0, h is not recomputed and shifts in unchanged, as in k-diffusion
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x, Carry(sigmas[-1], denoised=_present(denoised_1, denoised_2),
                    step_sizes=_present(h_1, h_2))


def _present(*tensors: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The leading tensors that exist (history is filled newest first, never with gaps)."""
    kept = []
    for tensor in tensors:
        if tensor is None:
            break
        kept.append(tensor)
    return tuple(kept)


def _pad_two(history: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    padded = list(history[:2]) + [None] * (2 - min(len(history), 2))
    return padded[0], padded[1]
