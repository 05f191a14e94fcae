"""What the per-kind plan modules share: the planning context, prompt resolution and output paths."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sdbake.runner.models.hashing import sha256_file
from sdbake.schemas.errors import InputFileError, OutputError, SdbakeError
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


def note_a1111_facts(carried: dict, stage) -> None:
    """What A1111's file name keys read beyond the template variables: the base pass's sampling (as the
    infotext's Steps, CFG scale and Sampler), the prompts as typed, clip skip and the denoising strength."""
    if stage.type == "encode":
        carried.update(prompt_typed=stage.prompt, negative_typed=stage.negative, clip_skip=stage.clip_skip,
                       denoising=stage.denoise if stage.image else None)
    elif stage.type == "sample":
        carried["base"] = {"steps": stage.steps, "cfg": stage.cfg, "sampler": stage.sampler,
                           "scheduler": stage.scheduler}
    elif stage.type == "hires":
        carried["denoising"] = stage.denoise
    elif stage.type == "inpaint":      # as its infotext: one loop's strength, none for a loopback
        first = stage.denoise[0] if isinstance(stage.denoise, list) else stage.denoise
        carried["denoising"] = first if stage.loops == 1 else None


def batch_job(loaded: LoadedRecipe, stage) -> tuple[int, int, list[int]] | None:
    """(batch, batches, the job's seeds) when the encode stage's images are one batch of an `n_iter` job,
    else None. Only file names read it: never a cache key (each batch's bytes are its own)."""
    job = loaded.job
    if job is None or stage.id not in job.seeds:
        return None
    return job.iteration, job.n_iter, job.seeds[stage.id]


def image_facts(carried: dict, now: datetime, batch_index: int):
    """An image's facts for an A1111 pattern (stages/output/a1111_names.py), from what the plan carried."""
    from sdbake.schemas.names import a1111_sampler_label
    from sdbake.stages.output.a1111_names import ImageFacts
    from sdbake.stages.prompts.extra_networks import strip_tags
    seeds = carried["seeds"] or [0]
    base = carried.get("base") or {key: carried.get(key) for key in ("steps", "cfg", "sampler", "scheduler")}
    sampler, schedule_type = a1111_sampler_label(base["sampler"], base["scheduler"]) if base["sampler"] else ("", "")
    model = carried.get("model")
    vae = getattr(model, "vae", None)
    iteration, n_iter, all_seeds = carried.get("job") or (0, 1, seeds)
    return ImageFacts(
        seed=seeds[batch_index], seeds=seeds, batch_index=batch_index, iteration=iteration, n_iter=n_iter,
        all_seeds=all_seeds,
        prompt=strip_tags(carried["prompts"][batch_index]) if carried["prompts"] else "",
        prompt_typed=carried.get("prompt_typed", ""), negative_typed=carried.get("negative_typed", ""),
        steps=base["steps"] or 0, cfg=base["cfg"] or 0.0, width=carried["width"], height=carried["height"],
        sampler=sampler, schedule_type=schedule_type, model_hash=model.model_hash if model else "",
        model_name=model.model_name if model else "", clip_skip=carried.get("clip_skip") or 1,
        denoising=carried.get("denoising"), vae_file=Path(vae).name if vae else None, now=now)


def pattern_outputs(carried: dict, stage, now: datetime, output_root: Path, planned: dict | None = None) -> list[str]:
    """A pattern save's paths: A1111's folder pattern, then `NNNNN-` and the file pattern. The number is the
    one the folder's state gives now (and after the names planned before); the writer takes the next free
    one when it writes (stages/output/writer.py)."""
    from sdbake.stages.output.a1111_names import (
        file_decoration,
        next_sequence_number,
        numbered,
        render_pattern,
    )
    from sdbake.stages.output.names import safe_file_name, safe_relative_folder
    planned = {} if planned is None else planned
    extension = {"jpeg": "jpg"}.get(stage.format or "png", stage.format or "png")
    rendered = []
    for batch_index in range(max(1, len(carried["seeds"]))):
        facts = image_facts(carried, now, batch_index)
        folder = "."
        if stage.pattern_dir:      # as A1111: leading spaces and trailing separators go
            folder = safe_relative_folder(render_pattern(stage.pattern_dir, facts, folder=True).lstrip(" ")
                                          .rstrip("\\ /"), output_root).as_posix()
        decoration = file_decoration(render_pattern(stage.pattern, facts), stage.sequence_number)
        if stage.sequence_number:
            where = output_root / folder
            names = [p.name for p in where.iterdir()] if where.is_dir() else []
            name = numbered(next_sequence_number(names + planned.get(folder, [])), decoration)
        elif decoration:
            name = decoration
        else:          # A1111 numbers such a name; `number = false` asks for none
            raise OutputError(f"the pattern {stage.pattern!r} gives an empty name for image {batch_index} "
                              "(with `number = false`)")
        name = safe_file_name(f"{name}.{extension}")
        planned.setdefault(folder, []).append(name)
        rendered.append(name if folder == "." else f"{folder}/{name}")
    return rendered


def render_outputs(ctx: PlanContext, template: str, field_name: str, stage, recipe_hash: str) -> list[str]:
    """The stage's output paths, one per image, relative to the output root."""
    from sdbake.stages.output.names import safe_relative_path
    from sdbake.stages.output.templates import render_path
    if getattr(stage, "pattern", None):
        try:
            return pattern_outputs(ctx.carried, stage, ctx.now, ctx.output_root, ctx.carried.setdefault("planned", {}))
        except SdbakeError as err:
            raise ctx.error(("pattern",), f"stages[{ctx.index}].pattern: {err.message}", type(err)) from None
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
