"""Reading weight files into state dicts (safetensors; pickles only when allowed) and telling families apart."""
from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from sdbake.schemas.errors import ModelError
from sdbake.schemas.files import require_regular_file

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"

# Keys that decide the family of an original (LDM/SGM layout) single-file checkpoint.
UNET_PREFIX = "model.diffusion_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."
V_PREDICTION_MARKER = "v_pred"      # an empty tensor that ComfyUI-saved v-prediction checkpoints carry


def refuse_pickle(path: Path) -> ModelError:
    return ModelError(f"refusing to load pickle file {path.name}: unpickling can run arbitrary code; convert it "
                      "to .safetensors, or pass --allow-pickle if you trust it", file=str(path))


def require_file(path: Path, what: str = "model file") -> Path:
    if not path.exists():
        raise ModelError(f"{what} not found", file=str(path))
    if not path.is_dir():                # a diffusers folder, or one regular file (never /dev/zero, a FIFO)
        require_regular_file(path, what, ModelError)
    return path


def read_state_dict(path: Path, *, allow_pickle: bool = False, device: str = "cpu",
                    keep: Callable[[str], bool] = lambda key: True) -> dict[str, torch.Tensor]:
    """The tensors of one weight file whose keys pass `keep`, loaded onto `device`."""
    require_file(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path, device, keep)
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise refuse_pickle(path)
        return _read_pickle_weights_only(path, device, keep)
    raise ModelError(f"unsupported weight file type {suffix or '(none)'}: expected .safetensors "
                     f"(or {', '.join(PICKLE_SUFFIXES)} with --allow-pickle)", file=str(path))


def _read_safetensors(path: Path, device: str, keep: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {key: f.get_tensor(key) for key in f.keys() if keep(key)}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        # A download cut short fails here: the header promises more bytes than the file holds.
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"not a readable safetensors file (truncated or corrupt?): {reason}",
                         file=str(path)) from err


def _read_pickle_weights_only(path: Path, device: str, keep: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    # weights_only=True unpickles tensors and plain containers only; any other object is refused, so
    # a malicious checkpoint cannot run code even with --allow-pickle.
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"pickle file refused or unreadable (only plain tensors are loaded): {reason}",
                         file=str(path)) from err
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelError("pickle file does not hold a state dict", file=str(path))
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor) and keep(k)}


def is_single_file_key(key: str) -> bool:
    """Keys an original single-file checkpoint needs for inference (EMA copies and optimizer state are skipped)."""
    return key.startswith((UNET_PREFIX, "first_stage_model.", "cond_stage_model.", "conditioner.")) or \
        key == V_PREDICTION_MARKER


def detect_family(keys: set[str], path: Path) -> str:
    """'sd1', 'sdxl' or 'sdxl_refiner' from a single-file checkpoint's keys; anything else is a ModelError
    naming the file."""
    has_unet = any(k.startswith(UNET_PREFIX) for k in keys)
    if not has_unet:
        hint = _non_checkpoint_hint(keys)
        raise ModelError(f"unknown model family: no UNet weights ({UNET_PREFIX}*){hint}", file=str(path))
    if any(k.startswith(SDXL_TEXT2_PREFIX) for k in keys) and any(k.startswith(SDXL_TEXT_PREFIX) for k in keys):
        return "sdxl"
    if any(k.startswith(SDXL_REFINER_TEXT_PREFIX) for k in keys):
        return "sdxl_refiner"
    if any(k.startswith(SD2_TEXT_PREFIX) for k in keys):
        raise ModelError("unknown model family: this looks like SD2.x (OpenCLIP text encoder), which is not "
                         "supported; supported: SD1.x, SDXL", file=str(path))
    if any(k.startswith(SD1_TEXT_PREFIX) for k in keys):
        return "sd1"
    raise ModelError("unknown model family: UNet weights without a known text encoder "
                     "(supported: SD1.x, SDXL)", file=str(path))


def _non_checkpoint_hint(keys: set[str]) -> str:
    if any(k.startswith(("lora_", "lora_unet_", "unet.", "text_encoder.")) or "lora" in k for k in keys):
        return "; this looks like a LoRA"
    if any(k.startswith(("encoder.down", "decoder.up")) for k in keys):
        return "; this looks like a VAE"
    if any(k in ("emb_params", "string_to_param", "clip_l", "clip_g") for k in keys):
        return "; this looks like a textual-inversion embedding"
    return ""
