"""Diffusers key names -> the original LDM single-file layout (model.diffusion_model.*, first_stage_model.*,
cond_stage_model.transformer.*): the inverse of diffusers' single-file conversion, for SD1.x.

Checkpoint merging works on that layout (A1111's Checkpoint Merger and the block-weight extensions name
keys and blocks by it), so a diffusers folder is renamed into it before a merge; the renaming moves
tensors only (the VAE's attention projections gain two unit dimensions), never changes a value.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from sdbake.runner.models import components
from sdbake.runner.models.folder_files import read_component_weights
from sdbake.schemas.errors import ModelError

RESNET_TO_LDM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                 ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
UNET_DIRECT = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _resnet_key(rest: str) -> str:
    for diffusers_name, ldm_name in RESNET_TO_LDM:
        if rest.startswith(diffusers_name + "."):
            return ldm_name + rest[len(diffusers_name):]
    raise KeyError(rest)


def _unet_rules(layers_per_block: int, up_blocks_with_attention: set[int]):
    """(diffusers key pattern, its LDM name) for every UNet key that is not in UNET_DIRECT."""
    per_level = layers_per_block + 1

    def upsampler(m) -> str:
        slot = 2 if int(m[1]) in up_blocks_with_attention else 1
        return f"output_blocks.{per_level * int(m[1]) + layers_per_block}.{slot}.conv.{m[2]}"
    return (
        (r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
         lambda m: f"input_blocks.{per_level * int(m[1]) + int(m[2]) + 1}.0.{_resnet_key(m[3])}"),
        (r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
         lambda m: f"input_blocks.{per_level * int(m[1]) + int(m[2]) + 1}.1.{m[3]}"),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)",
         lambda m: f"input_blocks.{per_level * (int(m[1]) + 1)}.0.op.{m[2]}"),
        (r"mid_block\.resnets\.(\d+)\.(.*)", lambda m: f"middle_block.{2 * int(m[1])}.{_resnet_key(m[2])}"),
        (r"mid_block\.attentions\.0\.(.*)", lambda m: f"middle_block.1.{m[1]}"),
        (r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
         lambda m: f"output_blocks.{per_level * int(m[1]) + int(m[2])}.0.{_resnet_key(m[3])}"),
        (r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
         lambda m: f"output_blocks.{per_level * int(m[1]) + int(m[2])}.1.{m[3]}"),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", upsampler),
    )


def unet_to_ldm(state_dict: dict[str, torch.Tensor], layers_per_block: int,
                up_blocks_with_attention: set[int]) -> dict[str, torch.Tensor]:
    rules = _unet_rules(layers_per_block, up_blocks_with_attention)
    out = {}
    for key, value in state_dict.items():
        head, _, tail = key.rpartition(".")          # tail: weight / bias
        if head in UNET_DIRECT:
            out[f"{UNET_DIRECT[head]}.{tail}"] = value
            continue
        for pattern, ldm_name in rules:
            if m := re.match(pattern, key):
                out[ldm_name(m)] = value
                break
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
    return out


VAE_ATTENTION_TO_LDM = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def vae_to_ldm(state_dict: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        key_ldm = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key_ldm):
            key_ldm = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key_ldm):
            key_ldm = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key_ldm):
            key_ldm = f"decoder.up.{num_levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key_ldm):
            key_ldm = f"decoder.up.{num_levels - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key_ldm):
            key_ldm = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key_ldm):
            rest = m[2]
            for diffusers_name, ldm_name in VAE_ATTENTION_TO_LDM:
                rest = rest.replace(diffusers_name + ".", ldm_name + ".")
            key_ldm = f"{m[1]}.mid.attn_1.{rest}"
            if value.ndim == 2:                # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        out[key_ldm] = value
    return out


def ldm_state_dict(unet: dict[str, torch.Tensor], unet_config: dict, vae: dict[str, torch.Tensor],
                   vae_config: dict, text_encoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An SD1.x model's diffusers state dicts under the original single-file keys."""
    with_attention = {i for i, t in enumerate(unet_config["up_block_types"]) if "CrossAttn" in t}
    unet_ldm = unet_to_ldm(unet, unet_config["layers_per_block"], with_attention)
    vae_ldm = vae_to_ldm(vae, len(vae_config["block_out_channels"]))
    # transformers >= 5.6 saves CLIPTextModel without the `text_model.` level that the file layout has
    text = {("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in text_encoder.items()}
    return {**{f"model.diffusion_model.{k}": v for k, v in unet_ldm.items()},
            **{f"first_stage_model.{k}": v for k, v in vae_ldm.items()},
            **{f"cond_stage_model.transformer.{k}": v for k, v in text.items()}}


def read_folder_as_ldm(folder: Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The weights of an SD1.x diffusers folder under the single-file keys (read on the CPU)."""
    index = components.read_json(folder / "model_index.json")
    if not str(index.get("_class_name", "")).startswith("StableDiffusionPipeline"):
        raise ModelError(f"only SD1.x diffusers folders can be merged (this is {index.get('_class_name')}); "
                         "merge single-file checkpoints instead", file=str(folder))
    parts = {}
    for part in ("unet", "vae", "text_encoder"):
        parts[part], _ = read_component_weights(folder / part, allow_pickle=allow_pickle, device="cpu")
    try:
        return ldm_state_dict(parts["unet"], components.read_json(folder / "unet" / "config.json"), parts["vae"],
                              components.read_json(folder / "vae" / "config.json"), parts["text_encoder"])
    except KeyError as err:
        raise ModelError(f"cannot rename this folder's weights to the single-file layout: {err}",
                         file=str(folder)) from err
