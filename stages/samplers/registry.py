"""Samplers by name: ComfyUI ids, A1111 labels ("DPM++ 2M Karras" = dpmpp_2m + karras), properties."""
from __future__ import annotations

from collections.abc import Callable

import torch

from .carry import Carry
from .dpm_solver_samplers import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_3m_sde,
    sample_dpmpp_sde,
)
from .karras_samplers import (
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lms,
)
from .noise import ANCESTRAL_SAMPLERS, SDE_SAMPLERS

Sampler = Callable[..., tuple[torch.Tensor, Carry]]

SAMPLERS: dict[str, Sampler] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    # ComfyUI's "ddim" runs its euler sampler (samplers.py sampler_object); only inpainting noise differs
    "ddim": sample_euler,
}

# Two model calls per step: A1111 schedules prompt edits over 2 x steps for these.
SECOND_ORDER_SAMPLERS = frozenset({"heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde"})

# A1111 sampler labels (modules/sd_samplers_kdiffusion.py); matched case-insensitively.
A1111_LABELS = {
    "Euler a": "euler_ancestral",
    "Euler": "euler",
    "Heun": "heun",
    "DPM2": "dpm_2",
    "DPM2 a": "dpm_2_ancestral",
    "LMS": "lms",
    "DPM++ 2S a": "dpmpp_2s_ancestral",
    "DPM++ SDE": "dpmpp_sde",
    "DPM++ 2M": "dpmpp_2m",
    "DPM++ 2M SDE": "dpmpp_2m_sde",
    "DPM++ 3M SDE": "dpmpp_3m_sde",
    "DDIM": "ddim",
}
_LABELS_LOWER = {label.lower(): sampler for label, sampler in A1111_LABELS.items()}
# A1111 label suffixes that name a schedule ("DPM++ 2M Karras")
_SCHEDULE_SUFFIXES = {"karras": "karras", "exponential": "exponential"}


def get_sampler(name: str) -> Sampler:
    """The sampler function for a ComfyUI id; ValueError listing the valid ids otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def parse_sampler_label(label: str) -> tuple[str, str | None]:
    """(sampler id, scheduler or None) from a ComfyUI id or an A1111 label, case-insensitive.

    "DPM++ 2M Karras" -> ("dpmpp_2m", "karras"); "Euler a" -> ("euler_ancestral", None);
    "dpmpp_2m" -> ("dpmpp_2m", None).
    """
    text = " ".join(label.strip().lower().split())
    if text in SAMPLERS:
        return text, None
    if text in _LABELS_LOWER:
        return _LABELS_LOWER[text], None
    base, _, suffix = text.rpartition(" ")
    if suffix in _SCHEDULE_SUFFIXES and base in _LABELS_LOWER:
        return _LABELS_LOWER[base], _SCHEDULE_SUFFIXES[suffix]
    raise ValueError(f"unknown sampler {label!r}; valid: {', '.join(SAMPLERS)} (or the A1111 labels "
                     f"{', '.join(A1111_LABELS)}, optionally followed by ' Karras' or ' Exponential')")


def is_second_order(name: str) -> bool:
    """Whether the sampler calls the model twice per step (A1111 doubles prompt-schedule steps)."""
    get_sampler(name)   # an unknown name is an error, not False
    return name in SECOND_ORDER_SAMPLERS


def uses_ancestral_noise(name: str) -> bool:
    """Whether the sampler draws fresh noise from the image generators at each step."""
    get_sampler(name)
    return name in ANCESTRAL_SAMPLERS


def uses_sde_noise(name: str) -> bool:
    """Whether the sampler needs Brownian noise over the whole schedule."""
    get_sampler(name)
    return name in SDE_SAMPLERS
