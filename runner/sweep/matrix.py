"""A recipe with a `[matrix]` -> one full, validated recipe per point, in a cache-friendly order.

The first matrix key is the X axis, the second Y, the third Z (as A1111's X/Y/Z plot); `--matrix
KEY=VALUES` adds an axis or replaces the recipe's axis of that key. `save_grid = false` in the
table is not an axis: it turns the grid image off. Every point is validated before anything runs;
one bad point fails the sweep with its coordinates.

Order: the axis whose values change the earliest stage varies slowest, so neighbouring points share
the longest prefix of stages (a hires-denoise sweep renders the base image once, and the base state
stays at hand between points). Ties keep A1111's default order: Z slowest, X fastest.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbake.runner.sweep.axes import PROMPT_FIELDS, Axis, apply_value, build_axis, stage_index
from sdbake.schemas.errors import RecipeError, SdbakeError
from sdbake.schemas.limits import limit, over_limit
from sdbake.schemas.loader import BatchJob, LoadedRecipe, apply_overrides, parse_document, validate_document
from sdbake.schemas.positions import Positions
from sdbake.schemas.stages import STAGE_TYPES

AXIS_NAMES = ("X", "Y", "Z")
SAVE_GRID = "save_grid"
MAX_REPORTED_POINTS = 5


@dataclass
class Point:
    index: tuple[int, ...]            # position on each axis, in axis order (x, y, z)
    coordinates: dict[str, Any]       # axis key -> value
    document: dict                    # the concrete recipe (no matrix)
    loaded: LoadedRecipe              # the same, validated

    def describe(self) -> str:
        return ", ".join(f"{key}={_short(value)}" for key, value in self.coordinates.items())


@dataclass
class Sweep:
    axes: list[Axis]
    points: list[Point]               # in run order
    save_grid: bool = True
    name: str = ""
    label: str = "recipe"
    folder: Path = field(default_factory=lambda: Path("."))
    document: dict = field(default_factory=dict)        # the recipe as written (`--set` applied)


def _short(value: Any) -> str:
    text = str(round(value, 8)) if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_cli_matrix(items: list[str]) -> dict[str, str]:
    """`--matrix seed=1-3 --matrix "defaults.cfg=5, 7"` -> {"seed": "1-3", "defaults.cfg": "5, 7"}."""
    table: dict[str, str] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--matrix {item}: expected KEY=VALUES, e.g. --matrix seed=1-4")
        table[key.strip()] = values
    return table


def matrix_entries(document: dict, matrix: dict | None = None,
                   cli_matrix: list[str] | dict = ()) -> tuple[dict[str, Any], bool]:
    """The axes to sweep (recipe table, then the command line's) and whether to save a grid."""
    table = dict(document.get("matrix") or {}) if matrix is None else dict(matrix)
    if not isinstance(table, dict):
        raise RecipeError("`matrix` must be a table of key = values")
    extra = cli_matrix if isinstance(cli_matrix, dict) else parse_cli_matrix(list(cli_matrix))
    table.update(extra)
    save_grid = table.pop(SAVE_GRID, True)
    if isinstance(save_grid, str) and save_grid.strip().lower() in ("true", "false"):
        save_grid = save_grid.strip().lower() == "true"          # from --matrix save_grid=false
    if not isinstance(save_grid, bool):
        raise RecipeError(f"matrix `{SAVE_GRID}` must be true or false (got {save_grid!r})")
    if len(table) > len(AXIS_NAMES):
        raise RecipeError(f"matrix: at most {len(AXIS_NAMES)} axes (X, Y, Z), got {len(table)}: "
                          f"{', '.join(table)}")
    return table, save_grid


def build_axes(document: dict, entries: dict[str, Any], folder: Path | None = None) -> list[Axis]:
    return [build_axis(document, key, spec, folder) for key, spec in entries.items()]


def first_stage_changed(document: dict, axis: Axis) -> int:
    """Index of the first stage whose inputs an axis changes (len(stages) when none: e.g. `name`)."""
    stages = [s if isinstance(s, dict) else {} for s in document.get("stages") or []]
    if axis.kind == "sr":
        find = axis.values[0].find
        hits = [i for i, stage in enumerate(stages) for name in PROMPT_FIELDS
                if isinstance(stage.get(name), str) and find in stage[name]]
        return min(hits, default=len(stages))
    head = axis.path[0]
    if head == "stages":
        return stage_index(document, axis.path[1], axis.key)
    if head == "defaults":
        name = axis.path[1]
        for index, stage in enumerate(stages):
            cls = STAGE_TYPES.get(stage.get("type"))
            if cls is not None and name in cls.INHERITS and name not in stage:
                return index
        return len(stages)
    if head == "models":
        default_model = (document.get("defaults") or {}).get("model")
        for index, stage in enumerate(stages):
            cls = STAGE_TYPES.get(stage.get("type"))
            if cls is not None and "model" in cls.model_fields and stage.get("model", default_model) == axis.path[1]:
                return index
        return len(stages)
    return len(stages)


def run_order(document: dict, axes: list[Axis]) -> list[int]:
    """Axis indices from slowest- to fastest-varying."""
    return sorted(range(len(axes)), key=lambda a: (first_stage_changed(document, axes[a]), -a))


def expand(document: dict, matrix: dict | None = None, cli_matrix: list[str] | dict = (), *,
           label: str = "recipe", folder: Path | None = None, positions: Positions | None = None) -> list[Point]:
    """Every point of the sweep as a validated recipe, in run order."""
    entries, _ = matrix_entries(document, matrix, cli_matrix)
    axes = build_axes(document, entries, folder)
    return expand_axes(document, axes, label=label, folder=folder, positions=positions)


def expand_axes(document: dict, axes: list[Axis], *, label: str = "recipe", folder: Path | None = None,
                positions: Positions | None = None) -> list[Point]:
    total_points = math.prod(len(axis.values) for axis in axes)
    if total_points > limit("matrix_points"):
        sizes = " x ".join(str(len(axis.values)) for axis in axes)
        raise RecipeError("matrix: " + over_limit("matrix_points", f"{sizes} is {total_points:,} points"),
                          file=label)
    order = run_order(document, axes)
    points: list[Point] = []
    problems: list[SdbakeError] = []
    bad_points = 0
    for picks in itertools.product(*(range(len(axes[a].values)) for a in order)):
        index = [0] * len(axes)
        for a, pick in zip(order, picks):
            index[a] = pick
        point_document = copy.deepcopy(document)
        point_document.pop("matrix", None)
        coordinates = {}
        for axis, pick in zip(axes, index):
            coordinates[axis.key] = axis.values[pick]
            apply_value(point_document, axis, axis.values[pick])
        point = Point(tuple(index), coordinates, point_document, None)  # type: ignore[arg-type]
        try:
            recipe = validate_document(copy.deepcopy(point_document), positions or {}, label)
        except RecipeError as err:
            bad_points += 1
            if bad_points <= MAX_REPORTED_POINTS:
                problems += [_at_point(e, point) for e in (err.errors or [err])]
            continue
        point.loaded = LoadedRecipe(recipe=recipe, path=Path(label), folder=folder or Path("."),
                                    positions=positions or {})
        points.append(point)
    if problems:
        total = len(points) + bad_points
        more = f" (first {MAX_REPORTED_POINTS} shown)" if bad_points > MAX_REPORTED_POINTS else ""
        raise RecipeError(f"{bad_points} of {total} sweep points are invalid{more}", errors=problems)
    return points


def _at_point(err: SdbakeError, point: Point) -> SdbakeError:
    """The same error, saying which point of the sweep it belongs to."""
    return type(err)(f"sweep point [{point.describe()}]: {err.message}", file=err.file, line=err.line,
                     column=err.column, stage=err.stage)


# ---- reading a sweep ----------------------------------------------------------------------------

def read_document(path: Path, overrides: list[str] = ()) -> tuple[dict, Positions, str]:
    """The recipe file's plain document (before defaults are filled in), with `--set` applied."""
    fmt = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}.get(path.suffix.lower())
    label = str(path)
    if fmt is None:
        raise RecipeError(f"unknown recipe format `{path.suffix}` (use .toml, .yaml or .yml)", file=label)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read recipe: {err}", file=label) from None
    document, positions, problems = parse_document(text, fmt, label)
    if problems:
        raise RecipeError(f"{len(problems)} error(s)", errors=problems)
    apply_overrides(document, list(overrides), label)
    return document, positions, label


def document_of(loaded: LoadedRecipe, overrides: list[str] = ()) -> tuple[dict, Positions, str]:
    """The plain document behind a loaded recipe: re-read from its file when it has one; otherwise
    (a recipe embedded in an image) its canonical form, where `[defaults]` are already copied into
    the stages, so a `defaults.*` axis there changes nothing: use a `stages.<id>.*` key instead."""
    if loaded.path.suffix.lower() in (".toml", ".yaml", ".yml") and loaded.path.is_file():
        return read_document(loaded.path, overrides)
    from sdbake.schemas.canonical import canonical_dict
    return canonical_dict(loaded.recipe), loaded.positions, str(loaded.path)


def load_sweep(source: str | Path | LoadedRecipe, overrides: list[str] = (),
               cli_matrix: list[str] | dict = ()) -> Sweep:
    """A recipe file (or loaded recipe) with its `[matrix]` and `--matrix` axes, every point validated."""
    if isinstance(source, LoadedRecipe):
        document, positions, label = document_of(source, overrides)
        folder = source.folder
    else:
        path = Path(source)
        document, positions, label = read_document(path, overrides)
        folder = path.parent.resolve()
    entries, save_grid = matrix_entries(document, None, cli_matrix)
    if _batch_count_in(document) > 1:          # A1111's batch count: its batches are the points
        from sdbake.schemas.loader import load_recipe
        loaded = source if isinstance(source, LoadedRecipe) else load_recipe(Path(source), overrides)
        return batch_sweep(loaded, label, bool(entries))
    axes = build_axes(document, entries, folder)
    points = expand_axes(document, axes, label=label, folder=folder, positions=positions)
    return Sweep(axes, points, save_grid, str(document.get("name", "")), label, folder, document)


def _batch_count_in(document: dict) -> int:
    count = (document.get("defaults") or {}).get("n_iter")
    return count if isinstance(count, int) else 1


def has_matrix(loaded: LoadedRecipe, cli_matrix: list[str] | dict = ()) -> bool:
    """Whether `sdbake run/plan` should treat this recipe as a sweep (axes, or a batch count above 1)."""
    keys = set(loaded.recipe.matrix) | set(cli_matrix if isinstance(cli_matrix, dict) else
                                           parse_cli_matrix(list(cli_matrix)))
    return bool(keys - {SAVE_GRID}) or (loaded.recipe.defaults.n_iter or 1) > 1


def batch_sweep(loaded: LoadedRecipe, label: str, has_axes: bool) -> Sweep:
    """A1111's "Batch count" (`n_iter` in [defaults]): n_iter batches of batch_size images, rendered one
    after another as the points of a sweep, so each batch is its own chain of cache entries and only
    one batch is in memory at a time; no grid is drawn.

    Batch b numbers its images on as A1111's process_images_inner does: the encode seeds start at
    seed + b * batch_size, or, with a variation seed (the seed then stays the same for every image),
    the subseeds do. A `-1` seed or subseed is drawn once, before the batches are made."""
    from sdbake.runner.planning import pick_random_seed
    from sdbake.schemas.canonical import canonical_dict
    from sdbake.schemas.stages import EncodeParams
    count = loaded.recipe.defaults.n_iter or 1
    if has_axes:
        raise RecipeError(f"n_iter = {count} and a [matrix] together are not supported: sweep the seed "
                          f"instead (e.g. `seed = \"1-8\"` in [matrix])", file=label)
    pick_random_seed(loaded)
    pick_random_seed(loaded, field="subseed")
    recipes = []
    for batch in range(count):
        recipe = loaded.recipe.model_copy(deep=True)
        recipe.defaults.n_iter = None
        for stage in recipe.stages:
            if isinstance(stage, EncodeParams):
                if stage.subseed_strength:
                    stage.subseed += batch * stage.batch_size
                else:
                    stage.seed += batch * stage.batch_size
        recipes.append(recipe)
    # the job's seeds, as A1111's p.all_seeds: what its file name keys count over
    job_seeds = {stage.id: [seed for recipe in recipes for seed in recipe.stages[index].image_seeds()]
                 for index, stage in enumerate(loaded.recipe.stages) if isinstance(stage, EncodeParams)}
    points = []
    for batch, recipe in enumerate(recipes):
        point_loaded = LoadedRecipe(recipe=recipe, path=loaded.path, folder=loaded.folder,
                                    positions=loaded.positions, found=loaded.found, resolved=loaded.resolved,
                                    job=BatchJob(batch, count, job_seeds))
        points.append(Point((batch,), {"batch": batch + 1}, canonical_dict(recipe), point_loaded))
    axis = Axis("n_iter", ("defaults", "n_iter"), "int", list(range(1, count + 1)), "batch")
    return Sweep([axis], points, save_grid=False, name=loaded.recipe.name, label=label, folder=loaded.folder,
                 document=canonical_dict(loaded.recipe))
