"""Tiny SD1.x models for tests and benchmarks, built from configs with fixed seeds (nothing downloaded).

`build_tiny_pipeline()` makes the same architecture as shared/checks/tiny_model.py: a 2-level UNet
(~0.8M parameters), a 4-level VAE (scale factor 8) and a 4-layer CLIP text model with the real
49408-token vocabulary. `export_ldm_state_dict()` writes the original LDM single-file key layout
(the inverse of diffusers' single-file conversion), so single-file loading can be tested against
the diffusers folder of the very same weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from sdbake.runner.models.ldm_layout import ldm_state_dict, vae_to_ldm

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


def export_ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's weights under the original single-file keys (model.diffusion_model.* ...)."""
    return ldm_state_dict(pipe.unet.state_dict(), dict(pipe.unet.config), pipe.vae.state_dict(),
                          dict(pipe.vae.config), pipe.text_encoder.state_dict())



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
