"""Single-file checkpoints in the original LDM/SGM layout (A1111/ComfyUI model folders), converted to
diffusers modules offline with the config folders the project ships (runner/configs/<family>)."""
from __future__ import annotations

from pathlib import Path

import torch
from sdbake.runner.models.checkpoint_files import (
    SDXL_TEXT2_PREFIX,
    UNET_PREFIX,
    V_PREDICTION_MARKER,
    detect_family,
    is_single_file_key,
    read_state_dict,
)

SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def shipped_config_dir(family: str) -> Path:
    return SHIPPED_CONFIGS / family


def read_single_file(path: Path, *, allow_pickle: bool, device: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(family, the tensors inference needs) of one checkpoint file."""
    state_dict = read_state_dict(path, allow_pickle=allow_pickle, device=device, keep=is_single_file_key)
    return detect_family(set(state_dict), path), state_dict


def prediction_type_of(state_dict: dict[str, torch.Tensor], default: str) -> str:
    return "v_prediction" if V_PREDICTION_MARKER in state_dict else default


def unet_in_channels(state_dict: dict[str, torch.Tensor]) -> int | None:
    """9 for inpainting checkpoints (latent + mask + masked latent), 4 otherwise."""
    conv_in = state_dict.get(UNET_PREFIX + "input_blocks.0.0.weight")
    return None if conv_in is None else int(conv_in.shape[1])


def convert_unet(state_dict: dict[str, torch.Tensor], unet_config: dict) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    return convert_ldm_unet_checkpoint(state_dict, unet_config)


def convert_vae(state_dict: dict[str, torch.Tensor], vae_config: dict) -> dict[str, torch.Tensor]:
    """VAE weights of a checkpoint (first_stage_model.*) or of a standalone LDM VAE file (encoder.*)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    return convert_ldm_vae_checkpoint(state_dict, vae_config)


def is_ldm_vae(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("encoder.down.", "first_stage_model.encoder.down.")) for k in state_dict)


def convert_clip_l(state_dict: dict[str, torch.Tensor], *, flattened: bool) -> dict[str, torch.Tensor]:
    """SD1's text encoder (cond_stage_model.transformer.*) or SDXL's first one (conditioner.embedders.0.*)."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
    converted = convert_ldm_clip_checkpoint(state_dict)
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); the file keeps the old names.
    return {k.removeprefix("text_model."): v for k, v in converted.items()} if flattened else converted


def convert_open_clip_g(state_dict: dict[str, torch.Tensor], text_model,
                        prefix: str = SDXL_TEXT2_PREFIX) -> dict[str, torch.Tensor]:
    """SDXL's second text encoder (OpenCLIP ViT-bigG: conditioner.embedders.1.model.* in a base,
    conditioner.embedders.0.model.* in a refiner)."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    return convert_open_clip_checkpoint(text_model, state_dict, prefix=prefix)
