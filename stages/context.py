"""What a stage receives besides its params and input state: models, files, output hooks.

The runner builds it; a stage never imports the runner (docs/design.md section 1).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageContext:
    stage_id: str
    device: str
    dtype: Any                                        # torch.dtype of the models
    model: Callable[[str], Any]                       # [models] entry name -> loaded model (LoRAs applied)
    upscaler_model: Callable[[Path], Any] | None = None   # upscaler file -> loaded upscaler (runner's registry)
    files: dict[str, Path] = field(default_factory=dict)   # param name -> resolved file it reads
    prompts: list[str] = field(default_factory=list)       # resolved prompt overrides, one per image
    negatives: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)        # save: rendered paths relative to the root
    model_info: dict = field(default_factory=dict)          # model_name, model_hash, loras ... for infotext
    embedded: list[dict] = field(default_factory=list)      # save: per image, the recipe prefix and inputs
    recipe_folder: Path | None = None
    progress: Callable[[int, int], None] = lambda done, total: None
    warn: Callable[[str], None] = print
    side_files: dict[str, bytes] = field(default_factory=dict)   # written under the output root + cached
    vae_fp32: bool = False                                  # --no-half-vae: every VAE pass in float32
    extra: dict = field(default_factory=dict)
    preview_every: int = 0                                  # sampling stages: a step preview every N steps
    on_preview: Callable[[int, list], None] = lambda step, images: None   # (schedule step, PIL images)
    on_file: Callable[[str, bytes], None] = lambda relative, data: None   # the runner starts writing it

    def emit_file(self, relative_path: str, data: bytes) -> None:
        """Hand a file to the runner: it writes it (never overwriting) and keeps it in the cache entry."""
        self.side_files[relative_path] = data
        self.on_file(relative_path, data)
