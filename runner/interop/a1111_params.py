"""What every part of an A1111 import shares: the parameters being mapped, the result, A1111's defaults.
No torch here."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from sdbake.runner.interop.model_names import ModelResolver
from sdbake.schemas.errors import InputFileError
from sdbake.schemas.names import SAMPLERS, automatic_scheduler, parse_sampler, parse_scheduler, with_eta
from sdbake.schemas.stages import A1111_UPSCALER_LABELS

INIT_IMAGE_PLACEHOLDER = "REPLACE-ME-init-image.png"
MASK_PLACEHOLDER = "REPLACE-ME-inpaint-mask.png"
_TITLE_HASH = re.compile(r"^(.*?)\s*\[([0-9a-fA-F]{8,64})\]$")
IMG2IMG_KEYS = ("Mask blur", "Inpaint area", "Masked area padding", "Masked content", "Mask mode")


@dataclass
class Imported:
    """What an import made: the recipe data, the settings it could not map (written as comments), header
    comment lines for the recipe file, and lines to say on stderr."""
    recipe: dict
    unmapped: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ParamMapper:
    """Takes keys out of params as they are mapped; whatever is left at the end is unmapped."""

    def __init__(self, params: dict[str, str], source: str):
        self.params, self.source, self.unmapped = dict(params), source, []

    @property
    def made_by_sdbake(self) -> bool:
        """sdbake's own infotext (`Version: sdbake ...`): its noise is A1111's CPU RNG, its refiner switches by step."""
        return str(self.params.get("Version", "")).startswith("sdbake")

    def take(self, key: str, default=None):
        return self.params.pop(key, default)

    def has(self, *keys: str) -> bool:
        return any(k in self.params for k in keys)

    def number(self, key: str, kind=float):
        value = self.take(key)
        if value is None:
            return None
        try:
            return kind(float(value)) if kind is int else kind(value)
        except ValueError:
            raise InputFileError(f"A1111 parameter `{key}: {value}` is not a number", file=self.source) from None

    def leave(self, key: str, why: str = "") -> None:
        value = self.take(key)
        if value is not None:
            self.unmapped.append(f"{key}: {value}" + (f" ({why})" if why else ""))

    def sampler(self, sampler_key: str, schedule_key: str, version: tuple[int, ...] | None) -> tuple[str, str] | None:
        """(sampler id, scheduler id) of a sampler label and its `Schedule type`, as A1111 reads them."""
        label, schedule = self.take(sampler_key), self.take(schedule_key)
        if label is None:
            return None
        try:
            sampler, from_label = parse_sampler(label)
            from_label = None if from_label == "automatic" else from_label     # "Euler a Automatic"
            if schedule and schedule.lower() != "automatic":
                return sampler, parse_scheduler(schedule)
        except ValueError as err:
            raise InputFileError(f"A1111 parameter `{sampler_key}: {label}`: {err}", file=self.source) from None
        if from_label:
            return sampler, from_label
        # Before 1.9 A1111 had no Schedule type: a label without Karras/Exponential used the model's schedule.
        if schedule is None and version is not None and version < (1, 9):
            return sampler, "normal"
        return sampler, automatic_scheduler(sampler)


    def sampler_eta(self, sampler: str) -> tuple[str, str | None]:
        """`sampler` as A1111 ran it with the infotext's `Eta` (1, its default, when the key is absent), for
        the samplers whose eta sdbake fixes (DPM fast, DPM adaptive), and a note when no entry runs it so."""
        if SAMPLERS[sampler].eta is None:
            return sampler, None
        text = self.take("Eta")
        try:
            eta = 1.0 if text is None else float(text)
        except ValueError:
            raise InputFileError(f"A1111 parameter `Eta: {text}` is not a number", file=self.source) from None
        twin = with_eta(sampler, eta)
        if twin is not None:
            return twin, None
        if text is not None:
            self.unmapped.append(f"Eta: {text}")
        said = "its default" if text is None else "the infotext's `Eta`"
        return sampler, (f"A1111 ran {SAMPLERS[sampler].label} with eta {eta:g} ({said}): sdbake's {sampler} runs "
                         f"with eta {SAMPLERS[sampler].eta:g}, so the same settings give another image.")


def a1111_version(text: str | None) -> tuple[int, ...] | None:
    """`v1.10.1-23-gabc` -> (1, 10, 1); None when it is not an A1111 version."""
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def split_title(title: str) -> tuple[str, str | None]:
    """A1111's checkpoint title `name.safetensors [hash]` -> (name, hash)."""
    match = _TITLE_HASH.match(title.strip())
    return (match.group(1), match.group(2).lower()) if match else (title.strip(), None)


def upscaler_name(label: str, resolver: ModelResolver) -> str:
    """An A1111 upscaler label -> sdbake's upscaler name, or an upscaler model found by name."""
    known = A1111_UPSCALER_LABELS.get(" ".join(label.lower().split()))
    return known if known else resolver.resolve("upscalers", label)
