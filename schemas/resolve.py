"""After field validation: fill stages from [defaults], name stages, and check what spans fields.

The result is the canonical recipe: every stage carries the concrete values it will run with, so
`cfg = 7` in a stage and `cfg = 7` inherited from defaults are the same recipe.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from sdbake.schemas.names import AUTOMATIC, automatic_scheduler, parse_sampler, split_refusal
from sdbake.schemas.recipe import Recipe
from sdbake.schemas.stages import (
    A1111_UPSCALER_LABELS,
    STAGE_TYPES,
    EncodeParams,
    HiresParams,
    InpaintParams,
    SampleParams,
)

Problem = tuple[tuple[Any, ...], str]          # (path into the document, message)


def default_stage_ids(types: list[str]) -> list[str]:
    """`<type>` when a type occurs once, else `<type>-1`, `<type>-2`, ... in order."""
    totals = Counter(types)
    seen: Counter = Counter()
    ids = []
    for kind in types:
        seen[kind] += 1
        ids.append(kind if totals[kind] == 1 else f"{kind}-{seen[kind]}")
    return ids


def _split_sampler_label(obj) -> None:
    """`sampler = "DPM++ 2M Karras"` means sampler dpmpp_2m with scheduler karras, unless set apart."""
    if getattr(obj, "sampler", None) is None:
        return
    sampler, scheduler = parse_sampler(obj.sampler)
    obj.sampler = sampler
    if scheduler and "scheduler" not in obj.model_fields_set:
        obj.scheduler = scheduler


def _variation_seed(obj) -> None:
    """As A1111: a strength of 0 is no variation seed, and a resize needs both sides. Unused fields are
    cleared, so such a recipe is the same recipe (and cache key) as one without them; a strength
    without a subseed takes A1111's default subseed, -1 (picked at plan time)."""
    if not obj.subseed_strength:
        obj.subseed = obj.subseed_strength = None
    elif obj.subseed is None:
        obj.subseed = -1
    if not (obj.seed_resize_from_w and obj.seed_resize_from_h):
        obj.seed_resize_from_w = obj.seed_resize_from_h = None


def _automatic_schedule(obj) -> None:
    """A1111's schedule type "Automatic" is the schedule its sampler table gives the sampler."""
    if getattr(obj, "scheduler", None) == AUTOMATIC and getattr(obj, "sampler", None) is not None:
        obj.scheduler = automatic_scheduler(obj.sampler)


def resolve(recipe: Recipe) -> list[Problem]:
    """Fill and check `recipe` in place; return the problems found (empty when valid)."""
    problems: list[Problem] = []
    defaults = recipe.defaults
    _split_sampler_label(defaults)
    explicit_ids = [s.id for s in recipe.stages]
    generated = default_stage_ids([s.type for s in recipe.stages])
    for index, stage in enumerate(recipe.stages):
        _split_sampler_label(stage)
        if isinstance(stage, HiresParams):       # "Latent (bicubic antialiased)" -> latent-bicubic-antialiased
            stage.upscaler = A1111_UPSCALER_LABELS.get(" ".join(stage.upscaler.lower().split()), stage.upscaler)
        for field in stage.INHERITS:
            if getattr(stage, field) is None:
                value = getattr(defaults, field)
                if field == "loras":
                    value = [l.model_copy() for l in value]
                elif hasattr(value, "model_copy"):
                    value = value.model_copy()
                setattr(stage, field, value)
        _automatic_schedule(stage)
        if isinstance(stage, EncodeParams):
            _variation_seed(stage)
        if stage.id is None:
            stage.id = generated[index]
    _automatic_schedule(defaults)
    _variation_seed(defaults)
    counts = Counter(s.id for s in recipe.stages)
    for index, stage in enumerate(recipe.stages):
        if counts[stage.id] > 1 and explicit_ids[index] is not None:
            problems.append((("stages", index, "id"), f"stage id `{stage.id}` is used more than once"))
    problems += _check_models(recipe)
    problems += _check_merges(recipe)
    problems += _check_order(recipe)
    return problems


def _check_models(recipe: Recipe) -> list[Problem]:
    problems = []
    if recipe.defaults.model is not None and recipe.defaults.model not in recipe.models:
        problems.append((("defaults", "model"), _unknown_model(recipe.defaults.model, recipe)))
    for index, stage in enumerate(recipe.stages):
        if "model" not in type(stage).model_fields:
            continue
        if stage.model is None:
            problems.append((("stages", index), ("no model: set `model` here or in [defaults], naming an "
                                                "entry of [models]")))
        elif stage.model not in recipe.models and stage.model != recipe.defaults.model:
            problems.append((("stages", index, "model"), _unknown_model(stage.model, recipe)))
    return problems


def _check_merges(recipe: Recipe) -> list[Problem]:
    """Merge entries name other entries (no cycles), and their weights make sense for the method."""
    problems: list[Problem] = []
    for name, entry in recipe.models.items():
        spec = entry.merge
        if spec is None:
            continue
        where = ("models", name, "merge")
        for role in ("a", "b", "c"):
            other = getattr(spec, role)
            if other is not None and other not in recipe.models:
                problems.append((where + (role,), _unknown_model(other, recipe)))
        problems += [(where + path, message) for path, message in spec.problems()]
        cycle = _merge_cycle(recipe, name)
        order = list(recipe.models)
        if cycle and name == min(cycle, key=order.index):      # once per cycle, at its first entry
            problems.append((where, f"merge cycle: {' -> '.join(cycle)}"))
    return problems


def _merge_cycle(recipe: Recipe, start: str) -> list[str] | None:
    """The chain of entries from `start` back to itself through merge inputs, if there is one."""
    stack = [(start, [start])]
    seen = set()
    while stack:
        name, path = stack.pop()
        entry = recipe.models.get(name)
        if entry is None or entry.merge is None:
            continue
        for other in (entry.merge.a, entry.merge.b, entry.merge.c):
            if other == start:
                return path + [start]
            if other is not None and other not in seen:
                seen.add(other)
                stack.append((other, path + [other]))
    return None


def _unknown_model(name: str, recipe: Recipe) -> str:
    known = ", ".join(sorted(recipe.models)) or "none: add a [models.NAME] table"
    return f"model `{name}` is not defined in [models] (defined: {known})"


def _check_order(recipe: Recipe) -> list[Problem]:
    """Simulate where each stage leaves the latent, so a split that cannot line up fails up front."""
    problems: list[Problem] = []
    latent = None        # None | "empty" | "image" | "clean" (finished) | ("noisy", step, steps, scheduler)
    img2img_denoise = None
    last_steps = recipe.defaults.steps
    for index, stage in enumerate(recipe.stages):
        where = ("stages", index)
        if isinstance(stage, EncodeParams):
            latent = "image" if stage.image else "empty"
            img2img_denoise = stage.denoise if stage.image else None
            continue
        if latent is None and stage.type != "save":
            problems.append((where, f"`{stage.type}` needs an `encode` stage before it"))
            continue
        if latent == "empty" and stage.type != "sample":
            problems.append((where, (f"`{stage.type}` needs an image, but the latent is still empty: add a "
                                    f"`sample` stage before it (or an `image` to the encode stage)")))
            continue
        if isinstance(stage, SampleParams):
            latent, problem = _sample_position(stage, latent, img2img_denoise, where)
            last_steps = stage.steps
            img2img_denoise = None
            if problem:
                problems.append(problem)
        elif isinstance(stage, (HiresParams, InpaintParams)):
            if isinstance(stage, HiresParams) and not stage.steps:
                stage.steps = last_steps          # A1111: hires steps 0 = the base pass's steps
            if isinstance(latent, tuple):
                problems.append((where, (f"`{stage.type}` needs a finished image, but the latent is still "
                                        f"noisy at step {latent[1]} of {latent[2]}: add a sample stage "
                                        f"with start = {latent[1]}")))
            latent = "clean"
        elif latent is None:
            problems.append((where, "nothing to save: add an `encode` and a `sample` stage before it"))
    return problems


def _sample_position(stage: SampleParams, latent, img2img_denoise, where):
    steps = stage.steps
    if isinstance(latent, tuple):
        _, at, prev_steps, prev_scheduler = latent
        if stage.start is None:
            stage.start = at
        if stage.start != at:
            return latent, (where + ("start",), (f"the previous stage ended at step {at}, so this stage must "
                                                f"start at {at} (got {stage.start})"))
        if steps != prev_steps or stage.scheduler != prev_scheduler:
            return latent, (where, (f"continues a {prev_steps}-step {prev_scheduler} schedule, but is set to "
                                   f"{steps} steps {stage.scheduler}: a split must keep steps and scheduler"))
    elif stage.start is None:
        if latent == "image":
            # A1111 img2img: t_enc = int(min(denoise, 0.999) * steps) steps, walked from sigmas[steps - t_enc - 1].
            t_enc = int(min(img2img_denoise, 0.999) * steps)
            stage.start = steps - t_enc - 1
        else:
            stage.start = 0
    elif stage.start > 0 and latent in ("empty", "clean"):
        before = "is empty" if latent == "empty" else "is a finished image"
        return latent, (where + ("start",), (f"starts at step {stage.start}, but the latent before it {before}: "
                                            f"only a stage that ended at step {stage.start} or an init image "
                                            f"can be continued"))
    if stage.end is None:
        stage.end = steps
    if stage.end > steps:
        return latent, (where + ("end",), f"must be <= steps ({steps}) (got {stage.end})")
    if stage.start >= stage.end:
        return latent, (where + ("start",), f"must be < end ({stage.end}) (got {stage.start})")
    after = ("noisy", stage.end, steps, stage.scheduler) if stage.end < steps else "clean"
    # a slice from an init image (img2img) is a whole run; continuing one or stopping early is a split
    refusal = split_refusal(stage.sampler) if isinstance(latent, tuple) or stage.end < steps else None
    return after, ((where + ("sampler",), refusal) if refusal else None)


__all__ = ["STAGE_TYPES", "default_stage_ids", "resolve"]
