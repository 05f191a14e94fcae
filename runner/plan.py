"""Recipe -> stage invocations with cache keys, computed without torch (docs/design.md section 5).

A stage's key is the sha256 of the canonical JSON of everything that can change its output: type and
code version, resolved params, the input state's key, the content hashes of the model files and of
every file it reads, and the numerics fingerprint. Params that cannot change the output (ids,
descriptions, preview paths) stay out, and a save stage passes its input state through unchanged,
so editing a save path never invalidates sampling.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sdbake.runner.modelfiles import LoraFile, ModelFiles, resolve_loras, resolve_model
from sdbake.runner.models.hashing import sha256_file
from sdbake.runner.numerics import Numerics
from sdbake.schemas.canonical import canonical_json
from sdbake.schemas.errors import InputFileError, SdbakeError
from sdbake.schemas.loader import LoadedRecipe
from sdbake.schemas.names import SECOND_ORDER_SAMPLERS
from sdbake.schemas.positions import nearest
from sdbake.schemas.stages import (
    LATENT_UPSCALERS,
    PIXEL_UPSCALERS,
    EncodeParams,
    HiresParams,
    InpaintParams,
    InterveneParams,
    SampleParams,
    SaveParams,
)

KEY_FORMAT = 1
NOT_IN_KEY = {"id", "description", "preview", "preview_every", "preview_dir"}


def key_of(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


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
    prompts: list[str] = field(default_factory=list)           # resolved prompts, one per image
    negatives: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)           # save: rendered relative paths
    schedule_steps: list[list] = field(default_factory=list)   # encode: schedules to pre-encode
    memo_models: list[str] = field(default_factory=list)       # encode: other models the next stages use

    @property
    def id(self) -> str:
        return self.stage.id

    @property
    def passes_state_through(self) -> bool:
        return isinstance(self.stage, SaveParams)


@dataclass
class Plan:
    loaded: LoadedRecipe
    numerics: Numerics
    invocations: list[Invocation]
    models: dict[str, ModelFiles]
    recipe_hash: str
    output_root: Path
    embedding_files: dict[str, Path] = field(default_factory=dict)   # textual inversions the prompts use

    @property
    def recipe(self):
        return self.loaded.recipe


def _error_at(loaded: LoadedRecipe, path: tuple, message: str, cls=InputFileError) -> SdbakeError:
    line, col = nearest(loaded.positions, path) or (None, None)
    return cls(message, file=str(loaded.path), line=line, column=col)


def _files_read(stage) -> list[tuple[tuple, str, str]]:
    """(param path, relative file name, what it is) for each file a stage reads."""
    found = []
    if isinstance(stage, EncodeParams) and stage.image:
        found.append((("image",), stage.image, "init image"))
    if isinstance(stage, InterveneParams):
        for name in ("image", "mask"):
            if getattr(stage, name):
                found.append(((name,), getattr(stage, name), name))
        for n, op in enumerate(stage.ops):
            for name in ("image", "mask"):
                if getattr(op, name, None):
                    found.append((("ops", n, name), getattr(op, name), f"{op.op} {name}"))
    if isinstance(stage, InpaintParams) and stage.mask:
        found.append((("mask",), stage.mask, "mask"))
    return found


def _hash_inputs(loaded: LoadedRecipe, index: int, stage) -> tuple[dict[str, str], dict[str, Path]]:
    hashes, paths = {}, {}
    for param, rel, what in _files_read(stage):
        path = (loaded.folder / rel) if not Path(rel).is_absolute() else Path(rel)
        name = ".".join(str(p) for p in param)
        if not path.is_file():
            raise _error_at(loaded, ("stages", index) + param, f"stages[{index}].{name}: {what} file not "
                                                                f"found: {path}")
        hashes[name] = sha256_file(path)
        paths[name] = path
    return hashes, paths


def _resolve_prompts(template: str, seeds: list[int], loaded: LoadedRecipe) -> list[str]:
    """Wildcards picked per image seed (the same seed picks the same words on every machine)."""
    if not _has_wildcards(template):
        return [template] * len(seeds)
    from sdbake.stages.prompts.wildcards import expand
    dirs = wildcard_dirs(loaded)
    return [expand(template, seed, dirs) for seed in seeds]


def _has_wildcards(template: str) -> bool:
    return "__" in template or "{" in template


def _wildcard_hashes(templates: list[str], loaded: LoadedRecipe) -> dict[str, str]:
    """Content hashes of the wildcard files the templates read: editing one re-runs what used it."""
    from sdbake.stages.prompts.wildcards import wildcard_files_used
    hashes = {}
    for template in templates:
        if _has_wildcards(template):
            for path in wildcard_files_used(template, wildcard_dirs(loaded)):
                hashes[str(Path(path).relative_to(loaded.folder)) if Path(path).is_relative_to(loaded.folder)
                       else str(path)] = sha256_file(Path(path))
    return hashes


def wildcard_dirs(loaded: LoadedRecipe) -> list[Path]:
    from sdbake.runner.models.search import load_search_config
    return [loaded.folder / "wildcards", *load_search_config().folders["wildcards"]]


EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


def embeddings_used(loaded: LoadedRecipe, texts: list[str]) -> dict[str, Path]:
    """Textual-inversion files (recipe folder's embeddings/, then the configured folders) that a prompt
    names, as A1111 triggers them: by file stem, or `embedding:stem`."""
    import re

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


def build_plan(loaded: LoadedRecipe, numerics: Numerics, output_root: Path, *,
               now: datetime | None = None) -> Plan:
    recipe = loaded.recipe
    now = now or datetime.now()
    recipe_hash = hashlib.sha256(canonical_json(recipe, indent=None).encode()).hexdigest()
    models: dict[str, ModelFiles] = {}

    def model_files(name: str, index: int) -> ModelFiles:
        if name not in models:
            try:
                models[name] = resolve_model(name, recipe.models[name], loaded.folder)
            except SdbakeError as err:
                raise _error_at(loaded, ("models", name, "checkpoint"), err.message, type(err)) from None
        return models[name]

    fingerprint = numerics.fingerprint()
    embedding_files: dict[str, Path] = {}
    invocations: list[Invocation] = []
    state_key: str | None = None
    # what the save stage's path template and the infotext need, tracked through the stages
    current: dict[str, Any] = {"prompts": [], "negatives": [], "seeds": [], "width": 0, "height": 0}
    for index, stage in enumerate(recipe.stages):
        params = {k: v for k, v in canonical_dict_of(stage).items() if k not in NOT_IN_KEY}
        file_hashes, file_paths = _hash_inputs(loaded, index, stage)
        inv = Invocation(index=index, stage=stage, key="", state_key="", inputs={}, files=file_paths)
        document: dict[str, Any] = {"format": KEY_FORMAT, "stage": stage.type, "version": stage.VERSION,
                                    "params": params, "input": state_key, "files": file_hashes}
        model_name = getattr(stage, "model", None)
        if model_name:
            inv.model = model_files(model_name, index)
            document["model"] = inv.model.identity()
            document["numerics"] = fingerprint
        if getattr(stage, "loras", None):
            inv.loras = resolve_loras(stage.loras, loaded.folder)
            document["loras"] = [[l.sha256, l.weight] for l in inv.loras]
        if isinstance(stage, EncodeParams):
            seeds = [stage.seed + i for i in range(stage.batch_size)]
            inv.prompts = _resolve_prompts(stage.prompt, seeds, loaded)
            inv.negatives = _resolve_prompts(stage.negative, seeds, loaded)
            inv.schedule_steps = _schedules_after(recipe.stages, index)
            document.update(prompts=inv.prompts, negatives=inv.negatives, schedule_steps=inv.schedule_steps)
            inv.memo_models = _models_after(recipe.stages, index)
            if inv.memo_models:
                document["memo_models"] = [model_files(name, index).identity() for name in inv.memo_models]
            wildcard_files = _wildcard_hashes([stage.prompt, stage.negative], loaded)
            if wildcard_files:
                document["wildcards"] = wildcard_files
            current.update(prompts=inv.prompts, negatives=inv.negatives, seeds=seeds, width=stage.width,
                           height=stage.height, model=inv.model)
        elif isinstance(stage, (SampleParams, HiresParams, InpaintParams)):
            seeds = current["seeds"]
            if stage.prompt is not None:
                inv.prompts = _resolve_prompts(stage.prompt, seeds, loaded)
                document["prompts"] = inv.prompts
            if stage.negative is not None:
                inv.negatives = _resolve_prompts(stage.negative, seeds, loaded)
                document["negatives"] = inv.negatives
            current.update(steps=stage.steps, cfg=stage.cfg, sampler=stage.sampler, scheduler=stage.scheduler,
                           model=inv.model)
            if isinstance(stage, HiresParams):
                current["width"], current["height"] = stage.target_size(current["width"], current["height"])
                if stage.upscaler not in LATENT_UPSCALERS + PIXEL_UPSCALERS:
                    from sdbake.runner.models.search import resolve_model_file
                    try:
                        path = resolve_model_file(stage.upscaler, "upscalers", loaded.folder)
                    except SdbakeError as err:
                        raise _error_at(loaded, ("stages", index, "upscaler"), err.message, type(err)) from None
                    inv.files["upscaler"] = path
                    document["files"]["upscaler"] = sha256_file(path)
        elif isinstance(stage, InterveneParams) and stage.preview:
            inv.outputs = _render_outputs(loaded, stage.preview, "preview", current, recipe_hash, now,
                                          output_root, index, stage)
        elif isinstance(stage, SaveParams):
            inv.outputs = _render_outputs(loaded, stage.path, "path", current, recipe_hash, now, output_root,
                                          index, stage)
            document["outputs"] = inv.outputs
            document["recipe"] = recipe_hash      # embedded in the image's metadata
        texts = [t for t in inv.prompts + inv.negatives]
        used = embeddings_used(loaded, texts) if texts else {}
        if used:
            document["embeddings"] = {stem: sha256_file(path) for stem, path in sorted(used.items())}
            embedding_files.update(used)
        inv.inputs = document
        inv.key = key_of(document)
        inv.state_key = state_key if inv.passes_state_through and state_key else inv.key
        state_key = inv.state_key
        invocations.append(inv)
    return Plan(loaded, numerics, invocations, models, recipe_hash, output_root, embedding_files)


def canonical_dict_of(stage) -> dict:
    return json.loads(json.dumps(stage.model_dump(mode="json", exclude_none=True), sort_keys=True))


def _models_after(stages: list, encode_index: int) -> list[str]:
    """The models other than the encode stage's own that the stages after it (up to the next encode)
    sample with: the encode stage encodes the prompts for each of them too."""
    own = stages[encode_index].model
    found: list[str] = []
    for stage in stages[encode_index + 1:]:
        if isinstance(stage, EncodeParams):
            break
        name = getattr(stage, "model", None)
        if name and name != own and name not in found:
            found.append(name)
    return found


def _schedules_after(stages: list, encode_index: int) -> list[list]:
    """The prompt schedules the stages after an encode will ask for: [steps, hires_steps] pairs."""
    wanted = set()
    base_steps = None
    for stage in stages[encode_index + 1:]:
        if isinstance(stage, EncodeParams):
            break
        multiplier = 2 if getattr(stage, "sampler", None) in SECOND_ORDER_SAMPLERS else 1
        if isinstance(stage, SampleParams):
            base_steps = stage.steps
            if stage.prompt is None:
                wanted.add((stage.steps * multiplier, None))
        elif isinstance(stage, HiresParams) and stage.prompt is None:
            wanted.add(((base_steps or stage.steps), stage.steps * multiplier))
        elif isinstance(stage, InpaintParams) and stage.prompt is None:
            wanted.add((stage.steps * multiplier, None))
    return [list(pair) for pair in sorted(wanted, key=lambda p: (p[0], p[1] or 0))]


def template_variables(current: dict, recipe, stage_id: str, recipe_hash: str, now: datetime,
                       batch_index: int) -> dict:
    prompt = current["prompts"][batch_index] if current["prompts"] else ""
    model: ModelFiles | None = current.get("model")
    return {
        "name": recipe.name, "seed": current["seeds"][batch_index] if current["seeds"] else 0,
        "steps": current.get("steps", 0), "cfg": current.get("cfg", 0.0),
        "sampler": current.get("sampler", ""), "scheduler": current.get("scheduler", ""),
        "width": current["width"], "height": current["height"],
        "model_name": model.model_name if model else "", "model_hash": model.model_hash if model else "",
        "prompt": prompt, "negative": current["negatives"][batch_index] if current["negatives"] else "",
        "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest()[:8], "batch_index": batch_index,
        "stage": stage_id, "date": now.strftime("%Y-%m-%d"), "datetime": now.strftime("%Y%m%d-%H%M%S"),
        "recipe_hash": recipe_hash[:12],
    }


def _render_outputs(loaded: LoadedRecipe, template: str, field_name: str, current: dict, recipe_hash: str,
                    now: datetime, output_root: Path, index: int, stage) -> list[str]:
    from sdbake.stages.output.names import safe_relative_path
    from sdbake.stages.output.templates import render_path
    rendered = []
    for batch_index in range(max(1, len(current["seeds"]))):
        variables = template_variables(current, loaded.recipe, stage.id, recipe_hash, now, batch_index)
        try:
            relative = safe_relative_path(render_path(template, variables), output_root)
        except SdbakeError as err:
            raise _error_at(loaded, ("stages", index, field_name), f"stages[{index}].{field_name}: {err.message}",
                            type(err)) from None
        text = relative.as_posix()
        if getattr(stage, "format", None) and "." not in relative.name:
            text += "." + {"jpeg": "jpg"}.get(stage.format, stage.format)
        elif "." not in relative.name:
            text += ".png"
        if text in rendered:   # one template for a batch: keep every image (as A1111's counter does)
            stem, _dot, ext = text.rpartition(".")
            text = f"{stem}-{batch_index}.{ext}"
        rendered.append(text)
    return rendered
