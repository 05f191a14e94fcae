"""The process-wide model registry: each model (and upscaler model) loads once and is shared; an LRU
bounds memory."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from sdbake.runner.models.hashing import sha256_file
from sdbake.runner.models.loading import LoadedModel, default_dtype, load_model, model_weight_files

DEFAULT_MAX_MODELS = 2
# Upscalers are small (an ESRGAN is ~65 MB) and kept apart, so that one never evicts a diffusion model.
DEFAULT_MAX_UPSCALERS = 4


@dataclass(frozen=True)
class ModelSpec:
    """What a stage asks for: a checkpoint (file or diffusers folder), an optional VAE, where and how."""
    checkpoint: Path
    vae: Path | None = None
    device: str = "cpu"
    dtype: torch.dtype | None = None
    allow_pickle: bool = False
    config: Path | None = None          # diffusers config folder for a single file (default: shipped)

    def resolved_dtype(self) -> torch.dtype:
        return self.dtype or default_dtype(self.device)


def spec_key(spec: ModelSpec) -> tuple:
    """Identity of a loaded model: the bytes of its files (not their names), device and dtype."""
    weights = tuple(sha256_file(f) for f in model_weight_files(Path(spec.checkpoint), allow_pickle=spec.allow_pickle))
    vae = sha256_file(Path(spec.vae)) if spec.vae is not None else None
    config = str(Path(spec.config).resolve()) if spec.config is not None else None
    # Two folders with the same weights but other configs (prediction type, zero-terminal-SNR
    # betas) are different models.
    folder = Path(spec.checkpoint)
    configs = tuple(sha256_file(f) for f in sorted(folder.rglob("*.json"))) if folder.is_dir() else ()
    return weights, configs, vae, config, str(spec.device), str(spec.resolved_dtype())


class ModelRegistry:
    """Keeps at most `max_models` loaded models; the least recently used one is dropped first."""

    def __init__(self, max_models: int = DEFAULT_MAX_MODELS,
                 loader: Callable[[ModelSpec], LoadedModel] | None = None):
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self._loader = loader or _load_spec
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._upscalers: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0                  # how many times a model was actually read from disk

    def _get(self, models: OrderedDict, key: tuple, load: Callable[[], object], limit: int):
        with self._lock:
            if key in models:
                models.move_to_end(key)
                return models[key]
            model = load()
            self.loads += 1
            models[key] = model
            while len(models) > limit:
                models.popitem(last=False)
            return model

    def get(self, spec: ModelSpec) -> LoadedModel:
        return self._get(self._models, spec_key(spec), lambda: self._loader(spec), self.max_models)

    def get_upscaler(self, path: Path, device: str):
        """The upscaler model in `path` on `device`; a file whose bytes change is read again."""
        from sdbake.runner.models.upscaler import check_readable, load_upscaler
        path = Path(path)
        check_readable(path)
        key = (sha256_file(path), str(torch.device(device)))
        return self._get(self._upscalers, key, lambda: load_upscaler(path, device), DEFAULT_MAX_UPSCALERS)

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, spec: ModelSpec) -> bool:
        return spec_key(spec) in self._models

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._upscalers.clear()


def _load_spec(spec: ModelSpec) -> LoadedModel:
    return load_model(Path(spec.checkpoint), vae=spec.vae, device=spec.device, dtype=spec.resolved_dtype(),
                      allow_pickle=spec.allow_pickle, config=spec.config)


_default_registry: ModelRegistry | None = None


def default_registry() -> ModelRegistry:
    """The registry shared by every stage of this process."""
    global _default_registry
    if _default_registry is None:
        _default_registry = ModelRegistry()
    return _default_registry
