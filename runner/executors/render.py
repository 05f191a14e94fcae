"""Render several plans (a sweep's points, a suite's recipes) through one graph and one executor.

The executor computes every missing stage into the cache; then each plan runs the ordinary way and
finds every stage cached, so output files, records and reports are exactly those of a plain run.
"""
from __future__ import annotations

from pathlib import Path

from sdbake.runner.cache import CacheStore
from sdbake.runner.execute import RunOptions, RunResult, execute
from sdbake.runner.executors import ExecutorOptions, GraphRun, run_graph
from sdbake.runner.graph import StageGraph
from sdbake.runner.plan import Plan


def render_plans(plans: list[Plan], store: CacheStore, options: ExecutorOptions) -> tuple[GraphRun, list[RunResult]]:
    graph_run = run_graph(StageGraph.build(plans), store, options)
    results = [execute(plan, store, RunOptions(quiet=True, allow_pickle=options.allow_pickle)) for plan in plans]
    return graph_run, results


def precompute_suite(recipes: list[Path], options: ExecutorOptions, *, cache_dir: Path | None, device: str | None,
                     threads: int | None) -> GraphRun | None:
    """A `check` suite: every recipe's plan in one graph, computed by the executor before the recipes
    are rendered and judged one by one (they then find their stages cached). A recipe that does not
    load or plan, or a stage that fails, is left to the per-recipe pass, which reports it as its case."""
    from sdbake.runner.api import make_plan
    from sdbake.runner.cache import default_cache_root
    from sdbake.schemas.errors import SdbakeError
    from sdbake.schemas.loader import load_recipe
    plans = []
    for path in recipes:
        try:
            plans.append(make_plan(load_recipe(path), output_root=Path("outputs"), device=device, threads=threads))
        except SdbakeError:
            continue
    store = CacheStore(Path(cache_dir) if cache_dir else default_cache_root())
    if options.executor == "ray":               # what is wrong with the set-up is an error of the whole run
        from sdbake.runner.executors.probe import check_shared_cache
        from sdbake.runner.executors.ray_pool import import_ray
        import_ray()
        check_shared_cache(store.root)
    try:
        return run_graph(StageGraph.build(plans), store, options)
    except SdbakeError:
        return None
