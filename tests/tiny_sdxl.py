"""Tiny SDXL-family models for tests: base, refiner and 9-channel inpainting, as diffusers folders and
SGM single files (the layout of sd_xl_base_1.0.safetensors), built from configs with fixed seeds.

The base has both text encoders (CLIP ViT-L shape, and OpenCLIP bigG shape with a projection) and the
"text_time" added embedding (pooled text + 6 size numbers); the refiner has the second encoder only
and the aesthetic-score variant (pooled text + 5 numbers: sizes, crop, score).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from sdbake.runner.models.ldm_layout import unet_to_ldm, vae_to_ldm
from tiny_models import VAE_CONFIG, clip_tokenizer

TIME_EMBED_DIM = 8
TEXT_WIDTH = 32               # both tiny encoders; the base UNet cross-attends to their concatenation
PROJECTION_DIM = 32           # pooled output of the second encoder

SDXL_UNET_CONFIG = {"block_out_channels": (32, 64), "layers_per_block": 1, "cross_attention_dim": 2 * TEXT_WIDTH,
                    "attention_head_dim": (2, 4), "sample_size": 8, "transformer_layers_per_block": (1, 2),
                    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "use_linear_projection": True,
                    "addition_embed_type": "text_time", "addition_time_embed_dim": TIME_EMBED_DIM,
                    "projection_class_embeddings_input_dim": 6 * TIME_EMBED_DIM + PROJECTION_DIM}
REFINER_UNET_CONFIG = {**SDXL_UNET_CONFIG, "cross_attention_dim": TEXT_WIDTH,
                       "projection_class_embeddings_input_dim": 5 * TIME_EMBED_DIM + PROJECTION_DIM}
SDXL_TEXT_CONFIG = {"hidden_size": TEXT_WIDTH, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "vocab_size": 49408, "max_position_embeddings": 77}


def _scheduler():
    from diffusers import EulerDiscreteScheduler
    return EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", steps_offset=1)


def _text_encoder_2():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    return CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_CONFIG, hidden_act="gelu",
                                                      projection_dim=PROJECTION_DIM))


def build_tiny_sdxl_pipeline(seed: int = 0, in_channels: int = 4):
    """StableDiffusionXLPipeline (or the inpaint pipeline for in_channels=9) with random weights."""
    from diffusers import (
        AutoencoderKL,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SDXL_UNET_CONFIG, in_channels=in_channels)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_CONFIG, hidden_act="quick_gelu"))
    text_encoder_2 = _text_encoder_2()
    pipeline = StableDiffusionXLInpaintPipeline if in_channels == 9 else StableDiffusionXLPipeline
    return pipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=clip_tokenizer(),
                    tokenizer_2=clip_tokenizer(pad_token="!"),    # SDXL's OpenCLIP tokenizer pads with "!"
                    unet=unet, scheduler=_scheduler())


def build_tiny_sdxl_refiner(seed: int = 0):
    """StableDiffusionXLImg2ImgPipeline shaped like SDXL's refiner: text_encoder_2 only, aesthetic score."""
    from diffusers import AutoencoderKL, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**REFINER_UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder_2 = _text_encoder_2()
    return StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, text_encoder_2=text_encoder_2,
                                            tokenizer=None, tokenizer_2=clip_tokenizer(pad_token="!"), unet=unet,
                                            scheduler=_scheduler(), requires_aesthetics_score=True,
                                            force_zeros_for_empty_prompt=False)


def open_clip_to_sgm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection weights under OpenCLIP's names (fused q/k/v as in_proj)."""
    direct = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
              "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
              "text_model.final_layer_norm.weight": "ln_final.weight",
              "text_model.final_layer_norm.bias": "ln_final.bias"}
    out = {"text_projection": state_dict["text_projection.weight"].T.contiguous()}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        key = key if key.startswith(("text_model.", "text_projection")) else "text_model." + key
        if key in direct:
            out[direct[key]] = value
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            fused.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = value
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.*)", key):
            rest = (m[2].replace("self_attn.", "attn.").replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
                    .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
            out[f"transformer.resblocks.{m[1]}.{rest}"] = value
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _unet_and_vae(pipe) -> dict[str, torch.Tensor]:
    unet_config = pipe.unet.config
    with_attention = {i for i, t in enumerate(unet_config.up_block_types) if "CrossAttn" in t}
    unet = unet_to_ldm(pipe.unet.state_dict(), unet_config.layers_per_block, with_attention)
    vae = vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels))
    return {**{f"model.diffusion_model.{k}": v for k, v in unet.items()},
            **{f"first_stage_model.{k}": v for k, v in vae.items()}}


def export_sgm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's weights under SGM's single-file keys; a refiner's one encoder is embedders.0."""
    text_2 = open_clip_to_sgm(pipe.text_encoder_2.state_dict())
    if pipe.text_encoder is None:
        return {**_unet_and_vae(pipe), **{f"conditioner.embedders.0.model.{k}": v for k, v in text_2.items()}}
    text = {("" if k.startswith("text_model.") else "text_model.") + k: v
            for k, v in pipe.text_encoder.state_dict().items()}
    return {**_unet_and_vae(pipe),
            **{f"conditioner.embedders.0.transformer.{k}": v for k, v in text.items()},
            **{f"conditioner.embedders.1.model.{k}": v for k, v in text_2.items()}}


def _save(pipe, folder: Path, single_file: Path | None) -> tuple[Path, Path | None]:
    from safetensors.torch import save_file
    pipe.save_pretrained(str(folder))
    if single_file is not None:
        save_file({k: v.contiguous() for k, v in export_sgm_state_dict(pipe).items()}, str(single_file))
    return folder, single_file


def save_tiny_sdxl(folder: Path, single_file: Path | None = None, seed: int = 0) -> tuple[Path, Path | None]:
    return _save(build_tiny_sdxl_pipeline(seed), Path(folder), single_file)


def save_tiny_sdxl_refiner(folder: Path, single_file: Path | None = None, seed: int = 1) -> tuple[Path, Path | None]:
    return _save(build_tiny_sdxl_refiner(seed), Path(folder), single_file)


def save_tiny_sdxl_inpaint(folder: Path, single_file: Path | None = None, seed: int = 2) -> tuple[Path, Path | None]:
    return _save(build_tiny_sdxl_pipeline(seed, in_channels=9), Path(folder), single_file)
