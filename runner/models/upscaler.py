"""Loading upscaler model files (ESRGAN family, and whatever spandrel knows when it is installed).

Our own RRDBNet covers the ESRGAN family everywhere; spandrel (which needs torchvision) adds the
other architectures where it imports. Either way the weights are read here, without running code.
The registry keeps loaded upscalers; stages/upscale.py runs them (tiled) for hires.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from sdbake.runner.models.rrdbnet import is_rrdbnet, rrdbnet_from_state_dict
from sdbake.schemas.errors import ModelError

SUPPORTED_HERE = "ESRGAN, Real-ESRGAN and BSRGAN (RRDBNet)"


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
    except Exception:  # noqa: BLE001 - not only ImportError: a torchvision that does not fit this torch fails otherwise
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


def check_readable(path: Path) -> None:
    try:
        path.stat()
    except OSError as err:
        raise ModelError(f"upscaler file not readable: {_first_line(err)}", file=str(path)) from err


def load_upscaler(path: Path, device) -> UpscalerModel:
    """The upscaler in `path`, read from disk and put on `device` (the registry keeps it loaded)."""
    path = Path(path)
    check_readable(path)
    device = torch.device(device)
    state = read_state_dict(path)
    if is_rrdbnet(state):
        return _from_rrdbnet(path, state, device)
    spandrel = _spandrel()
    if spandrel is None:
        raise ModelError(f"unknown upscaler architecture; supported here: {SUPPORTED_HERE} (install spandrel "
                         f"and torchvision for other families)", file=str(path))
    return _from_spandrel(spandrel, path, state, device)
