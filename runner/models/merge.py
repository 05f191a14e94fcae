"""Checkpoint merging with A1111's Checkpoint Merger semantics, plus Merge Block Weighted's per-block alpha.

A1111 (modules/extras.py run_modelmerger) merges the raw state dicts of single-file checkpoints:
- weighted sum: (1 - alpha) * A + alpha * B; add difference: A + alpha * (B - C), where B - C is taken
  first for every key of B (a key that C lacks gives a zero difference);
- only keys containing "model" merge: in the LDM layout that is all of them, so the UNet, the VAE
  (first_stage_model.*) and the text encoder (cond_stage_model.*) all merge; CLIP's position_ids are
  skipped (kept from A); a key that B lacks is kept from A, and a key that only B has is added;
- an inpainting A (9 input channels) with a normal B merges the first 4 channels of conv_in;
- the arithmetic runs in the tensors' own dtype (no upcast), and "save as float16" halves the merged
  and added keys afterwards.
Merge Block Weighted (bbc-mc/sdweb-merge-block-weighted-gui) gives each UNet block its own alpha:
input_blocks.N -> INnn, middle_block -> M00, output_blocks.N -> OUTnn, time_embed -> IN00 and out.* ->
OUT11; every other key (text encoder, VAE) takes the base alpha.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from sdbake.runner.models.checkpoint_files import detect_family, read_state_dict, require_file
from sdbake.runner.models.ldm_layout import read_folder_as_ldm
from sdbake.schemas.errors import ModelError

SKIP_ON_MERGE = ("cond_stage_model.transformer.text_model.embeddings.position_ids",)
UNET_PREFIX = "model.diffusion_model."
_BLOCK = re.compile(r"\.(input_blocks|middle_block|output_blocks)\.(\d+)\.")
_BLOCK_NAMES = {"input_blocks": "IN", "middle_block": "M", "output_blocks": "OUT"}


def read_for_merge(path: Path, *, allow_pickle: bool = False) -> tuple[str, dict[str, torch.Tensor]]:
    """(family, every tensor of the model under the single-file keys) of a checkpoint file or SD1 folder."""
    path = require_file(Path(path), "checkpoint")
    state_dict = read_folder_as_ldm(path, allow_pickle=allow_pickle) if path.is_dir() else \
        read_state_dict(path, allow_pickle=allow_pickle, device="cpu")
    return detect_family(set(state_dict), path), state_dict


def block_of(key: str) -> str | None:
    """The Merge Block Weighted name of the UNet block a single-file key belongs to (None outside the UNet)."""
    if not key.startswith(UNET_PREFIX):
        return None
    if "time_embed" in key:
        return "IN00"
    if ".out." in key:
        return "OUT11"
    m = _BLOCK.search(key)
    if m is None:
        return None
    return "M00" if m[1] == "middle_block" else f"{_BLOCK_NAMES[m[1]]}{int(m[2]):02d}"


def merge_state_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], c: dict[str, torch.Tensor] | None,
                      *, method: str, alpha: float, block_alphas: dict[str, float] | None = None,
                      fp16: bool = False, names: tuple[str, str, str] = ("a", "b", "c")) -> dict[str, torch.Tensor]:
    """A merged state dict; `a` is consumed (its tensors are replaced, as A1111 replaces theta_0's)."""
    block_alphas = block_alphas or {}
    # A weight that would change something but names a block these models lack (a 25-number SD1 list
    # on an SDXL UNet) is a mistake; the same weight as the base alpha changes nothing either way.
    present = {block_of(k) for k in a if k in b}
    unused = sorted(block for block, weight in block_alphas.items() if block not in present and weight != alpha)
    if unused:
        raise ModelError(f"block weights for {', '.join(unused)}: the models have no such UNet block")
    if method == "add_difference":
        if c is None:
            raise ModelError("add_difference needs a third model")
        b = {k: (_checked(names[1], v, names[2], c[k], k) - c[k] if k in c else torch.zeros_like(v))
             if _merges(k) else v for k, v in b.items()}
    merged = dict(a)
    for key, tensor_a in a.items():
        if not _merges(key) or key not in b:
            continue
        weight = block_alphas.get(block_of(key), alpha)
        tensor_b = b[key]
        if _inpainting_pair(tensor_a, tensor_b, key, names):
            result = tensor_a.clone()
            result[:, 0:4] = _combine(method, tensor_a[:, 0:4], tensor_b, weight)
        else:
            result = _combine(method, _checked(names[0], tensor_a, names[1], tensor_b, key), tensor_b, weight)
        merged[key] = result.half() if fp16 else result
    for key, tensor_b in b.items():
        if _merges(key) and key not in a:
            merged[key] = tensor_b.half() if fp16 and tensor_b.is_floating_point() else tensor_b
    return merged


def _merges(key: str) -> bool:
    return "model" in key and key not in SKIP_ON_MERGE


def _combine(method: str, a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    # The exact expressions A1111 evaluates, so that rounding matches: (1 - M) * A + M * B, A + M * (B - C).
    if method == "weighted_sum":
        return (1 - alpha) * a + alpha * b
    return a + alpha * b


def _checked(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, key: str) -> torch.Tensor:
    if a.shape != b.shape:
        raise ModelError(f"models `{name_a}` and `{name_b}` have different architectures: {key} is "
                         f"{tuple(a.shape)} in `{name_a}`, {tuple(b.shape)} in `{name_b}`")
    return a


def _inpainting_pair(a: torch.Tensor, b: torch.Tensor, key: str, names: tuple[str, str, str]) -> bool:
    """A1111: an inpainting A (9-channel conv_in) takes a normal B's 4 channels; the reverse is refused."""
    if a.shape == b.shape or a.ndim != 4 or b.ndim != 4 or a.shape[:1] + a.shape[2:] != b.shape[:1] + b.shape[2:]:
        return False
    if a.shape[1] == 9 and b.shape[1] == 4:
        return True
    if a.shape[1] == 4 and b.shape[1] == 9:
        raise ModelError(f"to merge an inpainting model with a normal one, the inpainting model must be `a` "
                         f"(`{names[1]}` is the inpainting one: {key})")
    return False


def merge_files(recipe: dict, a: Path, b: Path, c: Path | None, *, names: tuple[str, str, str] = ("a", "b", "c"),
                allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The merged tensors that `recipe` (runner/merges.py merge_recipe) describes, from the input files."""
    family_a, sd_a = read_for_merge(a, allow_pickle=allow_pickle)
    family_b, sd_b = read_for_merge(b, allow_pickle=allow_pickle)
    sd_c = None
    if c is not None:
        family_c, sd_c = read_for_merge(c, allow_pickle=allow_pickle)
        if family_c != family_a:
            raise ModelError(f"cannot merge models of different families: `{names[0]}` is {family_a}, "
                             f"`{names[2]}` is {family_c}")
    if family_b != family_a:
        raise ModelError(f"cannot merge models of different families: `{names[0]}` is {family_a}, "
                         f"`{names[1]}` is {family_b}")
    merged = merge_state_dicts(sd_a, sd_b, sd_c, method=recipe["method"], alpha=recipe["alpha"],
                               block_alphas=recipe["alphas"], fp16=recipe["fp16"], names=names)
    return {k: v.contiguous() for k, v in merged.items()}


def file_metadata(recipe: dict) -> dict[str, str]:
    """The safetensors header metadata of a merged file: its recipe (by input hashes, no paths), in the
    `sd_merge_recipe` field A1111 writes, so the same merge gives the same bytes wherever it runs. One key
    only: safetensors writes the metadata map in its (Rust) hash map's order, which differs per process."""
    return {"sd_merge_recipe": json.dumps(recipe, sort_keys=True)}
