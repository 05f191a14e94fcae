"""The plain data passed from stage to stage (docs/design.md section 3); the cache stores it as is.

Tensors go to safetensors and everything else to JSON: `pack` / `unpack` are exact inverses, so a
state loaded from the cache continues a run bit for bit as if it had never left memory.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# A sampler carry, a noise source or a conditioning memo in stored form: (tensors, JSON metadata).
Packed = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class Position:
    """Where a partly sampled latent is: at sigmas[step] of a `steps`-long `scheduler` schedule."""
    steps: int
    scheduler: str
    step: int
    sigma: float


@dataclass(frozen=True)
class State:
    latent: Any = None                    # (B, C, h, w) in the model's latent space, scaled
    latent_kind: str | None = None        # "empty" | "image" (encoded init) | "sampled" | "noisy"
    position: Position | None = None      # set while the latent holds leftover noise mid-schedule
    sampler: str | None = None            # the sampler whose carry this is
    carry: Packed | None = None           # sampler history, for exact splits
    noise: Packed | None = None           # per-image generator states (+ Brownian seeds)
    model_calls: int = 0                  # denoiser calls so far: A1111 schedules prompts by it
    image: Any = None                     # (B, 3, H, W) float in [0, 1], when decoded
    image_from_latent: bool = False       # True when `image` is exactly the decode of `latent`
    seeds: tuple[int, ...] = ()
    subseeds: tuple[int, ...] = ()        # A1111 variation seed of each image (empty: none)
    subseed_strength: float = 0.0
    seed_resize_from: tuple[int, ...] = ()  # A1111 "resize seed from" (width, height) in pixels (empty: off)
    width: int = 0
    height: int = 0
    model: str | None = None              # the [models] entry that produced the latent
    prompts: tuple[str, ...] = ()         # resolved (wildcards expanded), one per image
    negatives: tuple[str, ...] = ()
    prompt_template: str = ""
    negative_template: str = ""
    clip_skip: int = 1
    img2img_denoise: float | None = None
    vae_tiled: bool | None = None         # None: tile automatically above AUTO_TILE_PIXELS
    embeddings: Packed | None = None      # text -> token embeddings memo (the encode stage's output)
    twin: Packed | None = None            # intervene keep_outside: the unedited latent, its carry, the mask
    provenance: tuple[dict, ...] = field(default_factory=tuple)

    def evolve(self, **changes) -> State:
        return dataclasses.replace(self, **changes)

    @property
    def batch_size(self) -> int:
        return len(self.seeds)


_PACKED_FIELDS = ("carry", "noise", "embeddings", "twin")
_TENSOR_FIELDS = ("latent", "image")


def pack(state: State) -> Packed:
    """State -> (flat dict of tensors, JSON-able metadata)."""
    tensors: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if f.name in _TENSOR_FIELDS:
            if value is not None:
                tensors[f.name] = value.contiguous()
            meta[f.name] = value is not None
        elif f.name in _PACKED_FIELDS:
            if value is None:
                meta[f.name] = None
            else:
                part_tensors, part_meta = value
                for key, tensor in part_tensors.items():
                    tensors[f"{f.name}.{key}"] = tensor.contiguous()
                meta[f.name] = {"meta": part_meta, "tensors": sorted(part_tensors)}
        elif f.name == "position":
            meta[f.name] = dataclasses.asdict(value) if value else None
        else:
            meta[f.name] = list(value) if isinstance(value, tuple) else value
    return tensors, meta


def unpack(tensors: dict[str, Any], meta: dict[str, Any]) -> State:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(State):
        stored = meta.get(f.name)
        if f.name in _TENSOR_FIELDS:
            values[f.name] = tensors[f.name] if stored else None
        elif f.name in _PACKED_FIELDS:
            values[f.name] = None if stored is None else (
                {key: tensors[f"{f.name}.{key}"] for key in stored["tensors"]}, stored["meta"])
        elif f.name == "position":
            values[f.name] = Position(**stored) if stored else None
        elif f.name in ("seeds", "subseeds", "seed_resize_from", "prompts", "negatives", "provenance"):
            values[f.name] = tuple(stored or ())
        else:
            values[f.name] = stored if stored is not None else f.default
    return State(**values)
