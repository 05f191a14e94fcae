"""The whole recipe: models, defaults, ordered stages, sweeps and regression tolerances."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from sdbake.schemas.base import (
    BatchSize,
    Cfg,
    ClipSkip,
    LoraRef,
    SamplerName,
    SchedulerName,
    SdxlConditioning,
    Seed,
    SeedResize,
    Size,
    Steps,
    Strict,
    SubseedStrength,
)
from sdbake.schemas.stages import Stage

MatrixValue = str | list[str | int | float | bool]


# Merge Block Weighted / SuperMerger's names of SD1's UNet blocks (LDM input_blocks.0-11, middle_block,
# output_blocks.0-11); an SDXL UNet has IN00-IN08, M00, OUT00-OUT08 (docs/merging.md).
MERGE_BLOCKS = tuple([f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)])
MergeBlock = Literal[MERGE_BLOCKS]


class MergeSpec(Strict):
    """A checkpoint merged from other [models] entries, as A1111's Checkpoint Merger does (docs/merging.md)."""
    method: Literal["weighted_sum", "add_difference"] = Field(
        description="weighted_sum: (1 - alpha) * a + alpha * b; add_difference: a + alpha * (b - c)")
    a: str = Field(min_length=1, description="the primary model: a name in [models]")
    b: str = Field(min_length=1, description="the secondary model: a name in [models]")
    c: str | None = Field(None, min_length=1, description="the tertiary model (add_difference only)")
    alpha: float = Field(ge=-10.0, le=10.0, description="A1111's multiplier M; the base alpha under block weights")
    alphas: dict[MergeBlock, float] | list[float] | None = Field(
        None, description="block weights: {IN00 = 0.2, ...} (unnamed blocks take alpha) or 25 numbers "
                          "IN00..IN11, M00, OUT00..OUT11 as Merge Block Weighted lists them")
    fp16: bool = Field(False, description="store the merged tensors as float16 (A1111: save as float16)")

    def problems(self) -> list[tuple[tuple, str]]:
        """What spans fields: the third model belongs to add_difference, a weighted sum's alphas are in
        [0, 1], a list of block weights has one number per block. (path below the spec, message) pairs."""
        found: list[tuple[tuple, str]] = []
        if self.method == "add_difference" and self.c is None:
            found.append(((), "add_difference needs a third model `c`"))
        elif self.method == "weighted_sum" and self.c is not None:
            found.append((("c",), "weighted_sum takes no `c` (that is add_difference's)"))
        weights: list[tuple[tuple, float]] = [(("alpha",), self.alpha)]
        if isinstance(self.alphas, list):
            if len(self.alphas) != len(MERGE_BLOCKS):
                found.append((("alphas",), (f"a list of block weights has {len(MERGE_BLOCKS)} numbers "
                                           f"(IN00..IN11, M00, OUT00..OUT11), got {len(self.alphas)}")))
            weights += [(("alphas", i), w) for i, w in enumerate(self.alphas)]
        elif self.alphas:
            weights += [(("alphas", block), w) for block, w in self.alphas.items()]
        if self.method == "weighted_sum":
            found += [(path, f"a weighted sum's alpha is between 0 and 1 (got {w})")
                      for path, w in weights if not 0.0 <= w <= 1.0]
        return found


class ModelEntry(Strict):
    """A named model: a checkpoint file or diffusers folder (or a merge of other entries), an optional VAE,
    LoRAs for every stage."""
    checkpoint: str | None = Field(None, min_length=1, description="a path (relative to the recipe) or a "
                                                                   "name in the checkpoint folders")
    merge: MergeSpec | None = Field(None, description="instead of a checkpoint: merge other entries")
    vae: str | None = None
    config: str | None = Field(None, description="a diffusers folder whose configs describe this single-file "
                                                 "checkpoint (default: the shipped configs of its family)")
    loras: list[LoraRef] = Field(default_factory=list)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="pinned by `sdbake lock`")

    @model_validator(mode="after")
    def _checkpoint_or_merge(self):
        if (self.checkpoint is None) == (self.merge is None):
            raise ValueError("set exactly one of `checkpoint` and `merge`")
        return self


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
    subseed: Seed | None = Field(None, description="A1111 variation seed (-1 or unset with a strength: picked "
                                                   "at plan time)")
    subseed_strength: SubseedStrength | None = None
    seed_resize_from_w: SeedResize | None = None
    seed_resize_from_h: SeedResize | None = None
    n_iter: int | None = Field(None, ge=1, le=100, description="A1111 \"Batch count\": this many batches of "
                               "batch_size, one after another, their seeds numbered on (default 1)")


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
