"""The sampler and scheduler table: ComfyUI ids, A1111 labels and what the code needs to know of
each sampler. Pure data, no torch. Every other place reads it: the schema (names users may write),
the sampler registry (stages/samplers/registry.py adds the functions), the prompt schedule and the
infotext (A1111 labels)."""
from __future__ import annotations

from dataclasses import dataclass

from sdbake.schemas.errors import did_you_mean


@dataclass(frozen=True)
class SamplerInfo:
    label: str                                # A1111's label (modules/sd_samplers_kdiffusion.py)
    second_order: bool = False                # two model calls per step: A1111 schedules prompts over 2 x steps
    noise: str | None = None                  # "ancestral": fresh draws from the image generators each step;
                                              # "sde": a Brownian path over the whole schedule
    discard_penultimate_sigma: bool = False   # ComfyUI's KSampler: steps + 1 sigmas, the second-to-last dropped
    alias_of: str | None = None               # the same sampler under another ComfyUI id (its label parses to that)
    vp_initial_noise: bool = False            # A1111's timestep samplers: txt2img starts from unit noise in the
                                              # variance-preserving latent, x = noise * sqrt(1 + sigma_max^2)
    whole_range: bool = False                 # chooses its own steps over the range it is given (dpm_fast,
                                              # dpm_adaptive): it runs any slice as a whole run, but a split
                                              # run would differ from one run, so splits are refused
    eta: float | None = None                  # the eta it runs with, where A1111 passes its "Eta for k-diffusion
                                              # samplers" (default 1): an eta other than 1 is written to the
                                              # infotext as `Eta`, and import reads it back to this entry
    needs_uncond: bool = False                # CFG++: steps with the unconditional prediction of each model call too
    cfg_scale: float = 1.0                    # A1111's cond_scale multiplier: DDIM CFG++ guides with cfg / 12.5


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
    # A1111's "PLMS" (sd_samplers_timesteps_impl.py); ComfyUI has none (its ipndm is the nearest).
    "plms": SamplerInfo("PLMS", vp_initial_noise=True),
    # k-diffusion's sample_dpmpp_2m_sde with solver_type 'heun' (A1111's table passes it as an option)
    "dpmpp_2m_sde_heun": SamplerInfo("DPM++ 2M SDE Heun", noise="sde"),
    "dpmpp_2m_sde_heun_gpu": SamplerInfo("DPM++ 2M SDE Heun", noise="sde", alias_of="dpmpp_2m_sde_heun"),
    # k-diffusion's DPM-Solver drivers over the range they are given. ComfyUI runs them with eta 0; A1111
    # with its eta option (1 by default: fresh noise from the image generators every step), so its labels
    # "DPM fast" and "DPM adaptive" are the *_a1111 ids, and an infotext with `Eta: 0` is ComfyUI's.
    "dpm_fast": SamplerInfo("DPM fast", whole_range=True, eta=0.0),
    "dpm_adaptive": SamplerInfo("DPM adaptive", whole_range=True, eta=0.0),
    "dpm_fast_a1111": SamplerInfo("DPM fast", noise="ancestral", whole_range=True, eta=1.0),
    # A1111's Restart (sd_samplers_extra.py restart_sampler): Heun steps, with noise from the image
    # generators to go back up; from 20 steps on it rebuilds its schedule over the range it is given
    "restart": SamplerInfo("Restart", second_order=True, noise="ancestral", whole_range=True),
    "dpm_adaptive_a1111": SamplerInfo("DPM adaptive", noise="ancestral", whole_range=True, eta=1.0),
    # CFG++ (stages/samplers/cfg_pp_samplers.py). A1111 v1.10 has "DDIM CFG++" only (its cfg divided by 12.5);
    # the other labels are ours, for ComfyUI's ids.
    "ddim_cfg_pp": SamplerInfo("DDIM CFG++", vp_initial_noise=True, needs_uncond=True, cfg_scale=1 / 12.5),
    "euler_cfg_pp": SamplerInfo("Euler CFG++", needs_uncond=True),
    "euler_ancestral_cfg_pp": SamplerInfo("Euler a CFG++", noise="ancestral", needs_uncond=True),
    "dpmpp_2m_cfg_pp": SamplerInfo("DPM++ 2M CFG++", needs_uncond=True),
    "dpmpp_2s_ancestral_cfg_pp": SamplerInfo("DPM++ 2S a CFG++", second_order=True, noise="ancestral",
                                             needs_uncond=True),
}
# Scheduler ids -> A1111's "Schedule type" labels (modules/sd_schedulers.py); ComfyUI's ddim_uniform is
# what A1111 calls "DDIM". polyexponential and align_your_steps are A1111's names: ComfyUI's KSampler has
# neither (only its custom-sampling nodes do), so exporting one to ComfyUI is reported.
SCHEDULERS: dict[str, str] = {
    "normal": "Normal", "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform",
    "simple": "Simple", "ddim_uniform": "DDIM", "beta": "Beta", "kl_optimal": "KL Optimal",
    "polyexponential": "Polyexponential", "align_your_steps": "Align Your Steps",
}

SAMPLER_IDS = tuple(SAMPLERS)
SCHEDULER_IDS = tuple(SCHEDULERS)
SECOND_ORDER_SAMPLERS = frozenset(name for name, info in SAMPLERS.items() if info.second_order)
ANCESTRAL_SAMPLERS = frozenset(name for name, info in SAMPLERS.items() if info.noise == "ancestral")
SDE_SAMPLERS = frozenset(name for name, info in SAMPLERS.items() if info.noise == "sde")
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset(
    name for name, info in SAMPLERS.items() if info.discard_penultimate_sigma)
WHOLE_RANGE_SAMPLERS = frozenset(name for name, info in SAMPLERS.items() if info.whole_range)

# A label alone means A1111's default eta, 1: where two entries share a label, the one with eta 1 wins.
_SAMPLER_BY_LABEL = {info.label.lower(): name for name, info in sorted(
    SAMPLERS.items(), key=lambda item: item[1].eta == 1.0) if info.alias_of is None}
# A1111 v1.10's sampler aliases (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py), lower-cased.
A1111_SAMPLER_ALIASES = {
    "k_euler_a": "euler_ancestral", "k_euler_ancestral": "euler_ancestral", "k_euler": "euler", "k_lms": "lms",
    "k_heun": "heun", "k_dpm_2": "dpm_2", "k_dpm_2_a": "dpm_2_ancestral", "k_dpmpp_2s_a": "dpmpp_2s_ancestral",
    "k_dpmpp_2m": "dpmpp_2m", "k_dpmpp_sde": "dpmpp_sde", "k_dpmpp_2m_sde": "dpmpp_2m_sde",
    "k_dpmpp_3m_sde": "dpmpp_3m_sde", "k_dpmpp_2m_sde_heun": "dpmpp_2m_sde_heun",
    "k_dpm_fast": "dpm_fast_a1111", "k_dpm_ad": "dpm_adaptive_a1111", "ddim_cfgpp": "ddim_cfg_pp",
}
# What A1111 v1.10's "Automatic" schedule type means per sampler (the `scheduler` option of its sampler
# table); a sampler without one uses the model's own discretisation, ComfyUI's `normal`. A1111's timestep
# samplers (DDIM, PLMS, DDIM CFG++) ignore the schedule type and walk timesteps 1, 1 + s, ...
# (s = 1000 // steps): ComfyUI's ddim_uniform, which adds the last step to sigma 0 (docs/design.md).
A1111_AUTOMATIC_SCHEDULERS = {
    "dpmpp_2m": "karras", "dpmpp_sde": "karras", "dpmpp_2s_ancestral": "karras", "dpm_2": "karras",
    "dpm_2_ancestral": "karras", "dpmpp_2m_sde": "exponential", "dpmpp_3m_sde": "exponential",
    "ddim": "ddim_uniform", "plms": "ddim_uniform", "dpmpp_2m_sde_heun": "exponential", "restart": "karras",
    "ddim_cfg_pp": "ddim_uniform",
}
AUTOMATIC = "automatic"
# A1111 schedule names and aliases that are not a ComfyUI id or an A1111 label of one: its `uniform`
# is the model's own discretisation, ComfyUI's `normal`.
_SCHEDULER_ALIASES = {"uniform": "normal", "sgmuniform": "sgm_uniform", "ddim": "ddim_uniform"}


def _scheduler_names() -> dict[str, str]:
    """Every spelling of a schedule a sampler label may end with -> its id (or `automatic`)."""
    names = {label.lower(): name for name, label in SCHEDULERS.items()}
    names.update({name: name for name in SCHEDULERS})
    names.update({alias: name for alias, name in _SCHEDULER_ALIASES.items() if name in SCHEDULERS})
    names[AUTOMATIC] = AUTOMATIC
    return names


def parse_sampler(label: str) -> tuple[str, str | None]:
    """`"DPM++ 2M Karras"` -> ("dpmpp_2m", "karras"); a ComfyUI id -> (id, None); any case and spacing.
    As A1111's get_sampler_and_scheduler, a label may end with any schedule type's label or name
    (`automatic` when it ends with "Automatic"). ValueError naming the known ids and labels otherwise."""
    text = " ".join(label.strip().lower().split())
    found = _sampler_name(text)
    if found:
        return found, None
    for suffix, scheduler in sorted(_scheduler_names().items(), key=lambda item: -len(item[0])):
        head = text[:-len(suffix)].rstrip() if text.endswith(" " + suffix) else None
        if head and _sampler_name(head):
            return _sampler_name(head), scheduler
    raise ValueError(f"unknown sampler {label!r} (known: {', '.join(SAMPLERS)}, or an A1111 label such "
                     f"as 'DPM++ 2M Karras'){did_you_mean(text, [*SAMPLERS, *_SAMPLER_BY_LABEL])}")


def _sampler_name(text: str) -> str | None:
    if text in SAMPLERS:
        return text
    return _SAMPLER_BY_LABEL.get(text) or A1111_SAMPLER_ALIASES.get(text)


def parse_scheduler(label: str) -> str:
    """A scheduler id or an A1111 "Schedule type" label -> the id; "Automatic" -> `automatic`, which the
    recipe resolves per sampler (automatic_scheduler)."""
    text = " ".join(label.strip().split()).lower()
    found = _scheduler_names().get(text)
    if found:
        return found
    raise ValueError(f"unknown scheduler {label!r} (known: {', '.join(SCHEDULERS)}, or Automatic)"
                     f"{did_you_mean(text, [*SCHEDULERS, *(label.lower() for label in SCHEDULERS.values())])}")


def split_refusal(sampler: str) -> str | None:
    """Why a sample stage with `sampler` cannot be one part of a split run (it continues a run, or
    ends before its last step), or None when it can: a whole-range sampler picks its steps from the
    range it is given, so two parts do not make the steps of one run."""
    info = SAMPLERS.get(sampler)
    if info is None or not info.whole_range:
        return None
    return (f"{info.label} ({sampler}) chooses its own steps over the range it is given, so a split run "
            f"would differ from one run: run it in one sample stage, or split with another sampler")


def a1111_eta(sampler: str) -> float | None:
    """The `Eta` an infotext must carry for A1111 to run `sampler` as sdbake does (None: its default)."""
    eta = SAMPLERS[sampler].eta
    return eta if eta is not None and eta != 1.0 else None


def with_eta(sampler: str, eta: float) -> str | None:
    """The entry with `sampler`'s A1111 label that runs with `eta` (DPM fast + Eta 0 -> dpm_fast), or
    None when sdbake has none; a sampler whose eta A1111 does not use is itself."""
    info = SAMPLERS[sampler]
    if info.eta is None:
        return sampler
    return next((name for name, other in SAMPLERS.items()
                 if other.label == info.label and other.alias_of is None and other.eta == eta), None)


def automatic_scheduler(sampler: str) -> str:
    """The schedule A1111 v1.10 uses for `sampler` when its schedule type is "Automatic"."""
    return A1111_AUTOMATIC_SCHEDULERS.get(sampler, "normal")


def a1111_sampler_label(sampler: str, scheduler: str) -> tuple[str, str]:
    """(Sampler value, Schedule type value) as A1111 writes them: dpmpp_2m + karras -> DPM++ 2M, Karras."""
    try:
        return SAMPLERS[sampler].label, SCHEDULERS[scheduler]
    except KeyError as exc:
        # The recipe schema validates sampler and scheduler names: a miss here is a bug, not a guess.
        raise ValueError(f"no A1111 label for {exc.args[0]!r}: add it to schemas/names.py") from None
