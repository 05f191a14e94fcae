"""The sampler and scheduler table: ComfyUI ids, A1111 labels and what the code needs to know of
each sampler. Pure data, no torch. Every other place reads it: the schema (names users may write),
the sampler registry (stages/samplers/registry.py adds the functions), the prompt schedule and the
infotext (A1111 labels)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplerInfo:
    label: str                                # A1111's label (modules/sd_samplers_kdiffusion.py)
    second_order: bool = False                # two model calls per step: A1111 schedules prompts over 2 x steps
    noise: str | None = None                  # "ancestral": fresh draws from the image generators each step;
                                              # "sde": a Brownian path over the whole schedule
    discard_penultimate_sigma: bool = False   # ComfyUI's KSampler: steps + 1 sigmas, the second-to-last dropped
    alias_of: str | None = None               # the same sampler under another ComfyUI id (its label parses to that)


SAMPLERS: dict[str, SamplerInfo] = {
    "euler": SamplerInfo("Euler"),
    "euler_ancestral": SamplerInfo("Euler a", noise="ancestral"),
    "heun": SamplerInfo("Heun", second_order=True),
    "dpm_2": SamplerInfo("DPM2", second_order=True, discard_penultimate_sigma=True),
    "dpm_2_ancestral": SamplerInfo("DPM2 a", second_order=True, noise="ancestral", discard_penultimate_sigma=True),
    "lms": SamplerInfo("LMS"),
    "dpmpp_2s_ancestral": SamplerInfo("DPM++ 2S a", second_order=True, noise="ancestral"),
    "dpmpp_sde": SamplerInfo("DPM++ SDE", second_order=True, noise="sde"),
    "dpmpp_2m": SamplerInfo("DPM++ 2M"),
    "dpmpp_2m_sde": SamplerInfo("DPM++ 2M SDE", noise="sde"),
    "dpmpp_3m_sde": SamplerInfo("DPM++ 3M SDE", noise="sde"),
    "ddim": SamplerInfo("DDIM"),
    # ComfyUI's *_gpu ids draw the Brownian tree on the GPU; sdbake draws every noise on the CPU (the
    # same bits on any device), so each is its CPU twin under another name.
    "dpmpp_sde_gpu": SamplerInfo("DPM++ SDE", second_order=True, noise="sde", alias_of="dpmpp_sde"),
    "dpmpp_2m_sde_gpu": SamplerInfo("DPM++ 2M SDE", noise="sde", alias_of="dpmpp_2m_sde"),
    "dpmpp_3m_sde_gpu": SamplerInfo("DPM++ 3M SDE", noise="sde", alias_of="dpmpp_3m_sde"),
    # A1111 has no DDPM sampler: "DDPM" is ComfyUI's display name. "LCM" is A1111's (sd_samplers_lcm.py).
    "ddpm": SamplerInfo("DDPM", noise="ancestral"),
    "lcm": SamplerInfo("LCM", noise="ancestral"),
    # A1111's "UniPC" (sd_samplers_timesteps.py) is its own port with the variant as a setting (default
    # bh1); the numbers here are ComfyUI's. "UniPC BH2" is ours: A1111 has no label for the variant.
    "uni_pc": SamplerInfo("UniPC", discard_penultimate_sigma=True),
    "uni_pc_bh2": SamplerInfo("UniPC BH2", discard_penultimate_sigma=True),
}
# ComfyUI scheduler ids -> A1111's "Schedule type" labels (modules/sd_schedulers.py); ComfyUI's
# ddim_uniform is what A1111 calls "DDIM".
SCHEDULERS: dict[str, str] = {
    "normal": "Normal", "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform",
    "simple": "Simple", "ddim_uniform": "DDIM", "beta": "Beta", "kl_optimal": "KL Optimal",
}

SAMPLER_IDS = tuple(SAMPLERS)
SCHEDULER_IDS = tuple(SCHEDULERS)
SECOND_ORDER_SAMPLERS = frozenset(name for name, info in SAMPLERS.items() if info.second_order)
ANCESTRAL_SAMPLERS = frozenset(name for name, info in SAMPLERS.items() if info.noise == "ancestral")
SDE_SAMPLERS = frozenset(name for name, info in SAMPLERS.items() if info.noise == "sde")
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset(
    name for name, info in SAMPLERS.items() if info.discard_penultimate_sigma)

_SAMPLER_BY_LABEL = {info.label.lower(): name for name, info in SAMPLERS.items() if info.alias_of is None}
_SCHEDULER_BY_LABEL = {label.lower(): name for name, label in SCHEDULERS.items()}
# A1111's pre-1.6 combined labels ("DPM++ 2M Karras") end in one of these schedules.
_LABEL_SCHEDULE_SUFFIXES = ("karras", "exponential")


def parse_sampler(label: str) -> tuple[str, str | None]:
    """`"DPM++ 2M Karras"` -> ("dpmpp_2m", "karras"); a ComfyUI id -> (id, None); any case and spacing.
    ValueError naming the known ids and labels otherwise."""
    text = " ".join(label.strip().lower().split())
    if text in SAMPLERS:
        return text, None
    if text in _SAMPLER_BY_LABEL:
        return _SAMPLER_BY_LABEL[text], None
    head, _, suffix = text.rpartition(" ")
    if suffix in _LABEL_SCHEDULE_SUFFIXES and head in _SAMPLER_BY_LABEL:
        return _SAMPLER_BY_LABEL[head], suffix
    raise ValueError(f"unknown sampler {label!r} (known: {', '.join(SAMPLERS)}, or an A1111 label such "
                     f"as 'DPM++ 2M Karras'){_did_you_mean(text, [*SAMPLERS, *_SAMPLER_BY_LABEL])}")


def parse_scheduler(label: str) -> str:
    text = " ".join(label.strip().split()).lower()
    if text in SCHEDULERS:
        return text
    if text in _SCHEDULER_BY_LABEL:
        return _SCHEDULER_BY_LABEL[text]
    raise ValueError(f"unknown scheduler {label!r} (known: {', '.join(SCHEDULERS)})"
                     f"{_did_you_mean(text, [*SCHEDULERS, *_SCHEDULER_BY_LABEL])}")


def _did_you_mean(text: str, choices: list[str]) -> str:
    hint = difflib.get_close_matches(text, choices, n=1, cutoff=0.6)
    return f" (did you mean `{hint[0]}`?)" if hint else ""


def a1111_sampler_label(sampler: str, scheduler: str) -> tuple[str, str]:
    """(Sampler value, Schedule type value) as A1111 writes them: dpmpp_2m + karras -> DPM++ 2M, Karras."""
    try:
        return SAMPLERS[sampler].label, SCHEDULERS[scheduler]
    except KeyError as exc:
        # The recipe schema validates sampler and scheduler names: a miss here is a bug, not a guess.
        raise ValueError(f"no A1111 label for {exc.args[0]!r}: add it to schemas/names.py") from None
