"""Upscaler model files (ESRGAN family, and whatever spandrel knows when it is installed) for hires.

Our own RRDBNet covers the ESRGAN family everywhere; spandrel (which needs torchvision) adds the
other architectures where it imports. Either way the weights are read here, without running code.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from sdbake.schemas.errors import ModelError
from sdbake.stages.output.decode import to_pil
from sdbake.stages.rrdbnet import is_rrdbnet, rrdbnet_from_state_dict

SUPPORTED_HERE = "ESRGAN, Real-ESRGAN and BSRGAN (RRDBNet)"
# As A1111 does for ESRGAN models (settings ESRGAN_tile, ESRGAN_tile_overlap): 192 px tiles, 8 px overlap.
TILE_PX = 192
TILE_OVERLAP_PX = 8
# As A1111's Upscaler.upscale: run the model again while the image is smaller than the target, at most 3 times.
MAX_PASSES = 3


@dataclass(frozen=True)
class UpscalerModel:
    """A loaded upscaler: `forward` maps (1, 3, h, w) in [0, 1] to (1, 3, h*scale, w*scale)."""
    name: str
    scale: int
    dtype: torch.dtype
    device: torch.device
    forward: Callable[[torch.Tensor], torch.Tensor]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an upscaler file; pickles load with weights_only, so they never run code."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        try:
            state = load_file(str(path), device="cpu")
        except Exception as err:   # safetensors raises several types for a damaged file
            raise ModelError(f"not a readable safetensors upscaler: {_first_line(err)}", file=str(path)) from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
            raise ModelError(f"pickle upscaler refused or unreadable (only plain tensors are loaded): "
                             f"{_first_line(err)}", file=str(path)) from err
    # Real-ESRGAN/BasicSR training checkpoints wrap the weights; the EMA copy is the one they publish.
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError("upscaler file holds no state dict of tensors", file=str(path))
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _working_dtype(state: dict[str, torch.Tensor], device: torch.device) -> torch.dtype:
    # float32 on CPU (half convs are slow or missing there); the file's own float dtype on CUDA.
    if device.type == "cpu":
        return torch.float32
    return next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)


def _from_rrdbnet(path: Path, state: dict, device: torch.device) -> UpscalerModel:
    try:
        net = rrdbnet_from_state_dict(state)
    except (ValueError, KeyError) as err:
        raise ModelError(f"ESRGAN-style upscaler with unexpected layers ({err}); supported here: "
                         f"{SUPPORTED_HERE}", file=str(path)) from err
    dtype = _working_dtype(state, device)
    net = net.to(device=device, dtype=dtype)
    return UpscalerModel(name=path.name, scale=net.scale, dtype=dtype, device=device, forward=net)


def _spandrel():
    """The spandrel module, or None where it does not import (it needs torchvision)."""
    try:
        import spandrel
    except ImportError:
        return None
    return spandrel


def _from_spandrel(spandrel, path: Path, state: dict, device: torch.device) -> UpscalerModel:
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError as err:
        raise ModelError(f"unknown upscaler architecture (spandrel does not recognise it either); "
                         f"supported: {SUPPORTED_HERE} and spandrel's architectures", file=str(path)) from err
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.input_channels != 3 \
            or descriptor.output_channels != 3:
        raise ModelError(f"{descriptor.architecture.name} is not an RGB image upscaler", file=str(path))
    dtype = _working_dtype(state, device)
    if dtype == torch.float16 and not descriptor.supports_half or \
            dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
        dtype = torch.float32          # spandrel refuses to cast these architectures down
    descriptor.to(device=device, dtype=dtype)
    return UpscalerModel(name=path.name, scale=descriptor.scale, dtype=dtype, device=device,
                         forward=descriptor)


@lru_cache(maxsize=4)
def _load_cached(path: Path, mtime_ns: int, device: str) -> UpscalerModel:
    # mtime is part of the key so that a file replaced on disk is read again.
    state = read_state_dict(path)
    if is_rrdbnet(state):
        return _from_rrdbnet(path, state, torch.device(device))
    spandrel = _spandrel()
    if spandrel is None:
        raise ModelError(f"unknown upscaler architecture; supported here: {SUPPORTED_HERE} (install spandrel "
                         f"and torchvision for other families)", file=str(path))
    return _from_spandrel(spandrel, path, state, torch.device(device))


def load_upscaler(path: Path, device) -> UpscalerModel:
    """The upscaler in `path` on `device`, loaded once per (file, modification time, device)."""
    path = Path(path)
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as err:
        raise ModelError(f"upscaler file not readable: {_first_line(err)}", file=str(path)) from err
    return _load_cached(path.resolve(), mtime_ns, str(torch.device(device)))


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one side: every `tile - overlap` px, the last one flush with the far edge."""
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


@torch.inference_mode()
def upscale_tiled(model: UpscalerModel, image: torch.Tensor, tile: int = TILE_PX,
                  overlap: int = TILE_OVERLAP_PX) -> torch.Tensor:
    """One model pass over (1, 3, H, W) in square tiles, overlaps averaged (as A1111's tiled upscale)."""
    _, channels, height, width = image.shape
    tile = min(tile, height, width)
    overlap = min(overlap, tile - 1)
    scale = model.scale
    result = torch.zeros((1, channels, height * scale, width * scale), dtype=torch.float32)
    weights = torch.zeros_like(result)
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            patch = image[..., top:top + tile, left:left + tile].to(model.device, model.dtype)
            out = model.forward(patch).float().cpu()
            if out.shape[-2:] != (tile * scale, tile * scale):
                raise ModelError(f"upscaler returned {tuple(out.shape[-2:])} for a {tile}x{tile} tile, "
                                 f"expected x{scale}", file=model.name)
            region = (..., slice(top * scale, (top + tile) * scale), slice(left * scale, (left + tile) * scale))
            result[region] += out
            weights[region] += 1
    return (result / weights).clamp(0.0, 1.0)


def model_passes(model: UpscalerModel, image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """As A1111's Upscaler.upscale: repeat the model until the image reaches the target (at most 3 passes)."""
    for _ in range(MAX_PASSES):
        size_before = image.shape[-2:]
        image = upscale_tiled(model, image)
        if (image.shape[-1] >= width and image.shape[-2] >= height) or image.shape[-2:] == size_before:
            break
    return image


def upscale_with_model(path: Path, images: torch.Tensor, width: int, height: int, device) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> B pictures of exactly width x height, upscaled by the model file at `path`."""
    model = load_upscaler(path, device)
    pictures = to_pil(torch.cat([model_passes(model, image[None].float(), width, height) for image in images]))
    # As A1111: when the model's scale is not the wanted one, Lanczos to the exact size.
    return [picture if picture.size == (width, height) else picture.resize((width, height), Image.LANCZOS)
            for picture in pictures]
