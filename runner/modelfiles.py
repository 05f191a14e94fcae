"""The files behind a recipe's [models] entries and LoRAs, with their hashes. No torch here."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from sdbake.runner.models.hashing import sha256_file, short_hash
from sdbake.runner.models.search import resolve_model_file
from sdbake.schemas.errors import ModelError
from sdbake.schemas.recipe import LoraRef, ModelEntry


def folder_sha256(folder: Path) -> str:
    """A diffusers folder's identity: sha256 over its files' relative paths and sha256s."""
    listing = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            listing[path.relative_to(folder).as_posix()] = sha256_file(path)
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


def path_sha256(path: Path) -> str:
    return folder_sha256(path) if path.is_dir() else sha256_file(path)


@dataclass(frozen=True)
class LoraFile:
    path: Path
    weight: float                       # text encoders, and the UNet unless unet_weight is set
    sha256: str
    unet_weight: float | None = None    # a prompt tag's `<lora:name:te:unet>`
    tag: str | None = None              # the name a prompt tag gave it (A1111's `Lora hashes` label)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def weights(self) -> tuple[Path, float, float]:
        """(file, text encoder weight, UNet weight), as runner.models.lora.apply_loras takes them."""
        return self.path, self.weight, self.weight if self.unet_weight is None else self.unet_weight


@dataclass
class ModelFiles:
    """One [models] entry, resolved: where its files are and what they hash to."""
    entry_name: str
    checkpoint: Path
    checkpoint_sha256: str
    vae: Path | None = None
    vae_sha256: str | None = None
    loras: list[LoraFile] = field(default_factory=list)
    config: Path | None = None                  # diffusers config folder for a single-file checkpoint
    config_sha256: str | None = None
    display_name: str | None = None             # a merge's entry name (its file is a cache entry)

    @property
    def model_name(self) -> str:
        if self.display_name:
            return self.display_name
        return self.checkpoint.stem if self.checkpoint.is_file() else self.checkpoint.name

    @property
    def model_hash(self) -> str:
        return short_hash(self.checkpoint_sha256)

    def identity(self) -> dict:
        """What enters cache keys: content hashes only, so renaming a file keeps every hit."""
        identity = {"checkpoint": self.checkpoint_sha256, "vae": self.vae_sha256,
                    "loras": [[l.sha256, l.weight] for l in self.loras]}
        if self.config is not None:
            identity["config"] = self.config_sha256
        return identity


def resolve_loras(refs: list[LoraRef], recipe_dir: Path) -> list[LoraFile]:
    files = []
    for ref in refs:
        path = resolve_model_file(ref.name, "loras", recipe_dir)
        files.append(LoraFile(path, ref.weight, path_sha256(path)))
    return files


def resolve_model(name: str, entry: ModelEntry, recipe_dir: Path) -> ModelFiles:
    if entry.merge is not None:
        raise ModelError(f"model `{name}` is a merge: the plan resolves it (runner/merges.py)")
    checkpoint = resolve_model_file(entry.checkpoint, "checkpoints", recipe_dir)
    vae = resolve_model_file(entry.vae, "vae", recipe_dir) if entry.vae else None
    config = (recipe_dir / entry.config) if entry.config else None
    if config is not None and not (config / "unet" / "config.json").is_file():
        raise ModelError(f"config folder has no unet/config.json: {config}", file=str(config))
    return ModelFiles(entry_name=name, checkpoint=checkpoint, checkpoint_sha256=path_sha256(checkpoint),
                      vae=vae, vae_sha256=path_sha256(vae) if vae else None,
                      loras=resolve_loras(entry.loras, recipe_dir), config=config,
                      config_sha256=folder_sha256(config) if config is not None else None)
