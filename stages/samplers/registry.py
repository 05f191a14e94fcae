"""Sampler functions by ComfyUI id. What each sampler is (A1111 label, second order, noise kind) is
the torch-free table in schemas/names.py; this module adds the functions and gives each its name."""
from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import torch
from sdbake.schemas.names import SAMPLERS as SAMPLER_TABLE
from sdbake.schemas.names import SECOND_ORDER_SAMPLERS

from .carry import Carry, history_for
from .cfg_pp_samplers import (
    sample_dpmpp_2m_cfg_pp,
    sample_dpmpp_2s_ancestral_cfg_pp,
    sample_euler_ancestral_cfg_pp,
    sample_euler_cfg_pp,
)
from .ddpm_samplers import sample_ddpm, sample_lcm
from .dpm_solver_fast import sample_dpm_adaptive, sample_dpm_fast
from .dpm_solver_samplers import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2m_sde_heun,
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
from .plms_samplers import sample_plms
from .restart_samplers import sample_restart
from .stepping import check_sigmas
from .uni_pc_samplers import sample_uni_pc, sample_uni_pc_bh2

Sampler = Callable[..., tuple[torch.Tensor, Carry]]

SAMPLER_FUNCTIONS: dict[str, Sampler] = {
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
    # the *_gpu ids differ in ComfyUI only in where the Brownian tree is drawn (schemas/names.py)
    "dpmpp_sde_gpu": sample_dpmpp_sde,
    "dpmpp_2m_sde_gpu": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde_gpu": sample_dpmpp_3m_sde,
    "ddpm": sample_ddpm,
    "lcm": sample_lcm,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
    "plms": sample_plms,
    "dpmpp_2m_sde_heun": sample_dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": sample_dpmpp_2m_sde_heun,
    # ComfyUI's ids (eta 0) and A1111's "DPM fast" / "DPM adaptive" (eta 1): the table's eta is passed
    "dpm_fast": sample_dpm_fast,
    "dpm_adaptive": sample_dpm_adaptive,
    "dpm_fast_a1111": sample_dpm_fast,
    "restart": sample_restart,
    "dpm_adaptive_a1111": sample_dpm_adaptive,
    # A1111's DDIM CFG++ at eta 0 is the CFG++ Euler step (cfg_pp_samplers.py); its cfg / 12.5 is the denoiser's
    "ddim_cfg_pp": sample_euler_cfg_pp,
    "euler_cfg_pp": sample_euler_cfg_pp,
    "euler_ancestral_cfg_pp": sample_euler_ancestral_cfg_pp,
    "dpmpp_2m_cfg_pp": sample_dpmpp_2m_cfg_pp,
    "dpmpp_2s_ancestral_cfg_pp": sample_dpmpp_2s_ancestral_cfg_pp,
}


def _named(name: str, function: Sampler) -> Sampler:
    """`function` as sampler `name`: it sees only a carry of its own (a carry of another sampler is a
    position, not a history), gets a noise source when it needs one, and its carry says who made it.
    `steps_before` / `steps_after` place the slice in its whole schedule (how many steps the schedule has
    before and after it); the samplers whose step rules look at the whole schedule (uni_pc) take them.
    A sampler with an `eta` parameter gets the table's (dpm_fast: ComfyUI's 0, dpm_fast_a1111: A1111's 1)."""
    needs_noise = SAMPLER_TABLE[name].noise is not None
    needs_position = "steps_after" in inspect.signature(function).parameters
    eta = {"eta": SAMPLER_TABLE[name].eta} if "eta" in inspect.signature(function).parameters else {}

    @functools.wraps(function)
    def sample(denoise, x: torch.Tensor, sigmas: torch.Tensor, *, noise_sampler=None, carry: Carry | None = None,
               callback=None, steps_before: int = 0, steps_after: int = 0) -> tuple[torch.Tensor, Carry]:
        check_sigmas(sigmas)
        if needs_noise and noise_sampler is None:
            raise ValueError(f"sampler {name!r} adds noise: it needs a noise_sampler (see noise_sampler_for)")
        position = {"steps_before": steps_before, "steps_after": steps_after} if needs_position else {}
        x, new_carry = function(denoise, x, sigmas, noise_sampler=noise_sampler,
                                carry=history_for(name, sigmas, carry), callback=callback, **position, **eta)
        return x, dataclasses.replace(new_carry, sampler=name)
    return sample


SAMPLERS: dict[str, Sampler] = {name: _named(name, function) for name, function in SAMPLER_FUNCTIONS.items()}


def get_sampler(name: str) -> Sampler:
    """The sampler function for a ComfyUI id; ValueError listing the valid ids otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def is_second_order(name: str) -> bool:
    """Whether the sampler calls the model twice per step (A1111 doubles prompt-schedule steps)."""
    get_sampler(name)   # an unknown name is an error, not False
    return name in SECOND_ORDER_SAMPLERS

