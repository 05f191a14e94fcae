"""The whole recipe: models, defaults, ordered stages, sweeps and regression tolerances."""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from sdbake.schemas.base import (
    BatchSize,
    Cfg,
    ClipSkip,
    LoraRef,
    SamplerName,
    SchedulerName,
    SdxlConditioning,
    Seed,
    Size,
    Steps,
    Strict,
)
from sdbake.schemas.stages import Stage

MatrixValue = str | list[str | int | float | bool]


class ModelEntry(Strict):
    """A named model: a checkpoint file or diffusers folder, an optional VAE, LoRAs for every stage."""
    checkpoint: str = Field(min_length=1, description="a path (relative to the recipe) or a name in the "
                                                      "checkpoint folders")
    vae: str | None = None
    config: str | None = Field(None, description="a diffusers folder whose configs describe this single-file "
                                                 "checkpoint (default: the shipped configs of its family)")
    loras: list[LoraRef] = Field(default_factory=list)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="pinned by `sdbake lock`")


class Defaults(Strict):
    """Values inherited by every stage that does not set its own."""
    model: str | None = None
    seed: Seed = 0
    width: Size = 512
    height: Size = 512
    batch_size: BatchSize = 1
    steps: Steps = 20
    sampler: SamplerName = "euler"
    scheduler: SchedulerName = "normal"
    cfg: Cfg = 7.0
    clip_skip: ClipSkip = 1
    loras: list[LoraRef] = Field(default_factory=list)
    sdxl: SdxlConditioning | None = None


class CheckTolerances(Strict):
    """How `sdbake check` compares this recipe's renders with their goldens. Unset tolerances take the
    defaults (docs/reproducibility.md); they apply when the goldens were made on another numerics
    fingerprint, and equal fingerprints compare exactly."""
    exact: bool = Field(False, description="always require equal pixels, whatever the fingerprints")
    max_abs_diff: int | None = Field(None, ge=0, le=255, description="largest per-channel difference, 0-255")
    mean_abs_diff: float | None = Field(None, ge=0.0, le=255.0, description="mean per-channel difference, 0-255")
    min_psnr: float | None = Field(None, ge=0.0, description="smallest PSNR, dB")
    min_ssim: float | None = Field(None, ge=0.0, le=1.0, description="smallest SSIM, 0-1")


class Performance(Strict):
    compile: bool = False
    channels_last: bool = False


class Recipe(Strict):
    version: Literal[1] = Field(description="recipe format version")
    name: str = Field(min_length=1)
    output_dir: str | None = Field(None, description="output root, relative to the current folder")
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    stages: list[Stage] = Field(min_length=1)
    matrix: dict[str, MatrixValue] = Field(default_factory=dict,
                                           description="sweep axes: dotted recipe path -> values or range")
    check: CheckTolerances = Field(default_factory=CheckTolerances)
    performance: Performance = Field(default_factory=Performance)
