"""The run machinery as functions, for `check`, sweeps, benchmarks and tests (the CLI uses the same)."""
from __future__ import annotations

from pathlib import Path

from sdbake.runner.cache import CacheStore, default_cache_root
from sdbake.runner.execute import RunOptions, RunResult, execute
from sdbake.runner.numerics import Numerics
from sdbake.runner.plan import Plan, build_plan
from sdbake.runner.preflight import preflight
from sdbake.runner.sources import load_any
from sdbake.schemas.loader import LoadedRecipe


def make_plan(loaded: LoadedRecipe, *, output_root: Path | str | None = None, device: str | None = None,
              dtype: str | None = None, threads: int | None = None) -> Plan:
    recipe = loaded.recipe
    root = Path(output_root) if output_root else Path(recipe.output_dir) if recipe.output_dir else Path("outputs")
    numerics = Numerics.choose(device, dtype, threads, compile=recipe.performance.compile,
                               channels_last=recipe.performance.channels_last)
    preflight(loaded, root)             # what the run would trip over, before hashing or loading models
    return build_plan(loaded, numerics, root)


def render(source: str | Path | LoadedRecipe, *, overrides: list[str] = (), output_root: Path | str | None = None,
           cache_dir: Path | str | None = None, no_cache: bool = False, device: str | None = None,
           dtype: str | None = None, threads: int | None = None, until: str | None = None,
           quiet: bool = True) -> RunResult:
    """Render a recipe (file, image or loaded recipe); returns per-stage reports and written files."""
    loaded = source if isinstance(source, LoadedRecipe) else load_any(str(source), list(overrides))
    plan = make_plan(loaded, output_root=output_root, device=device, dtype=dtype, threads=threads)
    store = None if no_cache else CacheStore(Path(cache_dir) if cache_dir else default_cache_root())
    return execute(plan, store, RunOptions(no_cache=no_cache, until=until, quiet=quiet))
