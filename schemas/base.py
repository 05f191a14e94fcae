"""Shared pieces of the recipe schema: strict models, sampler fields, LoRA references."""
from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sdbake.schemas.names import parse_sampler, parse_scheduler


class Strict(BaseModel):
    """Unknown keys are errors and values are never coerced between types (fail loudly)."""
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False, allow_inf_nan=False)


def _sampler_label(value: str) -> str:
    parse_sampler(value)          # raises ValueError with the known names
    return value


def _scheduler_label(value: str) -> str:
    return parse_scheduler(value)


SamplerName = Annotated[str, AfterValidator(_sampler_label)]
SchedulerName = Annotated[str, AfterValidator(_scheduler_label)]
Seed = Annotated[int, Field(ge=-1, le=2**63 - 1, description="-1: pick one at plan time (recorded)")]
Size = Annotated[int, Field(ge=64, le=8192, multiple_of=8)]
SubseedStrength = Annotated[float, Field(ge=0.0, le=1.0, description="A1111 \"Variation strength\": 0 = the seed's "
                                         "noise, 1 = the subseed's")]
SeedResize = Annotated[int, Field(ge=0, le=8192, description="A1111 \"Resize seed from\" (pixels; 0 = off): the "
                                  "noise of this size, centred in the image")]
Steps = Annotated[int, Field(ge=1, le=1000)]
Cfg = Annotated[float, Field(ge=0.0, le=100.0)]
ClipSkip = Annotated[int, Field(ge=1, le=12)]
BatchSize = Annotated[int, Field(ge=1, le=64)]
Rect = Annotated[list[int], Field(min_length=4, max_length=4, description="[x, y, width, height] in pixels")]
Point = Annotated[list[int], Field(min_length=2, max_length=2, description="[x, y] in pixels")]


class LoraRef(Strict):
    """A LoRA file and its strength, applied to the UNet and text encoder of one stage."""
    name: str = Field(min_length=1, description="a path, or a file name found in the lora folders")
    weight: float = Field(1.0, ge=-10.0, le=10.0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class SdxlConditioning(Strict):
    """SDXL micro-conditioning (what the UNet is told about the training image); unset values take
    A1111's defaults: original and target size = the size being sampled, crop [0, 0], refiner
    aesthetic score 6.0 for the prompt and 2.5 for the negative. SD1 models ignore it."""
    original_size: Annotated[list[int], Field(min_length=2, max_length=2, description="[width, height]")] | None = None
    crop: Annotated[list[int], Field(min_length=2, max_length=2, description="[left, top] in pixels")] | None = None
    target_size: Annotated[list[int], Field(min_length=2, max_length=2, description="[width, height]")] | None = None
    aesthetic_score: float | None = Field(None, ge=0.0, le=10.0, description="refiner only; default 6.0")
    negative_aesthetic_score: float | None = Field(None, ge=0.0, le=10.0, description="refiner only; default 2.5")


class StageBase(Strict):
    """Fields every stage has. `INHERITS` names the fields filled from `[defaults]` when unset."""
    INHERITS: ClassVar[tuple[str, ...]] = ()
    VERSION: ClassVar[int] = 1
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
                           description="default: the type, or type-N when the type repeats")
    description: str | None = None

    def files_read(self) -> list[tuple[tuple, str, str]]:
        """(param path, file name as written, what it is) for each input file this stage reads."""
        return []
