"""The one way a recipe becomes a plan: the CLI (`run`, `plan`, `lock`, `verify`), the Python API and
sweeps all go through `plan_recipe`, with the same options. No torch here."""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

from sdbake.runner.numerics import Numerics
from sdbake.runner.plan import Plan, build_plan
from sdbake.runner.preflight import preflight
from sdbake.schemas.loader import LoadedRecipe


@dataclass(frozen=True)
class PlanOptions:
    """What decides a plan besides the recipe: where images go, and the numerics."""
    output_root: Path | str | None = None      # default: the recipe's output_dir, else ./outputs
    device: str | None = None                  # default: cuda when available, else cpu
    dtype: str | None = None
    threads: int | None = None
    compile: bool = False                      # or the recipe's [performance] compile
    no_half_vae: bool = False                  # decode in float32 on fp16/bf16 runs
    now: datetime | None = None                # for date templates (fixed by `diff`)
    random_seed: int | None = None             # what `seed = -1` becomes (default: drawn now)
    cache_dir: Path | str | None = None        # where merged checkpoints are kept (default: the stage cache)
    random_subseed: int | None = None          # what `subseed = -1` becomes (default: drawn now)

    def output_root_for(self, recipe) -> Path:
        if self.output_root:
            return Path(self.output_root)
        return Path(recipe.output_dir) if recipe.output_dir else Path("outputs")

    def numerics_for(self, recipe) -> Numerics:
        return Numerics.choose(self.device, self.dtype, self.threads,
                               compile=self.compile or recipe.performance.compile, vae_fp32=self.no_half_vae,
                               channels_last=recipe.performance.channels_last)


RANDOM_SEED = -1


def pick_random_seed(loaded: LoadedRecipe, seed: int | None = None, field: str = "seed") -> int | None:
    """`seed = -1` (A1111's "random"): draw one seed at plan time, print it, and write it into the
    recipe, so the metadata, the lock and the embedded recipe all carry it and the image re-renders.
    The same for `subseed = -1` with `field = "subseed"`."""
    recipe = loaded.recipe
    stages = [stage for stage in recipe.stages if getattr(stage, field, None) == RANDOM_SEED]
    if not stages and getattr(recipe.defaults, field) != RANDOM_SEED:
        return None
    seed = random.randrange(2**32 - 1) if seed is None else seed
    for stage in stages:
        setattr(stage, field, seed)
    if getattr(recipe.defaults, field) == RANDOM_SEED:
        setattr(recipe.defaults, field, seed)
    print(f"{field} -1: picked {field} {seed}", file=sys.stderr)
    return seed


def plan_recipe(loaded: LoadedRecipe, options: PlanOptions | None = None) -> Plan:
    options = options or PlanOptions()
    recipe = loaded.recipe
    if (recipe.defaults.n_iter or 1) > 1:
        from sdbake.schemas.errors import RecipeError
        raise RecipeError(f"n_iter = {recipe.defaults.n_iter} renders {recipe.defaults.n_iter} batches: `sdbake run` "
                          "and `plan` (or runner.sweep.run.run_sweep) take them one after another; this command "
                          "takes one recipe, so set n_iter = 1 (and seed to the batch's first seed)",
                          file=str(loaded.path))
    seed = pick_random_seed(loaded, options.random_seed)
    subseed = pick_random_seed(loaded, options.random_subseed, "subseed")
    output_root = options.output_root_for(recipe)
    preflight(loaded, output_root, options.now)   # what the run would trip over, before hashing or loading models
    plan = build_plan(loaded, options.numerics_for(recipe), output_root, now=options.now,
                      cache_dir=options.cache_dir)
    plan.random_seed, plan.random_subseed = seed, subseed
    return plan


def split_options(options: dict, *kinds: type) -> list:
    """Keyword arguments -> one options object per dataclass in `kinds` (each takes its own fields);
    an argument that none of them has is a TypeError, as for any misspelled keyword."""
    names = [{f.name for f in fields(kind)} for kind in kinds]
    unknown = set(options) - set().union(*names)
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(sorted(unknown))}")
    return [kind(**{k: v for k, v in options.items() if k in own}) for kind, own in zip(kinds, names)]
