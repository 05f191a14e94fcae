"""Recipe -> stage invocations with cache keys, computed without torch (docs/design.md section 5).

A stage's key is the sha256 of the canonical JSON of everything that can change its output: type and
code version, resolved params, the input state's key, the content hashes of the model files and of
every file it reads, and the numerics fingerprint. Nothing else: never a later stage's params. Params
that cannot change the output (ids, descriptions, preview paths) stay out, and a save stage passes its
input state through unchanged, so editing a save path never invalidates sampling. What is particular
to a stage kind lives in its module under runner/kinds/.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sdbake.runner.inputs import found_key
from sdbake.runner.kinds import KINDS
from sdbake.runner.kinds.common import (
    PlanContext,
    canonical_dict_of,
    error_at,
    hash_files,
    key_of,
    note_a1111_facts,
    wildcard_dirs,
)
from sdbake.runner.kinds.lora_tags import plan_lora_tags
from sdbake.runner.modelfiles import LoraFile, ModelFiles, resolve_loras, resolve_model
from sdbake.runner.models.hashing import sha256_file
from sdbake.runner.numerics import Numerics
from sdbake.schemas.canonical import canonical_json
from sdbake.schemas.errors import SdbakeError
from sdbake.schemas.loader import LoadedRecipe

KEY_FORMAT = 2
NOT_IN_KEY = {"id", "description", "preview", "preview_before", "preview_every", "preview_dir"}

__all__ = ["KEY_FORMAT", "NOT_IN_KEY", "Invocation", "Plan", "build_plan", "canonical_dict_of", "embeddings_used",
           "key_of", "wildcard_dirs"]


@dataclass
class Invocation:
    index: int
    stage: Any                          # the stage's params model
    key: str                            # the cache entry of this stage
    state_key: str                      # the state it outputs (a save passes its input's through)
    inputs: dict                        # the key document, for `plan` to explain a miss
    files: dict[str, Path] = field(default_factory=dict)       # param name -> resolved file it reads
    model: ModelFiles | None = None
    loras: list[LoraFile] = field(default_factory=list)        # the stage's own LoRAs
    lora_tags: list[LoraFile] = field(default_factory=list)    # the LoRAs its own prompt's tags name
    prompts: list[str] = field(default_factory=list)           # resolved prompts, one per image
    negatives: list[str] = field(default_factory=list)
    wildcards: dict[str, Path] = field(default_factory=dict)   # wildcard files its prompts read
    embeddings: dict[str, Path] = field(default_factory=dict)  # textual inversions its prompts name
    outputs: list[str] = field(default_factory=list)           # save: rendered relative paths
    embedded: list[dict] = field(default_factory=list)         # save: the document each image carries

    @property
    def id(self) -> str:
        return self.stage.id

    @property
    def passes_state_through(self) -> bool:
        return KINDS[self.stage.type].passes_state_through


@dataclass
class Plan:
    loaded: LoadedRecipe
    numerics: Numerics
    invocations: list[Invocation]
    models: dict[str, ModelFiles]
    recipe_hash: str
    output_root: Path
    embedding_files: dict[str, Path] = field(default_factory=dict)   # textual inversions the prompts use
    random_seed: int | None = None      # what `seed = -1` became at plan time
    random_subseed: int | None = None   # what `subseed = -1` became at plan time

    @property
    def recipe(self):
        return self.loaded.recipe


EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


def embeddings_used(loaded: LoadedRecipe, texts: list[str]) -> dict[str, Path]:
    """Textual-inversion files (recipe folder's embeddings/, then the configured folders) that a prompt
    names, as A1111 triggers them: by file stem, or `embedding:stem`."""
    from sdbake.runner.models.search import load_search_config
    folders = [loaded.folder / "embeddings", *load_search_config().folders["embeddings"]]
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in EMBEDDING_SUFFIXES and path.is_file():
                    found.setdefault(path.stem, path)
    joined = "\n".join(texts)
    return {stem: path for stem, path in found.items()
            if re.search(rf"(?<![\w]){re.escape(stem)}(?![\w])", joined)}


def found_loras(refs: list, loaded: LoadedRecipe) -> list:
    """LoRA references with the files `run IMAGE` found by the recorded hash put in, as a checkpoint's."""
    return [ref.model_copy(update={"name": str(loaded.found[found_key("loras", ref.name)])})
            if found_key("loras", ref.name) in loaded.found else ref for ref in refs]


def build_plan(loaded: LoadedRecipe, numerics: Numerics, output_root: Path, *,
               now: datetime | None = None, cache_dir: Path | str | None = None) -> Plan:
    recipe = loaded.recipe
    recipe_hash = hashlib.sha256(canonical_json(recipe, indent=None).encode()).hexdigest()
    models: dict[str, ModelFiles] = {}

    def model_files(name: str) -> ModelFiles:
        if name not in models:
            entry = recipe.models[name]
            if entry.merge is not None:
                from sdbake.runner.cache import CacheStore, default_cache_root
                from sdbake.runner.merges import resolve_merge
                store = CacheStore(Path(cache_dir) if cache_dir else default_cache_root())
                before = set(models)
                try:
                    merged = resolve_merge(name, entry, model_files, store, loaded.folder)
                except SdbakeError as err:
                    raise error_at(loaded, ("models", name, "merge"), err.message, type(err)) from None
                inputs = [k for k in models if k not in before]
                models[name] = merged
                for input_name in inputs:          # after the merge: the first model stays the one stages use
                    models[input_name] = models.pop(input_name)
                return models[name]
            if entry.checkpoint in loaded.found:
                entry = entry.model_copy(update={"checkpoint": str(loaded.found[entry.checkpoint])})
            if entry.loras:
                entry = entry.model_copy(update={"loras": found_loras(entry.loras, loaded)})
            try:
                models[name] = resolve_model(name, entry, loaded.folder)
            except SdbakeError as err:
                raise error_at(loaded, ("models", name, "checkpoint"), err.message, type(err)) from None
        return models[name]

    fingerprint = numerics.fingerprint()
    ctx = PlanContext(loaded, output_root, now or datetime.now())
    embedding_files: dict[str, Path] = {}
    invocations: list[Invocation] = []
    state_key: str | None = None
    for index, stage in enumerate(recipe.stages):
        ctx.index = index
        params = {k: v for k, v in canonical_dict_of(stage).items() if k not in NOT_IN_KEY}
        file_hashes, file_paths = hash_files(ctx, stage)
        inv = Invocation(index=index, stage=stage, key="", state_key="", inputs={}, files=file_paths)
        document: dict[str, Any] = {"format": KEY_FORMAT, "stage": stage.type, "version": stage.VERSION,
                                    "params": params, "input": state_key, "files": file_hashes}
        model_name = getattr(stage, "model", None)
        if model_name:
            inv.model = model_files(model_name)
            document["model"] = inv.model.identity()
            document["numerics"] = fingerprint
        if getattr(stage, "loras", None):
            inv.loras = resolve_loras(found_loras(stage.loras, loaded), loaded.folder)
            document["loras"] = [[l.sha256, l.weight] for l in inv.loras]
        inv.inputs = document
        KINDS[stage.type].plan(stage, inv, document, ctx)
        note_a1111_facts(ctx.carried, stage)
        plan_lora_tags(stage, inv, document, ctx)
        texts = inv.prompts + inv.negatives + [region.prompt for region in getattr(stage, "regions", None) or []]
        inv.embeddings = embeddings_used(loaded, texts) if texts else {}
        if inv.embeddings:
            document["embeddings"] = {stem: sha256_file(path) for stem, path in sorted(inv.embeddings.items())}
            embedding_files.update(inv.embeddings)
        inv.key = key_of(document)
        inv.state_key = state_key if inv.passes_state_through and state_key else inv.key
        state_key = inv.state_key
        if not inv.passes_state_through:
            ctx.prefix.append(inv)
        invocations.append(inv)
    return Plan(loaded, numerics, invocations, models, recipe_hash, output_root, embedding_files)
