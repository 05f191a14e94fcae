"""One pydantic model per stage kind; the recipe's `stages` list is a union discriminated on `type`."""
from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from sdbake.schemas.a1111_pattern import parse_pattern
from sdbake.schemas.base import (
    BatchSize,
    Cfg,
    ClipSkip,
    LoraRef,
    Point,
    Rect,
    SamplerName,
    SchedulerName,
    SdxlConditioning,
    Seed,
    SeedResize,
    Size,
    StageBase,
    Steps,
    Strict,
    SubseedStrength,
)

SAMPLING = ("model", "seed", "steps", "sampler", "scheduler", "cfg", "loras", "sdxl")


class EncodeParams(StageBase):
    """Prompts to conditioning; an empty latent, or an init image VAE-encoded for img2img."""
    INHERITS: ClassVar = ("model", "seed", "width", "height", "batch_size", "clip_skip", "subseed",
                          "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")
    type: Literal["encode"] = "encode"
    prompt: str = ""
    negative: str = ""
    image: str | None = Field(None, description="init image for img2img (resized to width x height)")
    denoise: float = Field(0.75, gt=0.0, le=1.0, description="img2img strength; only used with image")
    model: str | None = None
    seed: Seed | None = None
    width: Size | None = None
    height: Size | None = None
    batch_size: BatchSize | None = None
    clip_skip: ClipSkip | None = None
    subseed: Seed | None = Field(None, description="A1111 variation seed (-1: pick one at plan time)")
    subseed_strength: SubseedStrength | None = None
    seed_resize_from_w: SeedResize | None = None
    seed_resize_from_h: SeedResize | None = None

    def files_read(self) -> list[tuple[tuple, str, str]]:
        return [(("image",), self.image, "init image")] if self.image else []

    def image_seeds(self) -> list[int]:
        """Each image's seed as A1111 numbers them: seed + i, but with a variation seed every image
        keeps the seed and the subseed counts up instead (processing.py process_images_inner)."""
        return [self.seed + (0 if self.subseed_strength else i) for i in range(self.batch_size)]

    def image_subseeds(self) -> list[int]:
        return [self.subseed + i for i in range(self.batch_size)] if self.subseed_strength else []


class Region(Strict):
    """A prompt applied where its rect or mask is (Latent Couple / Regional Prompter's latent mode)."""
    rect: Rect | None = Field(None, description="[x, y, width, height] in pixels of the image this stage samples")
    mask: str | None = Field(None, description="mask image (white = weight 1, black = 0), stretched to the image")
    prompt: str = Field(description="A1111 prompt syntax (emphasis, schedules, AND); no wildcards")
    weight: float = Field(1.0, ge=-10.0, le=10.0, description="scales this prompt's guidance inside its area")

    @field_validator("prompt")
    @classmethod
    def _prompt_text(cls, prompt):
        if not prompt.strip():
            raise ValueError("a region needs a prompt (it is empty)")
        if "__" in prompt or "{" in prompt:
            raise ValueError("wildcards are not expanded in region prompts: write the words themselves")
        if re.search(r"<\w+:[^>]+>", prompt):       # A1111's extra-network tags (<lora:name:w>)
            raise ValueError("LoRA tags are not read in region prompts: put them in the stage's prompt")
        return prompt

    @model_validator(mode="after")
    def _one_area(self):
        if (self.rect is None) == (self.mask is None):
            raise ValueError("a region needs exactly one of `rect` and `mask`")
        if self.rect is not None and (self.rect[2] <= 0 or self.rect[3] <= 0 or min(self.rect[:2]) < 0):
            raise ValueError(f"a region rect is [x, y, width, height] with x, y >= 0 and a positive size "
                             f"(got {self.rect})")
        return self


REGION_METHODS = ("latent_couple",)


class SamplingStage(StageBase):
    """What every stage that runs a sampler may set for itself (else it comes from [defaults])."""
    INHERITS: ClassVar = SAMPLING
    prompt: str | None = Field(None, description="prompt override for this stage")
    negative: str | None = None
    model: str | None = None
    seed: Seed | None = None
    sampler: SamplerName | None = None
    scheduler: SchedulerName | None = None
    cfg: Cfg | None = None
    loras: list[LoraRef] | None = None
    sdxl: SdxlConditioning | None = Field(None, description="SDXL micro-conditioning (A1111's defaults when unset)")
    preview_every: int | None = Field(None, ge=1, le=1000, description="a cheap latent preview every N steps "
                                      "(watch page; files with preview_dir); never part of the cache key")
    preview_dir: str | None = Field(None, min_length=1, description="also write the step previews here (under "
                                    "the output root), as <stage>-step<N>.png")
    regions: list[Region] | None = Field(None, max_length=64, description="prompts applied to parts of the image, "
                                          "besides the stage's prompt (which covers all of it); docs/regions.md")
    region_method: Literal[REGION_METHODS] | None = Field(None, description="how regions apply; default "
                                                           "latent_couple when there are regions")

    @field_validator("regions")
    @classmethod
    def _no_regions_is_none(cls, regions):
        # `regions = []` is the stage without regions: the same canonical form and the same cache key
        return regions or None

    @model_validator(mode="after")
    def _region_method(self):
        if self.regions and self.region_method is None:
            self.region_method = REGION_METHODS[0]
        elif not self.regions and self.region_method is not None:
            raise ValueError("region_method needs `regions`")
        return self

    def files_read(self) -> list[tuple[tuple, str, str]]:
        return [(("regions", n, "mask"), region.mask, "region mask")
                for n, region in enumerate(self.regions or []) if region.mask]

    @field_validator("preview_dir")
    @classmethod
    def _preview_dir_inside(cls, folder):
        if folder is not None and (folder.startswith(("/", "\\")) or ".." in folder.replace("\\", "/").split("/")
                                   or (len(folder) > 1 and folder[1] == ":")):
            raise ValueError(f"must be a folder inside the output root (got {folder!r})")
        return folder


class TokenMerging(Strict):
    """Token merging (the tomesd library) on this stage's UNet, as A1111's "Token merging ratio" (sample)
    and "Token merging ratio hr" (hires) apply it: self-attention tokens only, 2x2 strides, no random
    destination choice (A1111 passes use_rand=False, so a recipe renders the same bytes every time)."""
    tome_ratio: float | None = Field(None, ge=0.0, le=0.9, description="share of tokens merged; 0 = off "
                                     "(the UNet is not patched)")
    tome_max_downsample: Literal[1, 2, 4, 8] | None = Field(
        None, description="merge in UNet levels downsampled at most this much (default 1, as A1111; models "
                          "whose attention starts at a lower level, as the demo's, need 2)")

    @model_validator(mode="after")
    def _zero_is_off(self):
        # 0 and unset are one recipe (and one cache key); without merging, max_downsample means nothing
        if not self.tome_ratio:
            self.tome_ratio = self.tome_max_downsample = None
        return self


class SampleParams(SamplingStage, TokenMerging):
    """Walk steps start..end of a `steps`-long sigma schedule; leftover noise is kept when end < steps."""
    type: Literal["sample"] = "sample"
    start: int | None = Field(None, ge=0, description="first step (default 0, or where the last stage ended)")
    end: int | None = Field(None, ge=1, description="last step (default steps)")
    steps: Steps | None = None


class PasteOp(Strict):
    op: Literal["paste"] = "paste"
    image: str
    at: Point = Field(default_factory=lambda: [0, 0])
    alpha: float = Field(1.0, ge=0.0, le=1.0)
    mask: str | None = None


class ImageOp(Strict):
    """Replace the clean estimate with a file edited by hand (its content hash keys the cache)."""
    op: Literal["image"] = "image"
    image: str


class AdjustOp(Strict):
    op: Literal["adjust"] = "adjust"
    brightness: float = Field(1.0, ge=0.0, le=10.0)
    contrast: float = Field(1.0, ge=0.0, le=10.0)
    saturation: float = Field(1.0, ge=0.0, le=10.0)
    hue: float = Field(0.0, ge=-180.0, le=180.0, description="degrees")


class BlurOp(Strict):
    op: Literal["blur"] = "blur"
    radius: float = Field(2.0, gt=0.0, le=256.0)


class FillOp(Strict):
    op: Literal["fill"] = "fill"
    color: str | list[int] = Field(description="'#rrggbb', a colour name, or [r, g, b]")
    rect: Rect | None = None
    mask: str | None = None


InterveneOp = Annotated[PasteOp | ImageOp | AdjustOp | BlurOp | FillOp, Field(discriminator="op")]


class InterveneParams(StageBase):
    """Edit the clean estimate mid-sampling and continue, changing nothing outside the mask."""
    INHERITS: ClassVar = ("model", "cfg", "sdxl")
    type: Literal["intervene"] = "intervene"
    ops: list[InterveneOp] = Field(default_factory=list)
    image: str | None = Field(None, description="shorthand for a first op `image`")
    mask: str | None = Field(None, description="white = may change")
    rect: Rect | None = None
    feather: float = Field(0.0, ge=0.0, le=256.0, description="mask blur radius in pixels")
    keep_outside: bool | None = Field(None, description="every later step keeps the latent outside the mask "
                                      "equal to the unedited run's (the unedited latent is sampled beside it: "
                                      "2x batch); needs mask or rect and a latent mid-schedule")
    preview: str | None = Field(None, description="write the decoded clean estimate after the ops here "
                                "(output root)")
    preview_before: str | None = Field(None, description="also write the decoded clean estimate before the ops")
    model: str | None = None
    cfg: Cfg | None = None
    sdxl: SdxlConditioning | None = None

    @field_validator("keep_outside")
    @classmethod
    def _false_is_unset(cls, keep):
        # `keep_outside = false` is today's intervene: the same canonical form, so the same cache key
        return keep or None

    @model_validator(mode="after")
    def _keep_outside_needs_a_region(self):
        if self.keep_outside and not (self.mask or self.rect):
            raise ValueError("keep_outside keeps what lies outside the mask: set `mask` or `rect`")
        return self

    def files_read(self) -> list[tuple[tuple, str, str]]:
        found = [((name,), getattr(self, name), name) for name in ("image", "mask") if getattr(self, name)]
        for n, op in enumerate(self.ops):
            for name in ("image", "mask"):
                if getattr(op, name, None):
                    found.append((("ops", n, name), getattr(op, name), f"{op.op} {name}"))
        return found


LATENT_UPSCALERS = ("latent-nearest-exact", "latent-nearest", "latent-bilinear", "latent-bicubic",
                    "latent-bilinear-antialiased", "latent-bicubic-antialiased")
# `none` is A1111's "None": no upscaler, the decoded image resized once with Lanczos (images.resize_image).
PIXEL_UPSCALERS = ("lanczos", "nearest", "none")
# A1111's upscaler labels (modules/shared_items.py latent_upscale_modes, and its PIL upscalers).
A1111_UPSCALERS = {
    "Latent": "latent-bilinear", "Latent (antialiased)": "latent-bilinear-antialiased",
    "Latent (bicubic)": "latent-bicubic", "Latent (bicubic antialiased)": "latent-bicubic-antialiased",
    "Latent (nearest)": "latent-nearest", "Latent (nearest-exact)": "latent-nearest-exact",
    "Lanczos": "lanczos", "Nearest": "nearest", "None": "none",
}
A1111_UPSCALER_LABELS = {label.lower(): name for label, name in A1111_UPSCALERS.items()}   # looked up lower-cased
# A1111's built-in Real-ESRGAN upscalers (modules/realesrgan_model.py) by label -> the file it downloads,
# by stem: with that file in an upscaler folder the label works as written. Other model upscalers
# (ESRGAN, "4x-UltraSharp", ...) are named by their file's stem, as A1111 does.
A1111_UPSCALER_FILES = {
    "R-ESRGAN 4x+": "RealESRGAN_x4plus", "R-ESRGAN 4x+ Anime6B": "RealESRGAN_x4plus_anime_6B",
    "R-ESRGAN 2x+": "RealESRGAN_x2plus", "R-ESRGAN General 4xV3": "realesr-general-x4v3",
    "R-ESRGAN General WDN 4xV3": "realesr-general-wdn-x4v3", "R-ESRGAN AnimeVideo": "realesr-animevideov3",
}


class HiresParams(SamplingStage, TokenMerging):
    """Upscale, then re-denoise the last `steps` of a longer schedule (A1111 "hires fix")."""
    type: Literal["hires"] = "hires"
    scale: float = Field(2.0, gt=1.0, le=8.0)
    width: Size | None = Field(None, description="target size; overrides scale")
    height: Size | None = None
    upscaler: str = Field("latent-nearest-exact", min_length=1,
                          description="a latent or pixel upscaler name, or an upscaler model file")
    steps: int | None = Field(None, ge=0, le=1000, description="0 = the base stage's steps")
    denoise: float = Field(0.5, gt=0.0, le=1.0)
    tiled: bool | None = Field(None, description="VAE tiling; default: automatic above 1024x1024")

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The output size: explicit width/height (the other side keeps the aspect), else scale."""
        if self.width or self.height:
            w = self.width or round(width * self.height / height / 8) * 8
            h = self.height or round(height * self.width / width / 8) * 8
            return w, h
        return int(width * self.scale) // 8 * 8, int(height * self.scale) // 8 * 8


class InpaintParams(SamplingStage):
    """Masked img2img, optionally looped (A1111 loopback); pixels outside the mask stay exact."""
    type: Literal["inpaint"] = "inpaint"
    mask: str | None = Field(None, description="white = repaint")
    rects: list[Rect] = Field(default_factory=list)
    blur: int = Field(4, ge=0, le=256, description="mask feather in pixels (A1111 'Mask blur')")
    loops: int = Field(1, ge=1, le=100)
    denoise: float | list[float] = Field(0.75, description="one value, or [first loop, last loop]")
    curve: Literal["linear", "aggressive", "lazy"] = "linear"
    color_correction: bool = False
    area: Literal["whole", "masked"] = "whole"
    padding: int = Field(32, ge=0, le=1024)
    steps: Steps | None = None

    @field_validator("denoise")
    @classmethod
    def _denoise_range(cls, denoise):
        values = denoise if isinstance(denoise, list) else [denoise]
        if isinstance(denoise, list) and len(values) != 2:
            raise ValueError(f"give one value or [first, last] (got {len(values)} values)")
        if not all(0.0 < v <= 1.0 for v in values):
            raise ValueError(f"must be in (0, 1] (got {denoise})")
        return denoise

    def files_read(self) -> list[tuple[tuple, str, str]]:
        return ([(("mask",), self.mask, "mask")] if self.mask else []) + super().files_read()

    @model_validator(mode="after")
    def _has_mask(self):
        if self.mask is None and not self.rects:
            raise ValueError("needs a `mask` file or `rects`")
        return self


DEFAULT_SAVE_PATH = "{{ name }}/{{ seed }}-{{ prompt | words(6) }}.png"


class SaveParams(StageBase):
    """Write images with A1111 infotext; a templated path confined to the output folder, never overwriting."""
    type: Literal["save"] = "save"
    path: str | None = Field(None, min_length=1, description="a jinja2 template (the default when no `pattern`: "
                             f"`{DEFAULT_SAVE_PATH}`)")
    pattern: str | None = Field(None, min_length=1, description="instead of `path`: an A1111 file name pattern, "
                                "`[seed]-[prompt_spaces]` (its `samples_filename_pattern`)")
    pattern_dir: str | None = Field(None, min_length=1, description="with `pattern`: A1111's directory name "
                                    "pattern, `[date]` (its `directories_filename_pattern`)")
    number: bool | None = Field(None, description="with `pattern`: A1111's `00000-` sequence number prefix (on "
                                "unless false), the next after the highest in the folder when the file is written")
    format: Literal["png", "webp", "jpeg"] | None = Field(None, description="default: from the extension")
    quality: int = Field(95, ge=1, le=100)
    on_exists: Literal["number", "skip", "error"] = "number"

    @model_validator(mode="before")
    @classmethod
    def _default_path(cls, data):
        if isinstance(data, dict) and data.get("path") is None and data.get("pattern") is None:
            data = {**data, "path": DEFAULT_SAVE_PATH}
        return data

    @field_validator("pattern", "pattern_dir")
    @classmethod
    def _known_keys(cls, pattern, info):
        if pattern is not None:
            parse_pattern(pattern, folder=info.field_name == "pattern_dir")
        return pattern

    @model_validator(mode="after")
    def _path_or_pattern(self):
        if self.path is not None and self.pattern is not None:
            raise ValueError("give `path` (a jinja2 template) or `pattern` (an A1111 pattern), not both")
        if self.pattern is None and (self.pattern_dir is not None or self.number is not None):
            raise ValueError("`pattern_dir` and `number` go with `pattern`")
        return self

    @property
    def sequence_number(self) -> bool:
        """Whether names get A1111's `00000-` prefix (a pattern with `number` not false)."""
        return self.pattern is not None and self.number is not False


Stage = Annotated[EncodeParams | SampleParams | InterveneParams | HiresParams | InpaintParams | SaveParams,
                  Field(discriminator="type")]
STAGE_TYPES = {cls.model_fields["type"].default: cls for cls in
               (EncodeParams, SampleParams, InterveneParams, HiresParams, InpaintParams, SaveParams)}
