"""Which weight files a diffusers component folder (unet/, vae/, text_encoder/ ...) holds, and reading them."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from sdbake.runner.models.checkpoint_files import read_state_dict, refuse_pickle
from sdbake.schemas.errors import ModelError

# diffusers names its weights diffusion_pytorch_model.*, transformers model.* (pickles: pytorch_model.bin).
WEIGHT_STEMS = ("diffusion_pytorch_model", "model")
PICKLE_NAMES = ("diffusion_pytorch_model.bin", "pytorch_model.bin")


def _shards(index_file: Path) -> list[Path]:
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"cannot read shard index: {err}", file=str(index_file)) from err
    return [index_file.parent / name for name in sorted(set(weight_map.values()))]


def component_weight_files(part_dir: Path, *, allow_pickle: bool = False) -> list[Path]:
    """The weight files of one component: safetensors first (plain, then fp16 variant, each possibly sharded)."""
    for variant in ("", ".fp16"):
        for stem in WEIGHT_STEMS:
            single = part_dir / f"{stem}{variant}.safetensors"
            if single.is_file():
                return [single]
            index = part_dir / f"{stem}{variant}.safetensors.index.json"
            if index.is_file():
                return _shards(index)
    pickles = [part_dir / name for name in PICKLE_NAMES if (part_dir / name).is_file()]
    if pickles:
        if not allow_pickle:
            raise refuse_pickle(pickles[0])
        return pickles[:1]
    raise ModelError("no weight file (expected diffusion_pytorch_model.safetensors or model.safetensors)",
                     file=str(part_dir))


def read_component_weights(part_dir: Path, *, allow_pickle: bool, device: str
                           ) -> tuple[dict[str, torch.Tensor], list[Path]]:
    files = component_weight_files(part_dir, allow_pickle=allow_pickle)
    state_dict: dict[str, torch.Tensor] = {}
    for f in files:
        state_dict.update(read_state_dict(f, allow_pickle=allow_pickle, device=device))
    return state_dict, files
