"""Sampler and scheduler names users already know (ComfyUI ids, A1111 labels); pure data, no torch."""
from __future__ import annotations

SAMPLER_IDS = (
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral",
    "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim",
)
SCHEDULER_IDS = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta")

# A1111's sampler labels (modules/sd_samplers_kdiffusion.py), lower-cased, mapped to ComfyUI ids.
A1111_SAMPLER_LABELS = {
    "euler": "euler", "euler a": "euler_ancestral", "heun": "heun", "dpm2": "dpm_2",
    "dpm2 a": "dpm_2_ancestral", "lms": "lms", "dpm++ 2s a": "dpmpp_2s_ancestral",
    "dpm++ sde": "dpmpp_sde", "dpm++ 2m": "dpmpp_2m", "dpm++ 2m sde": "dpmpp_2m_sde",
    "dpm++ 3m sde": "dpmpp_3m_sde", "ddim": "ddim",
}
# Suffixes of A1111's pre-1.6 combined labels ("DPM++ 2M Karras") and its "Schedule type" values.
A1111_SCHEDULER_LABELS = {
    "karras": "karras", "exponential": "exponential", "normal": "normal", "simple": "simple",
    "sgm uniform": "sgm_uniform", "ddim": "ddim_uniform", "beta": "beta",
}


def parse_sampler(label: str) -> tuple[str, str | None]:
    """`"DPM++ 2M Karras"` -> ("dpmpp_2m", "karras"); a ComfyUI id -> (id, None). ValueError if unknown."""
    text = " ".join(label.strip().split())
    if text in SAMPLER_IDS:
        return text, None
    lowered = text.lower()
    if lowered in A1111_SAMPLER_LABELS:
        return A1111_SAMPLER_LABELS[lowered], None
    for suffix, scheduler in (("karras", "karras"), ("exponential", "exponential")):
        if lowered.endswith(" " + suffix):
            head = lowered[: -len(suffix) - 1]
            if head in A1111_SAMPLER_LABELS:
                return A1111_SAMPLER_LABELS[head], scheduler
    raise ValueError(f"unknown sampler {label!r} (known: {', '.join(SAMPLER_IDS)}, or an A1111 label such "
                     f"as 'DPM++ 2M Karras')")


def parse_scheduler(label: str) -> str:
    text = " ".join(label.strip().split()).lower()
    if text in SCHEDULER_IDS:
        return text
    if text in A1111_SCHEDULER_LABELS:
        return A1111_SCHEDULER_LABELS[text]
    raise ValueError(f"unknown scheduler {label!r} (known: {', '.join(SCHEDULER_IDS)})")
