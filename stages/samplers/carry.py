"""What a sampler hands to its own continuation, so that a split run equals one run bit for bit.

A multistep sampler needs the denoised estimates, derivatives, sigmas or log-SNR step sizes of the
steps it already took; ComfyUI restarts them at every KSampler call, which is why its splits drift.
The carry keeps them, as tensors, and serializes to safetensors-ready tensors plus JSON metadata.
RNG state is not in here: it belongs to the noise source (`ImageNoise.get_state`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CARRY_FORMAT = 1
_HISTORY_FIELDS = ("denoised", "derivatives", "sigmas", "step_sizes")


@dataclass(frozen=True)
class Carry:
    """History of a sampler's past steps, newest first; `sigma` is where the latent now stands."""
    sigma: torch.Tensor
    denoised: tuple[torch.Tensor, ...] = ()      # D(x) of past steps (dpmpp_2m, dpmpp_2m_sde, dpmpp_3m_sde;
                                                 # dpmpp_2m_cfg_pp: the unconditional D)
    derivatives: tuple[torch.Tensor, ...] = ()   # (x - D(x)) / sigma of past steps (lms)
    sigmas: tuple[torch.Tensor, ...] = ()        # sigmas of past steps (lms, dpmpp_2m)
    step_sizes: tuple[torch.Tensor, ...] = ()    # past step sizes h in log-SNR (dpmpp_2m_sde, dpmpp_3m_sde)
    sampler: str = ""                            # who made it: the registry stamps the name


def history_for(sampler: str, sigmas: torch.Tensor, carry: Carry | None) -> Carry | None:
    """The carry a sampler may continue from, or None to start fresh.

    A carry must stand at the first sigma of the slice (else the continuation does not line up: an
    error, never a guess). A carry made by another sampler is valid as a position but its history
    means something else, so the new sampler starts its own history (as switching samplers does).
    """
    if carry is None:
        return None
    if float(carry.sigma) != float(sigmas[0]):
        raise ValueError(f"the carry stands at sigma {float(carry.sigma)!r} but the sigmas to walk start at "
                         f"{float(sigmas[0])!r}: the continuation does not line up with the previous run")
    return carry if carry.sampler == sampler else None


def carry_to_tensors(carry: Carry) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors named `sigma`, `denoised.0`, ... and JSON-able metadata. The tensors are contiguous
    copies on their device: a carry's sigmas are views into the schedule, and safetensors refuses
    tensors that share memory."""
    tensors = {"sigma": _own_copy(carry.sigma)}
    counts = {}
    for name in _HISTORY_FIELDS:
        history = getattr(carry, name)
        counts[name] = len(history)
        for index, tensor in enumerate(history):
            tensors[f"{name}.{index}"] = _own_copy(tensor)
    return tensors, {"format": CARRY_FORMAT, "sampler": carry.sampler, "counts": counts}


def _own_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clone(memory_format=torch.contiguous_format)


def carry_from_tensors(tensors: dict[str, torch.Tensor], meta: dict,
                       device: torch.device | str | None = None) -> Carry:
    """Inverse of `carry_to_tensors`; tensors are moved to `device` when given."""
    if meta.get("format") != CARRY_FORMAT:
        raise ValueError(f"unsupported sampler carry format {meta.get('format')!r} (expected {CARRY_FORMAT})")

    def load(key: str) -> torch.Tensor:
        tensor = tensors[key]
        return tensor if device is None else tensor.to(device)

    histories = {name: tuple(load(f"{name}.{index}") for index in range(meta["counts"][name]))
                 for name in _HISTORY_FIELDS}
    return Carry(sampler=meta["sampler"], sigma=load("sigma"), **histories)

