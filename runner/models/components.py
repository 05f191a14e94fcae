"""Building the model parts (UNet, VAE, text encoders, tokenizers) from config files and state dicts.

Both diffusers folders and converted single files go through here, so that the two give the same
modules (same classes, same attention implementation) and therefore the same images.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import init_empty_weights
from sdbake.schemas.errors import ModelError

IGNORED_EXTRA_KEYS = ("position_ids",)    # old CLIP checkpoints store this buffer; modules rebuild it


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read config: {err}", file=str(path)) from err


def unet_from_config(config: dict):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel.from_config(config)


def vae_from_config(config: dict):
    from diffusers import AutoencoderKL
    return AutoencoderKL.from_config(config)


def text_encoder_from_config(config: dict):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    architectures = config.get("architectures") or ["CLIPTextModel"]
    cls = CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in architectures else CLIPTextModel
    return cls(CLIPTextConfig.from_dict(config))


def load_tokenizer(folder: Path, max_length: int):
    """The raw CLIP tokenizer of a folder; long prompts are chunked later by the encode stage."""
    from transformers import CLIPTokenizer
    if not folder.is_dir():
        raise ModelError("tokenizer folder missing", file=str(folder))
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    # Some saved tokenizers carry "no limit" (1e30); the text encoder's positions are the real limit.
    tokenizer.model_max_length = min(tokenizer.model_max_length, max_length)
    return tokenizer


def shape_mismatches(expected: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor]) -> list[str]:
    return [f"{k}: file {tuple(state_dict[k].shape)}, model {tuple(v.shape)}"
            for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]


def build_module(factory: Callable[[], torch.nn.Module], state_dict: dict[str, torch.Tensor], *,
                 what: str, source: Path, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Instantiate `factory()` without allocating weights, then take the file's tensors as its weights.

    Every parameter must come from the file with the right shape; anything else is a ModelError that
    names the file, rather than a half-random model.
    """
    with init_empty_weights():          # parameters on the meta device; buffers are real
        module = factory()
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    wrong_shape = shape_mismatches(expected, state_dict)
    unexpected = sorted(k for k in set(state_dict) - set(expected) if not k.endswith(IGNORED_EXTRA_KEYS))
    if missing or wrong_shape or unexpected:
        problems = []
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} tensors of wrong shape (e.g. {wrong_shape[0]})")
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise ModelError(f"{what} weights do not fit the expected architecture: {'; '.join(problems)}",
                         file=str(source))
    weights = {k: _to(state_dict[k], device, dtype) for k in expected}
    module.load_state_dict(weights, strict=True, assign=True)
    return module.to(device).eval().requires_grad_(False)


def _to(tensor: torch.Tensor, device: str, dtype: torch.dtype) -> torch.Tensor:
    target_dtype = dtype if tensor.is_floating_point() else tensor.dtype
    return tensor.to(device=device, dtype=target_dtype)
