"""Tiny SD1.x models for tests and benchmarks, built from configs with fixed seeds (nothing downloaded).

`build_tiny_pipeline()` makes the same architecture as shared/checks/tiny_model.py: a 2-level UNet
(~0.8M parameters), a 4-level VAE (scale factor 8) and a 4-layer CLIP text model with the real
49408-token vocabulary. `export_ldm_state_dict()` writes the original LDM single-file key layout
(the inverse of diffusers' single-file conversion), so single-file loading can be tested against
the diffusers folder of the very same weights.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CLIP_TOKENIZER_DIR = ROOT / "runner" / "configs" / "clip_tokenizer"

UNET_CONFIG = {"block_out_channels": (32, 64), "layers_per_block": 1, "cross_attention_dim": 32,
               "attention_head_dim": 4, "sample_size": 8, "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
               "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")}
VAE_CONFIG = {"block_out_channels": (32, 32, 64, 64), "layers_per_block": 1, "latent_channels": 4,
              "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}
TEXT_CONFIG = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
               "vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer
    return CLIPTokenizer(str(CLIP_TOKENIZER_DIR / "vocab.json"), str(CLIP_TOKENIZER_DIR / "merges.txt"),
                         pad_token=pad_token, model_max_length=77)   # as real SD folders say


def build_tiny_pipeline(seed: int = 0, prediction_type: str = "epsilon", zero_snr: bool = False):
    """A StableDiffusionPipeline with random weights from `seed` (Euler scheduler, SD1.x betas); a
    v-prediction model (SD2.x 768-v style) with prediction_type="v_prediction", and with zero_snr its
    scheduler config asks for the zero-terminal-SNR rescale (as v-pred fine-tunes' configs do)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1,
                                       prediction_type=prediction_type, rescale_betas_zero_snr=zero_snr)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_model_dir(out: Path, seed: int = 0) -> Path:
    build_tiny_pipeline(seed).save_pretrained(str(out))
    return out


# --- diffusers -> LDM key layout -------------------------------------------------------------------

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


def unet_to_ldm(state_dict: dict[str, torch.Tensor], layers_per_block: int,
                up_blocks_with_attention: set[int]) -> dict[str, torch.Tensor]:
    per_level = layers_per_block + 1
    out = {}
    for key, value in state_dict.items():
        head, _, tail = key.rpartition(".")          # tail: weight / bias
        if head in UNET_DIRECT:
            out[f"{UNET_DIRECT[head]}.{tail}"] = value
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            out[f"input_blocks.{per_level * i + j + 1}.0.{_resnet_key(rest)}"] = value
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            out[f"input_blocks.{per_level * int(m[1]) + int(m[2]) + 1}.1.{m[3]}"] = value
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            out[f"input_blocks.{per_level * (int(m[1]) + 1)}.0.op.{m[2]}"] = value
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            out[f"middle_block.{2 * int(m[1])}.{_resnet_key(m[2])}"] = value
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            out[f"middle_block.1.{m[1]}"] = value
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            out[f"output_blocks.{per_level * int(m[1]) + int(m[2])}.0.{_resnet_key(m[3])}"] = value
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            out[f"output_blocks.{per_level * int(m[1]) + int(m[2])}.1.{m[3]}"] = value
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            i = int(m[1])
            slot = 2 if i in up_blocks_with_attention else 1
            out[f"output_blocks.{per_level * i + layers_per_block}.{slot}.conv.{m[2]}"] = value
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


def export_ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's weights under the original single-file keys (model.diffusion_model.* ...)."""
    unet_config = pipe.unet.config
    with_attention = {i for i, t in enumerate(unet_config.up_block_types) if "CrossAttn" in t}
    unet = unet_to_ldm(pipe.unet.state_dict(), unet_config.layers_per_block, with_attention)
    vae = vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels))
    text = {("" if k.startswith("text_model.") else "text_model.") + k: v
            for k, v in pipe.text_encoder.state_dict().items()}
    return {**{f"model.diffusion_model.{k}": v for k, v in unet.items()},
            **{f"first_stage_model.{k}": v for k, v in vae.items()},
            **{f"cond_stage_model.transformer.{k}": v for k, v in text.items()}}


def save_tiny_single_file(out: Path, seed: int = 0) -> Path:
    from safetensors.torch import save_file
    state_dict = {k: v.contiguous() for k, v in export_ldm_state_dict(build_tiny_pipeline(seed)).items()}
    save_file(state_dict, str(out))
    return out


def save_tiny_vpred(folder: Path, single_file: Path | None = None, seed: int = 0,
                    zero_snr: bool = False) -> Path:
    """A tiny v-prediction SD model folder, and optionally the same weights as a single file carrying
    the `v_pred` marker key (as ComfyUI saves v-prediction checkpoints)."""
    pipe = build_tiny_pipeline(seed, prediction_type="v_prediction", zero_snr=zero_snr)
    pipe.save_pretrained(str(folder))
    if single_file is not None:
        from safetensors.torch import save_file
        state_dict = {k: v.contiguous() for k, v in export_ldm_state_dict(pipe).items()}
        save_file({**state_dict, "v_pred": torch.tensor([])}, str(single_file))
    return folder


def save_tiny_vae_file(out: Path, seed: int = 0, *, ldm_layout: bool = True) -> Path:
    """A standalone VAE file (as vae-ft-mse-840000.safetensors is) for the tiny model."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    state_dict = vae_to_ldm(vae.state_dict(), len(VAE_CONFIG["block_out_channels"])) if ldm_layout else \
        vae.state_dict()
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(out))
    return out


# --- LoRA ----------------------------------------------------------------------------------------

UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _kohya_pair(state_dict, name, in_features, out_features, rank, generator, scale=0.3):
    state_dict[f"{name}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator) * scale
    state_dict[f"{name}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator) * scale
    state_dict[f"{name}.alpha"] = torch.tensor(float(rank))


def tiny_lora_state_dict(unet=None, text_encoder=None, seed: int = 1, rank: int = 4,
                         extra_missing: int = 0) -> dict[str, torch.Tensor]:
    """A kohya-format LoRA (lora_unet_* / lora_te_*: lora_down, lora_up, alpha) for every attention
    projection of the tiny UNet and text encoder. `extra_missing` adds that many layers that exist in
    no tiny model, for partial-match tests."""
    if unet is None or text_encoder is None:
        pipe = build_tiny_pipeline()
        unet, text_encoder = pipe.unet, pipe.text_encoder
    generator = torch.Generator().manual_seed(seed)
    state_dict: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if name.endswith(UNET_LORA_TARGETS):
            _kohya_pair(state_dict, "lora_unet_" + name.replace(".", "_"), module.in_features,
                        module.out_features, rank, generator)
    for name, module in text_encoder.named_modules():
        if name.endswith(TEXT_LORA_TARGETS):
            # kohya names text encoder layers from the old `text_model.` level of CLIPTextModel
            full_name = name if name.startswith("text_model.") else "text_model." + name
            _kohya_pair(state_dict, "lora_te_" + full_name.replace(".", "_"), module.in_features,
                        module.out_features, rank, generator, scale=0.05)
    for n in range(extra_missing):
        _kohya_pair(state_dict, f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_{n + 5}_attn1_to_q",
                    32, 32, rank, generator)
    return state_dict


def save_tiny_lora(out: Path, unet=None, text_encoder=None, seed: int = 1, extra_missing: int = 0) -> Path:
    from safetensors.torch import save_file
    save_file(tiny_lora_state_dict(unet, text_encoder, seed, extra_missing=extra_missing), str(out))
    return out


# --- SDXL family builders live in tiny_sdxl.py (re-exported here) --------------------------------

from tiny_sdxl import (  # below the SD1 helpers: tiny_sdxl builds on them
    build_tiny_sdxl_pipeline,
    build_tiny_sdxl_refiner,
    export_sgm_state_dict,
    save_tiny_sdxl,
    save_tiny_sdxl_inpaint,
    save_tiny_sdxl_refiner,
)

__all__ = ["build_tiny_sdxl_pipeline", "build_tiny_sdxl_refiner", "export_sgm_state_dict", "save_tiny_sdxl",
           "save_tiny_sdxl_inpaint", "save_tiny_sdxl_refiner"]
