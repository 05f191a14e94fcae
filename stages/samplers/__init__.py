"""k-diffusion-style samplers and sigma schedules, with exact splits (see DESIGN.md, "sample").

Schedules: `model_sigmas`, `sigma_schedule`, `sampler_sigmas`, `sigma_to_t`, `t_to_sigma`.
Samplers: `SAMPLERS[name](denoise, x, sigmas, *, noise_sampler, carry, callback=None) -> (x, carry)`.
Noise: `ImageNoise` (per-image CPU generators), `BrownianNoise`, `noise_sampler_for`.
"""
from .carry import Carry, carry_from_tensors, carry_to_tensors
from .noise import ANCESTRAL_SAMPLERS, SDE_SAMPLERS, BrownianNoise, ImageNoise, noise_sampler_for
from .registry import (
                       A1111_LABELS,
                       SAMPLERS,
                       SECOND_ORDER_SAMPLERS,
                       get_sampler,
                       is_second_order,
                       parse_sampler_label,
                       uses_ancestral_noise,
                       uses_sde_noise,
)
from .schedules import (
                       DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
                       SCHEDULERS,
                       model_sigmas,
                       sampler_sigmas,
                       sigma_schedule,
                       sigma_to_t,
                       t_to_sigma,
)

__all__ = [
    "A1111_LABELS", "ANCESTRAL_SAMPLERS", "DISCARD_PENULTIMATE_SIGMA_SAMPLERS", "SAMPLERS", "SCHEDULERS",
    "SDE_SAMPLERS", "SECOND_ORDER_SAMPLERS", "BrownianNoise", "Carry", "ImageNoise", "carry_from_tensors",
    "carry_to_tensors", "get_sampler", "is_second_order", "model_sigmas", "noise_sampler_for",
    "parse_sampler_label", "sampler_sigmas", "sigma_schedule", "sigma_to_t", "t_to_sigma",
    "uses_ancestral_noise", "uses_sde_noise",
]
