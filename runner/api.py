"""The run machinery as functions, for `check`, sweeps, benchmarks and tests (the CLI uses the same).

Keyword options are those of `PlanOptions` (output_root, device, dtype, threads, compile,
no_half_vae, now) and, for `render`, of `RunOptions` (no_cache, refresh, until, allow_pickle, quiet).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from sdbake.runner.cache import CacheStore, default_cache_root
from sdbake.runner.console import RunOptions
from sdbake.runner.execute import RunResult, execute
from sdbake.runner.plan import Plan
from sdbake.runner.planning import PlanOptions, plan_recipe, split_options
from sdbake.runner.sources import load_any
from sdbake.schemas.loader import LoadedRecipe


def make_plan(loaded: LoadedRecipe, **options) -> Plan:
    """The plan of a loaded recipe (keyword options: see the module's docstring)."""
    (plan_options,) = split_options(options, PlanOptions)
    return plan_recipe(loaded, plan_options)


def cache_store(cache_dir: Path | str | None = None) -> CacheStore:
    return CacheStore(Path(cache_dir) if cache_dir else default_cache_root())


def render(source: str | Path | LoadedRecipe, *, overrides: list[str] = (), cache_dir: Path | str | None = None,
           **options) -> RunResult:
    """Render a recipe (file, image or loaded recipe); returns per-stage reports and written files."""
    plan_options, run_options = split_options({"quiet": True, **options}, PlanOptions, RunOptions)
    plan_options = dataclasses.replace(plan_options, cache_dir=plan_options.cache_dir or cache_dir)
    loaded = source if isinstance(source, LoadedRecipe) else load_any(str(source), list(overrides))
    plan = plan_recipe(loaded, plan_options)
    return execute(plan, None if run_options.no_cache else cache_store(cache_dir), run_options)
