"""What the per-kind plan modules share: the planning context, prompt resolution and output paths."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sdbake.runner.models.hashing import sha256_file
from sdbake.schemas.errors import InputFileError, SdbakeError
from sdbake.schemas.loader import LoadedRecipe
from sdbake.schemas.positions import nearest


def key_of(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def canonical_dict_of(stage) -> dict:
    return json.loads(json.dumps(stage.model_dump(mode="json", exclude_none=True), sort_keys=True))


# Step previews change no pixel: an image does not embed them, so turning them on keeps every save a hit.
PREVIEW_FIELDS = ("preview_every", "preview_dir")


def _embeddable(stage) -> dict:
    return {k: v for k, v in canonical_dict_of(stage).items() if k not in PREVIEW_FIELDS}


def error_at(loaded: LoadedRecipe, path: tuple, message: str, cls=InputFileError) -> SdbakeError:
    line, col = nearest(loaded.positions, path) or (None, None)
    return cls(message, file=str(loaded.path), line=line, column=col)


@dataclass
class PlanContext:
    """The recipe-wide facts a stage's plan needs, and what the stages before it left behind."""
    loaded: LoadedRecipe
    output_root: Path
    now: datetime
    index: int = 0                      # the stage being planned
    # what the save stage's path template and the infotext need, tracked through the stages
    carried: dict[str, Any] = field(default_factory=lambda: {"prompts": [], "negatives": [], "seeds": [],
                                                             "width": 0, "height": 0})
    prefix: list = field(default_factory=list)       # invocations whose state the current stage reads

    def prefix_recipe(self, stage) -> dict:
        """The recipe that makes what `stage` sees: the stages its input state comes from, then itself,
        with the models they use. Defaults are left out (every stage carries its values), and so are
        other save stages and everything after: editing those does not change this prefix."""
        from sdbake.schemas.canonical import canonical_dict
        whole = canonical_dict(self.loaded.recipe)
        stages = [_embeddable(inv.stage) for inv in self.prefix] + [_embeddable(stage)]
        used = sorted({s["model"] for s in stages if s.get("model")} & set(whole["models"]))
        return {"version": whole["version"], "name": whole["name"], "performance": whole["performance"],
                "models": {name: whole["models"][name] for name in used}, "stages": stages}

    def error(self, param: tuple, message: str, cls=InputFileError) -> SdbakeError:
        return error_at(self.loaded, ("stages", self.index) + param, message, cls)


def has_wildcards(template: str) -> bool:
    return "__" in template or "{" in template


def wildcard_dirs(loaded: LoadedRecipe) -> list[Path]:
    from sdbake.runner.models.search import load_search_config
    return [loaded.folder / "wildcards", *load_search_config().folders["wildcards"]]


def resolve_prompts(template: str, seeds: list[int], loaded: LoadedRecipe) -> list[str]:
    """Wildcards picked per image seed (the same seed picks the same words on every machine)."""
    if not has_wildcards(template):
        return [template] * len(seeds)
    from sdbake.stages.prompts.wildcards import expand
    dirs = wildcard_dirs(loaded)
    return [expand(template, seed, dirs) for seed in seeds]


def wildcard_files(templates: list[str], loaded: LoadedRecipe) -> dict[str, Path]:
    """The wildcard files the templates read, by their name relative to the recipe (else absolute)."""
    from sdbake.stages.prompts.wildcards import wildcard_files_used
    found = {}
    for template in templates:
        if has_wildcards(template):
            for path in wildcard_files_used(template, wildcard_dirs(loaded)):
                path = Path(path)
                name = str(path.relative_to(loaded.folder)) if path.is_relative_to(loaded.folder) else str(path)
                found[name] = path
    return found


def template_variables(carried: dict, recipe, stage_id: str, recipe_hash: str, now: datetime,
                       batch_index: int) -> dict:
    prompt = carried["prompts"][batch_index] if carried["prompts"] else ""
    model = carried.get("model")
    return {
        "name": recipe.name, "seed": carried["seeds"][batch_index] if carried["seeds"] else 0,
        "steps": carried.get("steps", 0), "cfg": carried.get("cfg", 0.0),
        "sampler": carried.get("sampler", ""), "scheduler": carried.get("scheduler", ""),
        "width": carried["width"], "height": carried["height"],
        "model_name": model.model_name if model else "", "model_hash": model.model_hash if model else "",
        "prompt": prompt, "negative": carried["negatives"][batch_index] if carried["negatives"] else "",
        "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest()[:8], "batch_index": batch_index,
        "stage": stage_id, "date": now.strftime("%Y-%m-%d"), "datetime": now.strftime("%Y%m%d-%H%M%S"),
        "recipe_hash": recipe_hash[:12],
    }


def render_outputs(ctx: PlanContext, template: str, field_name: str, stage, recipe_hash: str) -> list[str]:
    """The stage's output paths, one per image, relative to the output root."""
    from sdbake.stages.output.names import safe_relative_path
    from sdbake.stages.output.templates import render_path
    rendered = []
    for batch_index in range(max(1, len(ctx.carried["seeds"]))):
        variables = template_variables(ctx.carried, ctx.loaded.recipe, stage.id, recipe_hash, ctx.now, batch_index)
        try:
            relative = safe_relative_path(render_path(template, variables), ctx.output_root)
        except SdbakeError as err:
            raise ctx.error((field_name,), f"stages[{ctx.index}].{field_name}: {err.message}", type(err)) from None
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


def hash_files(ctx: PlanContext, stage) -> tuple[dict[str, str], dict[str, Path]]:
    """Content hashes and resolved paths of the input files a stage reads (its schema lists them)."""
    hashes, paths = {}, {}
    for param, rel, what in stage.files_read():
        path = ctx.loaded.found.get(rel) or ((ctx.loaded.folder / rel) if not Path(rel).is_absolute() else Path(rel))
        name = ".".join(str(p) for p in param)
        if not path.is_file():
            raise ctx.error(param, f"stages[{ctx.index}].{name}: {what} file not found: {path}")
        hashes[name] = sha256_file(path)
        paths[name] = path
    return hashes, paths
