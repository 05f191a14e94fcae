"""`sdbake run` and `sdbake plan`: execute a recipe through the stage cache, or show what would run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdbake.runner.commands import add_command, add_overrides, add_recipe_argument, add_render_options


def add_recipe_options(parser: argparse.ArgumentParser) -> None:
    add_recipe_argument(parser)
    add_overrides(parser)
    add_render_options(parser)
    parser.add_argument("--inputs", metavar="DIR", type=Path,
                        help="RECIPE is an image: also look here for the files its recipe read (by content hash)")
    parser.add_argument("--recipe-dir", metavar="DIR", type=Path,
                        help="RECIPE is an image: the folder of the recipe that made it (its relative paths)")
    parser.add_argument("--matrix", action="append", default=[], metavar="KEY=VALUES",
                        help="sweep axis, e.g. seed=1-4 or defaults.cfg=5,7 (A1111 X/Y/Z ranges)")


def add_executor_options(parser: argparse.ArgumentParser, summary: bool = True) -> None:
    """How a run's stage graph is computed (docs/scale.md)."""
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: in this process (default); ray: Ray tasks on a cluster's workers")
    parser.add_argument("--max-batch", type=int, default=1, metavar="N",
                        help="sample up to N points that differ only in seed/prompt/cfg in one call (default 1)")
    parser.add_argument("--ray-address", metavar="auto|ray://HOST:PORT",
                        help="an existing Ray cluster (default: start a local one on the loopback interface)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="Ray worker actors (default: one per GPU, or per CPU thread budget)")
    if summary:
        parser.add_argument("--json", action="store_true", help="print the run's summary as JSON on stdout")


def executor_options(args):
    """The ExecutorOptions the flags ask for, or None for today's point-by-point run."""
    from sdbake.runner.executors import ExecutorOptions
    from sdbake.schemas.errors import SdbakeError
    if args.max_batch < 1:
        raise SdbakeError(f"--max-batch {args.max_batch}: must be 1 or more")
    if args.executor == "local" and args.max_batch == 1 and not getattr(args, "json", False) \
            and args.ray_address is None:
        return None
    if args.no_cache:
        raise SdbakeError(f"--executor {args.executor} with --max-batch/--json meets its workers in the stage cache: "
                          "it cannot run with --no-cache")
    if args.ray_address and args.executor != "ray":
        raise SdbakeError("--ray-address needs --executor ray")
    return ExecutorOptions(executor=args.executor, max_batch=args.max_batch, ray_address=args.ray_address,
                           workers=args.workers, quiet=getattr(args, "quiet", False),
                           allow_pickle=getattr(args, "allow_pickle", False))


def report_farm(farm, args) -> None:
    """The summary table on stderr (and the JSON summary on stdout with --json)."""
    import json
    if not args.quiet:
        for line in farm.progress.table():
            print(line, file=sys.stderr)
    if args.json:
        print(json.dumps(farm.summary, indent=1, sort_keys=True))


def register(subparsers: argparse._SubParsersAction) -> None:
    run = add_command(subparsers, "run", run_command, "render a recipe (or re-render an image made by sdbake)",
                      ["sdbake run recipes/demo.toml --out outputs       render; a second run is all cache hits",
                       "sdbake run recipes/demo.toml --set defaults.seed=7 --until sample-1",
                       "sdbake run recipes/demo.toml --matrix seed=1-4 --matrix defaults.cfg=5,7   a sweep, with a grid",
                       "sdbake run outputs/demo/1234.png                 re-render an image from its embedded recipe",
                       "sdbake run demo.tar.gz                           render a bundle written by `sdbake pack`"])
    add_recipe_options(run)
    run.add_argument("--until", metavar="STAGE_ID", help="stop after this stage")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the stage cache")
    run.add_argument("--refresh", action="append", default=[], metavar="STAGE_ID",
                     help="recompute this stage even if cached")
    run.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.pt pickle weights")
    run.add_argument("--locked", action="store_true", help="refuse model files or prompts that differ from "
                                                           "RECIPE.lock")
    run.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    run.add_argument("--no-half-vae", action="store_true", help="decode in float32 even on fp16/bf16 runs")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress or per-stage lines on stderr")
    add_executor_options(run)

    plan = add_command(subparsers, "plan", plan_command, "show each stage's cache key and HIT/MISS, and why it misses",
                       ["sdbake plan recipes/demo.toml",
                        "sdbake plan recipes/demo.toml --set stages.sample-2.cfg=5   what an edit would re-run",
                        "sdbake plan recipes/demo.toml --matrix seed=1-8           a sweep's shared stages"])
    add_recipe_options(plan)


def options_from_args(args):
    """The CLI's options as the plan builder and the executor take them (the API's are the same)."""
    from sdbake.runner.console import RunOptions
    from sdbake.runner.planning import PlanOptions
    plan = PlanOptions(output_root=args.out, device=args.device, dtype=args.dtype,
                       compile=getattr(args, "compile", False), no_half_vae=getattr(args, "no_half_vae", False),
                       random_seed=_locked_seed(args) if getattr(args, "locked", False) else None,
                       random_subseed=_locked_seed(args, "random_subseed") if getattr(args, "locked", False) else None,
                       cache_dir=getattr(args, "cache_dir", None))
    run = RunOptions(no_cache=getattr(args, "no_cache", False), refresh=set(getattr(args, "refresh", [])),
                     until=getattr(args, "until", None), allow_pickle=getattr(args, "allow_pickle", False),
                     quiet=getattr(args, "quiet", False))
    return plan, run


def _locked_seed(args, field: str = "random_seed") -> int | None:
    """With --locked, a `seed = -1` (`subseed = -1`) takes the one the lock recorded instead of a new one."""
    from sdbake.runner.lock import lock_path, read_lock
    return read_lock(lock_path(Path(args.recipe))).get(field)


def prepare(args, loaded=None):
    """Recipe -> plan and cache store, importing no torch."""
    from sdbake.runner.api import cache_store
    from sdbake.runner.planning import plan_recipe
    store = cache_store(args.cache_dir)
    loaded = loaded or load_source(args, store.root)
    return plan_recipe(loaded, options_from_args(args)[0]), store


def load_source(args, cache_root: Path):
    from sdbake.runner.sources import InputSearch, load_any
    search = InputSearch(getattr(args, "inputs", None), getattr(args, "recipe_dir", None), cache_root)
    return load_any(args.recipe, args.overrides, search)


def _load(args):
    """The recipe, loaded once; and its sweep when it (or --matrix) declares axes, else None."""
    from sdbake.runner.api import cache_store
    from sdbake.runner.sweep.matrix import has_matrix, load_sweep
    from sdbake.schemas.errors import SdbakeError
    loaded = load_source(args, cache_store(args.cache_dir).root)
    if not has_matrix(loaded, args.matrix):
        return loaded, None
    try:
        return loaded, load_sweep(loaded, args.overrides, args.matrix)
    except SdbakeError as err:
        if err.file is None and not getattr(err, "errors", None):      # say which recipe the sweep is from
            err.file = args.recipe
        raise


def run_command(args) -> int:
    from sdbake.runner.execute import execute

    loaded, sweep = _load(args)
    plan_options, run_options = options_from_args(args)
    farm_options = executor_options(args)
    if sweep is not None:
        from sdbake.runner.sweep.run import run_sweep
        result = run_sweep(sweep, plan_options, run_options, cache_dir=args.cache_dir,
                           locked=Path(args.recipe) if args.locked else None, executor=farm_options)
        if not args.json:
            for path in result.paths:
                print(path)
        if result.farm is not None:
            report_farm(result.farm, args)
        return 0

    from sdbake.runner.sources import IMAGE_SUFFIXES
    plan, store = prepare(args, loaded)
    from_image = Path(args.recipe) if Path(args.recipe).suffix.lower() in IMAGE_SUFFIXES else None
    if args.locked:
        from sdbake.runner.lock import check_locked
        check_locked(plan, Path(args.recipe))
    if farm_options is not None:
        if args.until or args.refresh:
            from sdbake.schemas.errors import SdbakeError
            raise SdbakeError(f"--executor {args.executor}: --until and --refresh run with the local executor only")
        from sdbake.runner.executors import run_graph
        from sdbake.runner.graph import StageGraph
        report_farm(run_graph(StageGraph.build([plan]), store, farm_options), args)
    result = execute(plan, None if args.no_cache else store, run_options)
    written = [(status, path) for report in result.reports for status, path in report.files]
    for status, path in written:
        print(f"{status}\t{path}")
    if from_image is not None:
        from sdbake.runner.sources import report_reproduction
        return report_reproduction(from_image, written)
    return 0


def plan_command(args) -> int:
    from sdbake.runner.explain import explain_miss

    loaded, sweep = _load(args)
    if sweep is not None:
        from sdbake.runner.sweep.run import plan_sweep
        for line in plan_sweep(sweep, options_from_args(args)[0], cache_dir=args.cache_dir).lines():
            print(line)
        return 0

    plan, store = prepare(args, loaded)
    print(f"recipe {plan.recipe.name}: {len(plan.invocations)} stages, cache {store.root}")
    for inv in plan.invocations:
        hit = store.has(inv.key)
        line = f"{inv.id:<14} {'HIT ' if hit else 'MISS'} {inv.key[:12]}"
        if not hit:
            why = explain_miss(store, plan.recipe.name, inv)
            if why:
                line += f"  ({why})"
        print(line)
    return 0
