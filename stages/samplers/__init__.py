"""k-diffusion-style samplers and sigma schedules, with exact splits (see docs/design.md section 4, "sample").

Schedules: `model_sigmas`, `sigma_schedule`, `sampler_sigmas`, `sigma_to_t`, `t_to_sigma`.
Samplers: `SAMPLERS[name](denoise, x, sigmas, *, noise_sampler, carry, callback=None) -> (x, carry)`;
what each one is (A1111 label, second order, noise kind) is the table in schemas/names.py.
Noise: `ImageNoise` (per-image CPU generators), `BrownianNoise`, `noise_sampler_for`.
"""
from .carry import Carry, carry_from_tensors, carry_to_tensors
from .noise import BrownianNoise, ImageNoise, noise_sampler_for
from .registry import SAMPLER_FUNCTIONS, SAMPLERS, get_sampler, is_second_order
from .schedules import SCHEDULERS, model_sigmas, sampler_sigmas, sigma_schedule, sigma_to_t, t_to_sigma
from .variation import SeedVariation, slerp

__all__ = [
    "SAMPLERS", "SAMPLER_FUNCTIONS", "SCHEDULERS", "BrownianNoise", "Carry", "ImageNoise", "SeedVariation",
    "carry_from_tensors", "carry_to_tensors", "get_sampler", "is_second_order", "model_sigmas", "noise_sampler_for",
    "sampler_sigmas", "sigma_schedule", "sigma_to_t", "slerp", "t_to_sigma",
]
