"""Render a sweep point by point through the cache, then draw one labelled grid per Z value.

Every point is a full recipe rendered by `runner.api.render` with one shared cache, so a stage
whose inputs are the same in two points runs once, and a sweep that was interrupted continues
where it stopped: finished points are all cache hits and their images are left as they are.
Everything that can fail (schema, model files, input files, save paths) is checked for every
point before the first one runs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbake.runner.sweep.axes import Axis
from sdbake.runner.sweep.grid import draw_grid, encode_grid_png, grid_infotext
from sdbake.runner.sweep.matrix import AXIS_NAMES, Point, Sweep, load_sweep
from sdbake.schemas.errors import RecipeError, SdbakeError
from sdbake.schemas.loader import LoadedRecipe

SweepSource = Sweep | LoadedRecipe | str | Path


@dataclass
class PointRun:
    point: Point
    result: Any                       # runner.execute.RunResult
    image: Path | None                # the point's final image (first image of its last save stage)


@dataclass
class SweepResult:
    sweep: Sweep
    runs: list[PointRun]
    grids: list[Path] = field(default_factory=list)
    farm: Any = None                  # runner.executors.GraphRun when an executor walked the sweep's graph

    @property
    def images(self) -> list[Path]:
        return [run.image for run in self.runs]

    @property
    def paths(self) -> list[Path]:
        return [image for image in self.images if image is not None] + self.grids


@dataclass
class SweepPlan:
    """What `sdbake plan` says about a sweep."""
    points: int
    stages_per_point: int
    needed: int                       # distinct stage keys over all points: the executions needed
    naive: int                        # points x stages: what rendering each point alone would cost
    shared: list[str]                 # ids of the stages whose key is the same in every point
    cached: int | None = None         # how many of the needed keys the cache holds already
    keys: list[list[str]] = field(default_factory=list)      # per point (run order), per stage
    details: list[str] = field(default_factory=list)        # the graph's critical path, stages per model

    def lines(self) -> list[str]:
        saved = self.naive - self.needed
        text = [f"sweep: {self.points} points x {self.stages_per_point} stages",
                f"stage executions: {self.needed} needed, {self.naive} naive ({saved} shared through the cache)",
                f"shared by every point: {', '.join(self.shared) or 'none'}"]
        if self.cached is not None:
            text.append(f"already cached: {self.cached} of {self.needed}")
        return text + self.details


def _as_sweep(source: SweepSource, overrides: list[str], cli_matrix: list[str] | dict) -> Sweep:
    return source if isinstance(source, Sweep) else load_sweep(source, overrides, cli_matrix)


def _options(plan_options, run_options, keywords: dict):
    """Options objects, or keyword options (those of PlanOptions and RunOptions) to build them from."""
    from sdbake.runner.console import RunOptions
    from sdbake.runner.planning import PlanOptions, split_options
    if keywords and (plan_options is not None or run_options is not None):
        raise TypeError("give options objects or keyword options, not both")
    built_plan, built_run = split_options({"quiet": True, **keywords}, PlanOptions, RunOptions)
    return plan_options or built_plan, run_options or built_run


def point_plans(sweep: Sweep, output_root: Path | str | None = None, *, options=None, locked: Path | None = None,
                **keywords) -> list:
    """The plan of every point (model, input file and save path problems surface here, with the point).
    `options` is a PlanOptions, or give its fields as keywords (output_root, device, threads, ...)."""
    if options is None:
        from sdbake.runner.planning import PlanOptions, split_options
        (options,) = split_options({"output_root": output_root, **keywords}, PlanOptions)
    from sdbake.runner.planning import plan_recipe
    plans = []
    for point in sweep.points:
        try:
            plan = plan_recipe(point.loaded, options)
            if locked is not None:
                from sdbake.runner.lock import check_locked
                check_locked(plan, locked, f" [{point.describe()}]")
            plans.append(plan)
        except SdbakeError as err:
            raise type(err)(f"sweep point [{point.describe()}]: {err.message}", file=err.file, line=err.line,
                            column=err.column, stage=err.stage) from None
    return plans


def plan_sweep(source: SweepSource, plan_options=None, *, overrides: list[str] = (),
               cli_matrix: list[str] | dict = (), cache_dir: Path | str | None = None, **options) -> SweepPlan:
    """Points, stage executions needed vs naive, and the stages every point shares."""
    sweep = _as_sweep(source, overrides, cli_matrix)
    plans = point_plans(sweep, options=_options(plan_options, None, options)[0])
    keys = [[inv.key for inv in plan.invocations] for plan in plans]
    distinct = {key for point_keys in keys for key in point_keys}
    stage_count = len(keys[0]) if keys else 0
    shared = [inv.id for n, inv in enumerate(plans[0].invocations)
              if all(point_keys[n] == keys[0][n] for point_keys in keys)] if plans else []
    from sdbake.runner.cache import CacheStore, default_cache_root
    store = CacheStore(Path(cache_dir) if cache_dir is not None else default_cache_root())
    cached = sum(1 for key in distinct if store.has(key))
    from sdbake.runner.graph import StageGraph
    return SweepPlan(len(sweep.points), stage_count, len(distinct), len(keys) * stage_count, shared, cached, keys,
                     StageGraph.build(plans).detail_lines())


def _final_image(point: Point, result: Any) -> Path | None:
    save_ids = [stage.id for stage in point.loaded.recipe.stages if stage.type == "save"]
    for report in reversed(result.reports):
        if report.id in save_ids and report.files:
            return Path(report.files[0][1])
    return None


def run_sweep(source: SweepSource, plan_options=None, run_options=None, *, cache_dir: Path | str | None = None,
              overrides: list[str] = (), cli_matrix: list[str] | dict = (), locked: Path | None = None,
              on_point: Callable[[int, int, Point, Any], None] | None = None, executor: Any = None,
              **options) -> SweepResult:
    """Render every point in run order, then write the grids (unless `save_grid = false`).

    Options are PlanOptions and RunOptions (or their fields as keywords), applied to every point;
    `locked` is the recipe whose lock file every point must match. `on_point(done, total, point,
    run_result)` is called after each point (progress, tests). With `executor`
    (runner.executors.ExecutorOptions) the points' merged stage graph is computed first by that
    executor (batched, or on a Ray cluster); the points then find every stage cached."""
    from sdbake.runner.api import cache_store
    from sdbake.runner.execute import execute
    plan_options, run_options = _options(plan_options, run_options, options)
    sweep = _as_sweep(source, overrides, cli_matrix)
    for point in sweep.points:
        if not any(stage.type == "save" for stage in point.loaded.recipe.stages):
            raise RecipeError("a sweep needs a `save` stage: its images are the cells of the grid",
                              file=sweep.label)
    plans = point_plans(sweep, options=plan_options, locked=locked)          # everything checked first
    root = plans[0].output_root if plans else Path(plan_options.output_root or "outputs")
    if executor is not None and not run_options.no_cache:
        return _run_with_executor(sweep, plans, root, cache_dir, executor, on_point)
    store = None if run_options.no_cache else cache_store(cache_dir)
    runs = []
    for done, (point, plan) in enumerate(zip(sweep.points, plans), start=1):
        result = execute(plan, store, run_options)
        image = _final_image(point, result)
        if image is None and run_options.until is None:
            raise RecipeError(f"sweep point [{point.describe()}]: the run wrote no image")
        runs.append(PointRun(point, result, image))
        if on_point is not None:
            on_point(done, len(sweep.points), point, result)
    outcome = SweepResult(sweep, runs)
    # with --until a point may stop before its save: no grid then, as there is no image to put in it
    if sweep.save_grid and sweep.axes and all(run.image is not None for run in runs):
        outcome.grids = write_grids(sweep, runs, root)
    return outcome


def _run_with_executor(sweep: Sweep, plans: list, root: Path, cache_dir, executor, on_point) -> SweepResult:
    from sdbake.runner.cache import CacheStore, default_cache_root
    from sdbake.runner.executors.render import render_plans
    store = CacheStore(Path(cache_dir) if cache_dir else default_cache_root())
    farm, results = render_plans(plans, store, executor)
    runs = [PointRun(point, result, _final_image(point, result)) for point, result in zip(sweep.points, results)]
    for done, run in enumerate(runs, start=1):
        if on_point is not None:
            on_point(done, len(runs), run.point, run.result)
    outcome = SweepResult(sweep, runs, farm=farm)
    if sweep.save_grid and sweep.axes:
        outcome.grids = write_grids(sweep, runs, root)
    return outcome


# ---- grids --------------------------------------------------------------------------------------

def _axis(axes: list[Axis], n: int) -> Axis | None:
    return axes[n] if n < len(axes) else None


def _labels(axis: Axis | None) -> list[str]:
    return [axis.label(v) for v in axis.values] if axis else [""]


def _json_value(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, list, dict)) or value is None else str(value)


def grid_name(sweep: Sweep, z_index: int | None) -> str:
    from sdbake.stages.output.names import sanitize_component
    stem = sanitize_component(sweep.name or "sweep")
    return f"{stem}-grid.png" if z_index is None else f"{stem}-grid-z{z_index + 1}.png"


def write_grids(sweep: Sweep, runs: list[PointRun], output_root: Path) -> list[Path]:
    """One grid per Z value: `<name>-grid.png`, or `<name>-grid-z1.png`, `-z2`, ... with a Z axis."""
    from PIL import Image
    from sdbake.stages.output.metadata import read_metadata
    from sdbake.stages.output.writer import write_new_file
    x_axis, y_axis, z_axis = (_axis(sweep.axes, n) for n in range(3))
    by_index = {run.point.index: run for run in runs}
    columns, rows = len(x_axis.values), len(y_axis.values) if y_axis else 1
    written = []
    for z in range(len(z_axis.values) if z_axis else 1):
        cells = [[by_index[_index(ix, iy, z, len(sweep.axes))] for ix in range(columns)] for iy in range(rows)]
        images = [[_load(Image, run.image) for run in row] for row in cells]
        z_label = f"{z_axis.title}: {z_axis.label(z_axis.values[z])}" if z_axis else None
        grid = draw_grid(images, _labels(x_axis), _labels(y_axis), x_axis.title, y_axis.title if y_axis else "",
                         z_label)
        first_infotext, _ = read_metadata(cells[0][0].image)
        named = [(AXIS_NAMES[n], axis.key, _labels(axis)) for n, axis in enumerate(sweep.axes)]
        infotext = grid_infotext(first_infotext, named, z_label)
        data = encode_grid_png(grid, infotext, _grid_document(sweep, cells, z, output_root))
        target = output_root / grid_name(sweep, z if z_axis else None)
        written.append(write_new_file(target, data, root=output_root).path)
    return written


def _index(ix: int, iy: int, iz: int, axis_count: int) -> tuple[int, ...]:
    return (ix, iy, iz)[:axis_count]


def _load(image_module, path: Path):
    with image_module.open(path) as image:
        image.load()
        return image.copy()


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _grid_document(sweep: Sweep, cells: list[list[PointRun]], z: int, output_root: Path) -> dict:
    """The grid's sdbake metadata: the axes and their values, this grid's Z value, its cells' image
    paths, and the sweep's recipe with its matrix (so `sdbake run GRID.png` can render it again)."""
    recipe = dict(sweep.document or cells[0][0].point.document)
    recipe["matrix"] = {axis.key: _spec(axis) for axis in sweep.axes}
    axes = [{"axis": AXIS_NAMES[n], "key": axis.key, "title": axis.title, "values": _spec(axis),
             "labels": [axis.label(v) for v in axis.values]} for n, axis in enumerate(sweep.axes)]
    z_axis = _axis(sweep.axes, 2)
    return {"recipe": recipe,
            "sweep": {"axes": axes, "z": z_axis.label(z_axis.values[z]) if z_axis else None,
                      "cells": [[_relative(run.image, output_root) for run in row] for row in cells]}}


def _spec(axis: Axis) -> Any:
    """The axis written back as a matrix entry (Prompt S/R: the texts, the searched one first)."""
    if axis.kind == "sr":
        return [pair.replace for pair in axis.values]
    return [_json_value(v) for v in axis.values]
