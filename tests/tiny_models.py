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


def build_tiny_pipeline(seed: int = 0):
    """A StableDiffusionPipeline with random weights from `seed` (Euler scheduler, SD1.x betas)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1)
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


# --- SDXL: two text encoders, text_time embedding, SGM single-file layout ------------------------

SDXL_UNET_CONFIG = {"block_out_channels": (32, 64), "layers_per_block": 1, "cross_attention_dim": 64,
                    "attention_head_dim": (2, 4), "sample_size": 8, "transformer_layers_per_block": (1, 2),
                    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "use_linear_projection": True,
                    "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                    "projection_class_embeddings_input_dim": 6 * 8 + 32}
SDXL_TEXT_CONFIG = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "vocab_size": 49408, "max_position_embeddings": 77}


def build_tiny_sdxl_pipeline(seed: int = 0):
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_CONFIG, hidden_act="quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_CONFIG, hidden_act="gelu",
                                                                projection_dim=32))
    tokenizer = clip_tokenizer()
    tokenizer_2 = clip_tokenizer(pad_token="!")      # SDXL's OpenCLIP tokenizer pads with "!"
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)


def open_clip_to_sgm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection weights under OpenCLIP's names (fused q/k/v as in_proj)."""
    direct = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
              "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
              "text_model.final_layer_norm.weight": "ln_final.weight",
              "text_model.final_layer_norm.bias": "ln_final.bias"}
    out = {"text_projection": state_dict["text_projection.weight"].T.contiguous()}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
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


def export_sgm_state_dict(pipe) -> dict[str, torch.Tensor]:
    unet_config = pipe.unet.config
    with_attention = {i for i, t in enumerate(unet_config.up_block_types) if "CrossAttn" in t}
    unet = unet_to_ldm(pipe.unet.state_dict(), unet_config.layers_per_block, with_attention)
    vae = vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels))
    text = {("" if k.startswith("text_model.") else "text_model.") + k: v
            for k, v in pipe.text_encoder.state_dict().items()}
    text_2 = open_clip_to_sgm(pipe.text_encoder_2.state_dict())
    return {**{f"model.diffusion_model.{k}": v for k, v in unet.items()},
            **{f"first_stage_model.{k}": v for k, v in vae.items()},
            **{f"conditioner.embedders.0.transformer.{k}": v for k, v in text.items()},
            **{f"conditioner.embedders.1.model.{k}": v for k, v in text_2.items()}}


def save_tiny_sdxl(folder: Path, single_file: Path, seed: int = 0) -> tuple[Path, Path]:
    from safetensors.torch import save_file
    pipe = build_tiny_sdxl_pipeline(seed)
    pipe.save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in export_sgm_state_dict(pipe).items()}, str(single_file))
    return folder, single_file
