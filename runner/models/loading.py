"""Load a Stable Diffusion model (SD1.x or SDXL) fully offline: a diffusers folder or a single file.

Nothing here may reach the network (docs/design.md section 8): configs come from the folder itself or
from the config folders the project ships, and weights are read from local files only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sdbake.runner.models import components, single_file
from sdbake.runner.models.checkpoint_files import (
    SDXL_REFINER_TEXT_PREFIX,
    SDXL_TEXT2_PREFIX,
    read_state_dict,
    require_file,
)
from sdbake.runner.models.folder_files import component_weight_files, read_component_weights
from sdbake.runner.models.hashing import sha256_file
from sdbake.schemas.errors import ModelError

SCHEDULER_KEYS = ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps")


@dataclass
class LoadedModel:
    """Everything the stages need from one checkpoint, on one device in one dtype."""
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    family: str                              # "sd1" | "sdxl"
    prediction_type: str                     # "epsilon" | "v_prediction"
    scheduler_config: dict                   # beta_start, beta_end, beta_schedule, num_train_timesteps, ...
    vae_scale_factor: int
    latent_channels: int
    in_channels: int                         # 9 for inpainting UNets
    files: list[tuple[Path, str]] = field(default_factory=list)   # (weight file, sha256)
    text_encoder_2: Any = None               # SDXL only (a refiner has only this one: text_encoder is None)
    tokenizer_2: Any = None                  # SDXL only
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    active_loras: tuple[tuple[str, float, float], ...] = ()   # (file, te, unet) now injected (runner.models.lora)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def aesthetic_score(self) -> bool:
        """SDXL refiner: the added embedding carries an aesthetic score instead of the target size
        (5 numbers, not 6, besides the pooled text)."""
        config = self.unet.config
        if getattr(config, "addition_embed_type", None) != "text_time" or self.text_encoder_2 is None:
            return False
        numbers = (config.projection_class_embeddings_input_dim - self.text_encoder_2.config.projection_dim)
        return numbers == 5 * config.addition_time_embed_dim


def default_dtype(device: str) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere (CPU half precision is slow and lossy)."""
    return torch.float16 if str(device).startswith("cuda") else torch.float32


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "model_index.json").is_file()


def model_weight_files(checkpoint: Path, *, allow_pickle: bool = False) -> list[Path]:
    """The files whose bytes define a model (what its hashes and cache keys cover), without loading it."""
    checkpoint = Path(checkpoint)
    require_file(checkpoint)
    if checkpoint.is_dir():
        folder = _require_diffusers_folder(checkpoint)
        index = components.read_json(folder / "model_index.json")
        return [f for part in _weighted_parts(index) for f in
                component_weight_files(folder / part, allow_pickle=allow_pickle)]
    return [checkpoint]


def load_model(checkpoint: Path, *, vae: Path | None = None, device: str = "cpu", dtype: torch.dtype | None = None,
               allow_pickle: bool = False, config: Path | None = None) -> LoadedModel:
    """Load a diffusers folder or a single-file checkpoint (SD1.x/SDXL), optionally with a separate VAE.

    `config` is a diffusers folder whose configs describe a single file (default: the shipped folder
    of the detected family).
    """
    checkpoint = Path(checkpoint)
    device = str(device)
    dtype = dtype or default_dtype(device)
    require_file(checkpoint, "checkpoint")
    if checkpoint.is_dir():
        model = _load_diffusers_folder(_require_diffusers_folder(checkpoint), device, dtype, allow_pickle)
    else:
        model = _load_single_file(checkpoint, device, dtype, allow_pickle, config)
    if vae is not None:
        model.vae = load_vae_file(Path(vae), dict(model.vae.config), device=device, dtype=dtype,
                                  allow_pickle=allow_pickle)
        model.files.append((Path(vae), sha256_file(Path(vae))))
    return model


def load_vae_file(path: Path, vae_config: dict, *, device: str, dtype: torch.dtype, allow_pickle: bool = False):
    """A standalone VAE file (LDM or diffusers key layout) that must fit the model's VAE architecture."""
    state_dict = read_state_dict(require_file(path, "VAE file"), allow_pickle=allow_pickle, device="cpu")
    if single_file.is_ldm_vae(state_dict):
        state_dict = single_file.convert_vae(state_dict, vae_config)
    return components.build_module(lambda: components.vae_from_config(vae_config), state_dict,
                                   what="VAE", source=path, device=device, dtype=dtype)


def _require_diffusers_folder(folder: Path) -> Path:
    if not is_diffusers_folder(folder):
        raise ModelError("folder is not a diffusers model (no model_index.json)", file=str(folder))
    return folder


def _weighted_parts(index: dict) -> list[str]:
    return [part for part in ("unet", "vae", "text_encoder", "text_encoder_2")
            if isinstance(index.get(part), list) and index[part][0] is not None]


def _family_of_index(index: dict, folder: Path) -> str:
    pipeline = index.get("_class_name", "")
    if pipeline.startswith("StableDiffusionXL"):
        return "sdxl"
    if pipeline.startswith("StableDiffusion") and "3" not in pipeline:
        return "sd1"
    raise ModelError(f"unknown model family: pipeline {pipeline or '(none)'} (supported: SD1.x, SDXL)",
                     file=str(folder / "model_index.json"))


def _load_diffusers_folder(folder: Path, device: str, dtype: torch.dtype, allow_pickle: bool) -> LoadedModel:
    index = components.read_json(folder / "model_index.json")
    family = _family_of_index(index, folder)
    parts: dict[str, Any] = {}
    files: list[Path] = []
    factories = {"unet": components.unet_from_config, "vae": components.vae_from_config,
                 "text_encoder": components.text_encoder_from_config,
                 "text_encoder_2": components.text_encoder_from_config}
    for part in _weighted_parts(index):
        config = components.read_json(folder / part / "config.json")
        weights, part_files = read_component_weights(folder / part, allow_pickle=allow_pickle, device="cpu")
        parts[part] = components.build_module(lambda part=part, config=config: factories[part](config), weights,
                                              what=part,
                                              source=folder / part, device=device, dtype=dtype)
        files += part_files
    return _assemble(parts, folder, family, _scheduler_config(folder), files, device, dtype)


def _load_single_file(path: Path, device: str, dtype: torch.dtype, allow_pickle: bool,
                      config: Path | None) -> LoadedModel:
    family, state_dict = single_file.read_single_file(path, allow_pickle=allow_pickle, device="cpu")
    config_dir = Path(config) if config is not None else single_file.shipped_config_dir(family)
    unet_config = components.read_json(config_dir / "unet" / "config.json")
    in_channels = single_file.unet_in_channels(state_dict)
    if in_channels is not None:
        unet_config["in_channels"] = in_channels      # inpainting checkpoints share everything else
    vae_config = components.read_json(config_dir / "vae" / "config.json")
    parts: dict[str, Any] = {
        "unet": components.build_module(lambda: components.unet_from_config(unet_config),
                                        single_file.convert_unet(state_dict, unet_config),
                                        what="UNet", source=path, device=device, dtype=dtype),
        "vae": components.build_module(lambda: components.vae_from_config(vae_config),
                                       single_file.convert_vae(state_dict, vae_config),
                                       what="VAE", source=path, device=device, dtype=dtype),
    }
    if family != "sdxl_refiner":       # a refiner has the OpenCLIP encoder only
        te_config = components.read_json(config_dir / "text_encoder" / "config.json")
        parts["text_encoder"] = components.build_module(
            lambda: components.text_encoder_from_config(te_config),
            single_file.convert_clip_l(state_dict, flattened=not _has_text_model_level(te_config)),
            what="text encoder", source=path, device=device, dtype=dtype)
    if family in ("sdxl", "sdxl_refiner"):
        te2_config = components.read_json(config_dir / "text_encoder_2" / "config.json")
        with components.init_empty_weights():
            probe = components.text_encoder_from_config(te2_config)
        prefix = SDXL_TEXT2_PREFIX if family == "sdxl" else SDXL_REFINER_TEXT_PREFIX
        parts["text_encoder_2"] = components.build_module(
            lambda: components.text_encoder_from_config(te2_config),
            single_file.convert_open_clip_g(state_dict, probe, prefix), what="text encoder 2", source=path,
            device=device, dtype=dtype)
        family = "sdxl"
    scheduler_config = _scheduler_config(config_dir)
    scheduler_config["prediction_type"] = single_file.prediction_type_of(
        state_dict, scheduler_config.get("prediction_type", "epsilon"))
    del state_dict
    return _assemble(parts, config_dir, family, scheduler_config, [path], device, dtype)


def _has_text_model_level(te_config: dict) -> bool:
    with components.init_empty_weights():
        return hasattr(components.text_encoder_from_config(te_config), "text_model")


def _scheduler_config(folder: Path) -> dict:
    path = folder / "scheduler" / "scheduler_config.json"
    config = components.read_json(path)
    missing = [k for k in SCHEDULER_KEYS if k not in config]
    if missing:
        raise ModelError(f"scheduler config lacks {', '.join(missing)}", file=str(path))
    config.setdefault("prediction_type", "epsilon")
    if config["prediction_type"] not in ("epsilon", "v_prediction"):
        raise ModelError(f"unsupported prediction_type {config['prediction_type']!r}", file=str(path))
    return config


def _assemble(parts: dict[str, Any], config_dir: Path, family: str, scheduler_config: dict,
              files: list[Path], device: str, dtype: torch.dtype) -> LoadedModel:
    first_encoder = parts.get("text_encoder") or parts["text_encoder_2"]
    max_tokens = first_encoder.config.max_position_embeddings
    tokenizer = components.load_tokenizer(config_dir / "tokenizer", max_tokens) if "text_encoder" in parts else None
    tokenizer_2 = components.load_tokenizer(config_dir / "tokenizer_2", max_tokens) if family == "sdxl" else None
    vae_config = parts["vae"].config
    return LoadedModel(
        unet=parts["unet"], vae=parts["vae"], text_encoder=parts.get("text_encoder"), tokenizer=tokenizer,
        text_encoder_2=parts.get("text_encoder_2"), tokenizer_2=tokenizer_2, family=family,
        prediction_type=scheduler_config["prediction_type"], scheduler_config=scheduler_config,
        vae_scale_factor=2 ** (len(vae_config.block_out_channels) - 1), latent_channels=vae_config.latent_channels,
        in_channels=parts["unet"].config.in_channels, files=[(f, sha256_file(f)) for f in files],
        device=device, dtype=dtype)
