"""DPM-Solver (Lu et al. 2022) in its noise-prediction form, with k-diffusion's two drivers that choose
their own steps over the range they are given: dpm_fast (a fixed number of model calls, in steps of
order 3, 2, 1 that are uniform in t = -log sigma) and dpm_adaptive (orders 3 and 2 on each step, the
step size set by a PID controller from their difference).

The range is what ComfyUI's KSampler wrapper and A1111's img2img hand them: from sigmas[0] down to the
last non-zero sigma of the slice, and for dpm_fast n = len(sigmas) - 1 model calls. They end at that
sigma without a final denoise, as both references do. Their steps depend on the whole range, so a
split would not equal one run: validate refuses splits (SamplerInfo.whole_range) and the carry they
return holds no history.

eta: 0 is ComfyUI's (its wrapper passes none); A1111 passes its "Eta for k-diffusion samplers" option,
1 by default, which steps below each target sigma and adds fresh noise from the image generators back
up to it (the registry passes SamplerInfo.eta).
"""
from __future__ import annotations

import math

import torch

from .carry import Carry
from .dpm_solver_samplers import _lambda, _sigma
from .stepping import Denoiser, NoiseSampler, StepCallback, ancestral_step, check_sigmas, denoise_at

# k-diffusion's sample_dpm_adaptive defaults (ComfyUI and A1111 pass none of them)
ADAPTIVE = {"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0,
            "dcoeff": 0.0, "accept_safety": 0.81}


def _t_range(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_start, t_end) = -log of sigmas[0] and of the last non-zero sigma (the solver cannot reach 0)."""
    sigma_min = sigmas[-1] if float(sigmas[-1]) != 0 else sigmas[-2]
    return _lambda(sigmas[0]), _lambda(sigma_min)


def _check_eta(eta: float) -> None:
    if eta not in (0.0, 1.0):
        raise ValueError(f"eta must be 0 (ComfyUI) or 1 (A1111's default), got {eta}")


def _eps(denoise: Denoiser, x: torch.Tensor, t: torch.Tensor, on_call) -> torch.Tensor:
    """The model's noise prediction at t (one value, or one per image)."""
    sigma = _sigma(t)
    sigma_b = sigma.view(-1, 1, 1, 1) if sigma.ndim else sigma
    eps = (x - (denoise(x, sigma) if sigma.ndim else denoise_at(denoise, x, sigma))) / sigma_b
    on_call()
    return eps


def _per_image(value: torch.Tensor) -> torch.Tensor:
    return value.view(-1, 1, 1, 1) if value.ndim else value


class _Step:
    """One DPM-Solver step from t to t_next: the model evaluations at the intermediate points
    s1 = t + r1 h and s2 = t + r2 h are made once and shared by the formulas that use them."""

    def __init__(self, denoise: Denoiser, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
                 eps: torch.Tensor, on_call):
        self.denoise, self.x, self.t, self.eps, self.on_call = denoise, x, t, eps, on_call
        self.h_t = t_next - t                # in t's shape: one value, or one per image
        self.h = _per_image(self.h_t)        # broadcast over the latent
        self.sigma_next = _per_image(_sigma(t_next))
        self.eps_r1: torch.Tensor | None = None

    def first_order(self) -> torch.Tensor:
        return self.x - self.sigma_next * self.h.expm1() * self.eps

    def _eps_r1(self, r1: float) -> torch.Tensor:
        if self.eps_r1 is None:
            s1 = self.t + r1 * self.h_t
            u1 = self.x - _per_image(_sigma(s1)) * (r1 * self.h).expm1() * self.eps
            self.eps_r1 = _eps(self.denoise, u1, s1, self.on_call)
        return self.eps_r1

    def second_order(self, r1: float = 1 / 2) -> torch.Tensor:
        eps_r1 = self._eps_r1(r1)
        return (self.x - self.sigma_next * self.h.expm1() * self.eps
                - self.sigma_next / (2 * r1) * self.h.expm1() * (eps_r1 - self.eps))

    def third_order(self, r1: float = 1 / 3, r2: float = 2 / 3) -> torch.Tensor:
        eps_r1 = self._eps_r1(r1)
        s2 = self.t + r2 * self.h_t
        sigma_s2 = _per_image(_sigma(s2))
        u2 = (self.x - sigma_s2 * (r2 * self.h).expm1() * self.eps
              - sigma_s2 * (r2 / r1) * ((r2 * self.h).expm1() / (r2 * self.h) - 1) * (eps_r1 - self.eps))
        eps_r2 = _eps(self.denoise, u2, s2, self.on_call)
        return (self.x - self.sigma_next * self.h.expm1() * self.eps
                - self.sigma_next / r2 * (self.h.expm1() / self.h - 1) * (eps_r2 - self.eps))


def _ancestral_target(t: torch.Tensor, t_next: torch.Tensor, t_end: torch.Tensor,
                      eta: float) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(where the step goes, std of the noise that brings it back to t_next): with eta 1 the step goes
    below sigma(t_next) to sigma_down (never past t_end) and fresh noise makes up the difference."""
    if not eta:
        return t_next, 0.0
    sigma_down, _ = ancestral_step(_sigma(t), _sigma(t_next))
    target = torch.minimum(t_end, _lambda(sigma_down))
    return target, (_sigma(t_next) ** 2 - _sigma(target) ** 2) ** 0.5


def sample_dpm_fast(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                    noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                    callback: StepCallback = None, eta: float = 0.0) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver-Fast: exactly n = len(sigmas) - 1 model calls, in floor(n / 3) + 1 steps uniform in
    t, third order but for the last one or two (orders 3..3, 2, 1 when 3 divides n, else 3..3, n mod 3).
    The callback counts model calls (n in all), so progress and previews see the schedule's n steps."""
    check_sigmas(sigmas)
    _check_eta(eta)
    if len(sigmas) <= 1:
        return x, Carry(sigmas[-1])
    calls = iter(range(len(sigmas) - 1))
    on_call = (lambda: callback(next(calls))) if callback is not None else (lambda: None)
    t_start, t_end = _t_range(sigmas)
    n = len(sigmas) - 1
    m = n // 3 + 1
    # in torch's default dtype, as k-diffusion's linspace over the two end points
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        target, noise_std = _ancestral_target(t, t_next, t_end, eta)
        step = _Step(denoise, x, t, target, _eps(denoise, x, t, on_call), on_call)
        x = step.first_order() if order == 1 else step.second_order() if order == 2 else step.third_order()
        if eta:     # drawn on every step (its std is 0 on the last), as A1111's generators are
            x = x + noise_std * noise_sampler(_sigma(t), _sigma(t_next))
    return x, Carry(sigmas[-1])


class _StepSizeController:
    """k-diffusion's PID step size controller: the next step is h times a limited power of 1 / error,
    and a step is accepted when that factor is at least accept_safety."""

    def __init__(self, h: float, order: float, pcoeff: float, icoeff: float, dcoeff: float, accept_safety: float):
        self.h = h
        self.b1, self.b2, self.b3 = (pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order
        self.accept_safety = accept_safety
        self.errors: list[float] = []

    def propose_step(self, error: float) -> bool:
        inverse = 1 / (error + 1e-8)
        if not self.errors:
            self.errors = [inverse, inverse, inverse]
        self.errors[0] = inverse
        factor = self.errors[0] ** self.b1 * self.errors[1] ** self.b2 * self.errors[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errors[2], self.errors[1] = self.errors[1], self.errors[0]
        self.h *= factor
        return accept


def sample_dpm_adaptive(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                        noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                        callback: StepCallback = None, eta: float = 0.0) -> tuple[torch.Tensor, Carry]:
    """DPM-Solver-23 with adaptive steps: each try makes 3 model calls, the 2nd-order result (r1 = 1/3)
    against the 3rd-order one gives the error. Each image has its own controller and steps (k-diffusion
    measures the error over the whole batch, so there an image depends on its batch; at batch size 1
    the two are the same); every call evaluates the whole batch, an image that arrived stays put.
    With eta 1 (A1111's) each try aims below its target and an accepted step adds fresh noise from that
    image's own generator, and the controller takes order 1.5, as k-diffusion's.
    The callback reports the share of the t range covered, in the slice's step units."""
    check_sigmas(sigmas)
    _check_eta(eta)
    total = len(sigmas) - 1
    if total < 1:
        return x, Carry(sigmas[-1])
    options = ADAPTIVE
    t_start, t_end = _t_range(sigmas)
    forward = bool(t_end > t_start)
    h_init = abs(options["h_init"]) * (1 if forward else -1)
    atol, rtol = torch.tensor(options["atol"]), torch.tensor(options["rtol"])
    batch = x.shape[0]
    order = 1.5 if eta else options["order"]
    controllers = [_StepSizeController(h_init, order, options["pcoeff"], options["icoeff"], options["dcoeff"],
                                       options["accept_safety"]) for _ in range(batch)]
    s = t_start.expand(batch).clone()
    x_prev = x
    reported = 0

    def running() -> torch.Tensor:
        return s < t_end - 1e-5 if forward else s > t_end + 1e-5

    active = running()
    while bool(active.any()):
        h = torch.tensor([c.h for c in controllers], dtype=s.dtype, device=s.device)
        t = torch.minimum(t_end, s + h) if forward else torch.maximum(t_end, s + h)
        target, noise_std = _ancestral_target(s, t, t_end, eta)
        # an image that arrived is still evaluated (one batch per call) but kept: a step of its own h
        # instead of a zero one, whose 0 / 0 would feed the model NaN
        target = torch.where(active, target, s + h)
        step = _Step(denoise, x, s, target, _eps(denoise, x, s, lambda: None), lambda: None)
        x_low, x_high = step.second_order(r1=1 / 3), step.third_order()
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        scaled = (x_low - x_high) / delta
        accepted = torch.zeros_like(active)
        for b in range(batch):
            if active[b]:
                error = float(torch.linalg.norm(scaled[b]) / scaled[b].numel() ** 0.5)
                accepted[b] = controllers[b].propose_step(error)
        keep = accepted.view(-1, 1, 1, 1)
        if eta and bool(accepted.any()):
            rows = [b for b in range(batch) if accepted[b]]
            x_high = x_high + _per_image(noise_std) * noise_sampler(_sigma(s), _sigma(t), rows=rows)
        x_prev = torch.where(keep, x_low, x_prev)
        x = torch.where(keep, x_high, x)
        s = torch.where(accepted, t, s)
        active = running()
        reported = _report_progress(callback, s, t_start, t_end, total, reported, done=not bool(active.any()))
    return x, Carry(sigmas[-1])


def _report_progress(callback: StepCallback, s: torch.Tensor, t_start: torch.Tensor, t_end: torch.Tensor,
                     total: int, reported: int, done: bool) -> int:
    """Call back once per slice step the slowest image has passed (its share of the t range times the
    slice's steps), so progress and previews count the steps the schedule promised."""
    if callback is None:
        return reported
    span = float(t_end - t_start)
    share = 1.0 if done or span == 0 else float(((s - t_start) / span).min())
    reached = total if done else min(total - 1, int(share * total))
    for index in range(reported, reached):
        callback(index)
    return max(reported, reached)
