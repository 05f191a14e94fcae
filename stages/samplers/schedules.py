"""Sigma schedules from a model's own discrete noise schedule, matching ComfyUI v0.3.64 `calculate_sigmas`,
and A1111 v1.10's `polyexponential` and `align_your_steps` (modules/sd_schedulers.py), which ComfyUI's
KSampler lacks.

Dtypes: `model_sigmas` returns float64, the exact values. ComfyUI keeps `sigmas.float()` and
`sigmas.log().float()` (the log taken in float64) as its buffers and computes every schedule in
float32; `sigma_schedule(..., dtype=torch.float32)` (the default) rebuilds those buffers the same way
and repeats that arithmetic, so from float64 model sigmas its output equals ComfyUI's bit for bit.
`dtype=torch.float64` runs the same formulas in float64 (for tests and references). Given float32
model sigmas the log is taken of the rounded values, so `normal`/`sgm_uniform` may differ from
ComfyUI in the last bit.
"""
from __future__ import annotations

import math

import torch
from sdbake.schemas.names import DISCARD_PENULTIMATE_SIGMA_SAMPLERS
from sdbake.schemas.names import SCHEDULER_IDS as SCHEDULERS

from .beta_distribution import beta_ppf

# A1111 v1.10 get_align_your_steps_sigmas: NVIDIA's published 10-step noise levels (11 sigmas, rounded
# to 3 decimals), the SDXL ones for an SDXL model and the SD 1.5 ones for any other.
ALIGN_YOUR_STEPS_LEVELS = {
    "sd1": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
}


def model_sigmas(beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: str = "scaled_linear", num_train_timesteps: int = 1000,
                 zero_terminal_snr: bool = False) -> torch.Tensor:
    """The model's discrete sigmas, ascending (sigma_min first), float64, from its training betas.

    `beta_schedule` uses diffusers' names: "scaled_linear" (linspace of sqrt(beta), squared: what
    ComfyUI calls "linear", SD1.x/SDXL) and "linear" (linspace of beta). The v_prediction models of
    SD2 use the same sigmas; prediction type only changes the denoiser.
    """
    if beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    else:
        raise ValueError(f"unsupported beta_schedule {beta_schedule!r}; expected 'scaled_linear' or 'linear'")
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if zero_terminal_snr:
        # The last sigma would be infinite; diffusers (what such a model's config comes from) uses 2**-24.
        alphas_cumprod[-1] = 2.0 ** -24
    return ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Betas whose last step reaches zero signal (Lin et al. 2023, "Common Diffusion Noise Schedules
    and Sample Steps are Flawed", Algorithm 1): shift and scale sqrt(alpha_bar) so it ends at 0 and
    keeps its first value, for models trained that way (their scheduler config says
    rescale_betas_zero_snr)."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


def sigma_to_t(sigma: torch.Tensor, model_sigmas: torch.Tensor, *, quantize: bool = False) -> torch.Tensor:
    """The (fractional) UNet timestep of each sigma, by linear interpolation in log sigma.

    As k-diffusion's DiscreteSchedule and diffusers' `_sigma_to_t` (what A1111 uses). With
    `quantize=True`, the nearest integer timestep instead, as ComfyUI's ModelSamplingDiscrete.
    Computed in float64; returned in sigma's dtype and device.
    """
    log_sigmas = model_sigmas.to(device=sigma.device, dtype=torch.float64).log()
    log_sigma = sigma.to(torch.float64).log()
    distances = log_sigma.reshape(1, -1) - log_sigmas.reshape(-1, 1)
    if quantize:
        timestep = distances.abs().argmin(dim=0).to(torch.float64)
    else:
        low_index = distances.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        low, high = log_sigmas[low_index], log_sigmas[low_index + 1]
        weight = ((low - log_sigma.reshape(-1)) / (low - high)).clamp(0, 1)
        timestep = (1 - weight) * low_index + weight * (low_index + 1)
    return timestep.reshape(sigma.shape).to(sigma.dtype)


def t_to_sigma(t: torch.Tensor, model_sigmas: torch.Tensor) -> torch.Tensor:
    """The sigma at a (fractional) timestep, interpolating log sigma; in model_sigmas' dtype."""
    log_sigmas = model_sigmas.to(t.device).log()
    return _interpolated_sigma(t, log_sigmas)


def _interpolated_sigma(t: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    t = t.to(log_sigmas.dtype).clamp(0, log_sigmas.shape[0] - 1)
    low_index, high_index = t.floor().long(), t.ceil().long()
    weight = t.frac()
    return ((1 - weight) * log_sigmas[low_index] + weight * log_sigmas[high_index]).exp()


def sigma_schedule(scheduler: str, model_sigmas: torch.Tensor, steps: int, *,
                   dtype: torch.dtype = torch.float32, family: str = "sd1") -> torch.Tensor:
    """`steps` + 1 sigmas, descending, ending with 0, as ComfyUI's `calculate_sigmas(scheduler)` (A1111's
    functions for the two it lacks). `family` ("sd1" | "sdxl", the model's) picks align_your_steps' levels.

    ddim_uniform keeps ComfyUI's quirk: when 1000 is not a multiple of `steps` it can return more
    than steps + 1 sigmas (e.g. 9 for 7 steps).
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    sigmas = model_sigmas.to(device="cpu", dtype=dtype)
    # ComfyUI takes the log before rounding to float32 (ModelSamplingDiscrete.set_sigmas)
    log_sigmas = model_sigmas.to(device="cpu", dtype=torch.float64).log().to(dtype)
    if scheduler == "karras":
        return karras_sigmas(steps, float(sigmas[0]), float(sigmas[-1]), dtype)
    if scheduler == "exponential":
        return _exponential(steps, float(sigmas[0]), float(sigmas[-1]), dtype)
    if scheduler in ("normal", "sgm_uniform"):
        return _uniform_timesteps(log_sigmas, steps, dtype, sgm=scheduler == "sgm_uniform")
    if scheduler == "simple":
        return _simple(sigmas, steps, dtype)
    if scheduler == "ddim_uniform":
        return _ddim_uniform(sigmas, steps, dtype)
    if scheduler == "kl_optimal":
        return _kl_optimal(steps, float(sigmas[0]), float(sigmas[-1]), dtype)
    if scheduler == "polyexponential":
        return _polyexponential(steps, float(sigmas[0]), float(sigmas[-1]), dtype)
    if scheduler == "align_your_steps":
        return _align_your_steps(steps, family, dtype)
    return _beta(sigmas, steps, dtype, alpha=0.6, beta=0.6)


def sampler_sigmas(sampler: str, scheduler: str, model_sigmas: torch.Tensor, steps: int, *,
                   dtype: torch.dtype = torch.float32, family: str = "sd1") -> torch.Tensor:
    """The schedule a sampler walks: as ComfyUI's KSampler (and A1111's get_sigmas), dpm_2 (and
    dpm_2_ancestral) compute steps + 1 sigmas and drop the second-to-last, so the last step goes from a
    small sigma straight to 0."""
    if sampler in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        sigmas = sigma_schedule(scheduler, model_sigmas, steps + 1, dtype=dtype, family=family)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigma_schedule(scheduler, model_sigmas, steps, dtype=dtype, family=family)


def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, dtype: torch.dtype, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: uniform steps in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, steps, dtype=dtype)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _with_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def _exponential(steps: int, sigma_min: float, sigma_max: float, dtype: torch.dtype) -> torch.Tensor:
    """Uniform steps in log sigma."""
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=dtype).exp())


def _kl_optimal(steps: int, sigma_min: float, sigma_max: float, dtype: torch.dtype) -> torch.Tensor:
    """Uniform steps in arctan(sigma): the KL-optimal schedule of Sabour et al. 2024 ("Align Your Steps"),
    as ComfyUI's kl_optimal_scheduler computes it: the angles in Python floats, the rest in `dtype`.
    ComfyUI divides 0 by 0 for one step (NaN); here one step is sigma_max, then 0."""
    fraction = torch.arange(steps, dtype=dtype) / max(steps - 1, 1)
    return _with_zero((fraction * math.atan(sigma_min) + (1 - fraction) * math.atan(sigma_max)).tan())


def _polyexponential(steps: int, sigma_min: float, sigma_max: float, dtype: torch.dtype,
                     rho: float = 1.0) -> torch.Tensor:
    """k-diffusion's get_sigmas_polyexponential: log sigma runs from log sigma_max to log sigma_min as a
    ramp from 1 to 0 raised to `rho`. A1111 passes the model's sigma_min / sigma_max and keeps the
    function's rho of 1 (its "rho" setting is 0, unset, by default): uniform in log sigma, the same
    schedule as `exponential` computed another way (they differ in the last bits)."""
    ramp = torch.linspace(1, 0, steps, dtype=dtype) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return _with_zero(torch.exp(ramp * (log_max - log_min) + log_min))


def _align_your_steps(steps: int, family: str, dtype: torch.dtype) -> torch.Tensor:
    """A1111's "Align Your Steps": the 11 levels as they are for 11 steps (A1111 compares the step
    count, not steps + 1, with the levels' length), otherwise `steps` values log-linearly interpolated
    between them, then 0. So 10 steps end at 0.029 (ComfyUI's node instead takes steps + 1 levels and
    sets the last to 0), and 1 step is the single value at the low end, 0.029 -> 0."""
    levels = ALIGN_YOUR_STEPS_LEVELS["sdxl" if family == "sdxl" else "sd1"]
    if steps != len(levels):
        levels = _loglinear_interpolation(levels, steps)
    # A1111 computes in float64 (numpy) and returns a FloatTensor: rounded once, at the end
    return torch.tensor([*levels, 0.0], dtype=torch.float64).to(dtype)


def _loglinear_interpolation(levels: tuple[float, ...], count: int) -> list[float]:
    """`count` values spread evenly over the levels' index range (0 to 1, as numpy's linspace), each
    interpolated linearly in log sigma between its two neighbouring levels; descending like `levels`.
    Python floats, in the order of operations of numpy's linspace and interp."""
    log_levels = [math.log(level) for level in reversed(levels)]      # ascending, at positions k / last
    last = len(log_levels) - 1
    level_step, query_step = 1 / last, (1 / (count - 1) if count > 1 else 0.0)
    values = []
    for i in range(count):
        position = 1.0 if i == count - 1 and count > 1 else i * query_step
        if position >= 1.0:
            log_sigma = log_levels[last]
        else:
            k = min(int(position * last), last - 1)
            # the position's neighbours; float rounding may put the product one level off
            while k > 0 and k * level_step > position:
                k -= 1
            while k + 1 < last and (k + 1) * level_step <= position:
                k += 1
            left, right = k * level_step, (1.0 if k + 1 == last else (k + 1) * level_step)
            slope = (log_levels[k + 1] - log_levels[k]) / (right - left)
            log_sigma = slope * (position - left) + log_levels[k]
        values.append(math.exp(log_sigma))
    return values[::-1]


def _uniform_timesteps(log_sigmas: torch.Tensor, steps: int, dtype: torch.dtype, *, sgm: bool) -> torch.Tensor:
    """`normal`: timesteps evenly spaced from the last to the first (both included), sigma by
    log-interpolation; `sgm_uniform`: steps + 1 timesteps with the last (t = 0) left out."""
    first_t, last_t = log_sigmas.shape[0] - 1, 0   # ComfyUI's timestep(sigma_max), timestep(sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(first_t, last_t, steps + 1, dtype=dtype)[:-1]
    else:
        # a zero-terminal-SNR model already ends at sigma 0: ComfyUI walks one more timestep instead
        if math.isclose(float(log_sigmas[last_t].exp()), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(first_t, last_t, steps, dtype=dtype)
    sigmas = torch.stack([_interpolated_sigma(t, log_sigmas) for t in timesteps])
    return _with_zero(sigmas) if append_zero else sigmas


def _simple(sigmas: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Every (1000 / steps)-th model sigma from the top, index truncated."""
    stride = len(sigmas) / steps
    picked = [float(sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.tensor(picked + [0.0], dtype=dtype)


def _ddim_uniform(sigmas: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Model sigmas 1, 1 + s, 1 + 2s, ... (s = 1000 // steps), reversed, then 0."""
    index = 1
    if math.isclose(float(sigmas[index]), 0, abs_tol=0.00001):
        steps += 1
        picked = []
    else:
        picked = [0.0]
    stride = max(len(sigmas) // steps, 1)
    while index < len(sigmas):
        picked.append(float(sigmas[index]))
        index += stride
    return torch.tensor(picked[::-1], dtype=dtype)


def _beta(sigmas: torch.Tensor, steps: int, dtype: torch.dtype, *, alpha: float, beta: float) -> torch.Tensor:
    """Timesteps at Beta(alpha, beta) quantiles (arXiv 2407.12173), rounded, repeats dropped, then 0."""
    last_index = len(sigmas) - 1
    picked = []
    previous_t = -1
    for i in range(steps):
        # 1 - numpy.linspace(0, 1, steps, endpoint=False)[i], with numpy's arithmetic
        probability = 1 - i * (1 / steps)
        t = round(beta_ppf(probability, alpha, beta) * last_index)   # round half to even, as numpy.rint
        if t != previous_t:
            picked.append(float(sigmas[t]))
        previous_t = t
    return torch.tensor(picked + [0.0], dtype=dtype)
