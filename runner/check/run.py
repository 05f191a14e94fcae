"""`sdbake check`: render recipes, pair each output with its golden image, judge, optionally accept.

Golden layout: `<golden>/<recipe name>/<output path relative to the output root>`, and the numerics
fingerprint the goldens were made with beside them (comparison.py). A case passes on identical bytes,
else on equal pixels when the comparison is exact (same fingerprint, or asked for), else when its
pixels meet the tolerances (defaults, the recipe's [check] table, flags). A recipe that does not load
or render is a failing case of its own; the others still run.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbake.runner.check.comparison import (
    FINGERPRINT_FILE,
    choose_comparison,
    read_fingerprint,
    write_fingerprint,
)
from sdbake.runner.check.metrics import Metrics, Tolerances, compare, judge, load_pixels, size_text
from sdbake.schemas.errors import RecipeError, SdbakeError
from sdbake.schemas.loader import RECIPE_SUFFIXES, LoadedRecipe


@dataclass
class CheckOptions:
    golden: Path
    update: bool = False
    no_cache: bool = False
    cache_dir: Path | None = None
    max_abs_diff: int | None = None
    mean_abs_diff: float | None = None
    min_psnr: float | None = None
    min_ssim: float | None = None
    exact: bool = False
    device: str | None = None
    executor: Any = None             # runner.executors.ExecutorOptions: compute the suite's graph first

    def flag_tolerances(self) -> Tolerances:
        return Tolerances(self.max_abs_diff, self.mean_abs_diff, self.min_psnr, self.min_ssim)


@dataclass
class Case:
    recipe: str                      # the recipe file
    name: str                        # the recipe's name (its file name when it does not load)
    output: str = ""                 # output path relative to the output root ("" when nothing rendered)
    status: str = "error"            # pass | fail | error | added | updated
    message: str = ""
    golden_path: Path | None = None
    golden_bytes: bytes | None = None
    new_bytes: bytes | None = None
    metrics: Metrics | None = None
    tolerances: Tolerances | None = None
    exact: bool = False              # equal pixels required (see comparison)
    comparison: str = ""             # which comparison and why, for the console and the report
    recipe_diff: str = ""            # golden's embedded recipe vs the current one, when they differ
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")

    @property
    def title(self) -> str:
        if self.output:
            return f"{self.name}: {self.output}"
        return self.recipe if self.name == Path(self.recipe).name else f"{self.name} ({self.recipe})"


@dataclass
class CheckResult:
    cases: list[Case]
    stale: list[Path]                # goldens that no render produced
    seconds: float

    @property
    def failed(self) -> list[Case]:
        return [c for c in self.cases if c.failed]


def collect_recipes(sources: list[str]) -> list[Path]:
    """Recipe files named, and those directly inside named folders (sorted)."""
    found: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RECIPE_SUFFIXES)
            if not inside:
                raise RecipeError("no recipe files (.toml, .yaml, .yml) in this folder", file=str(path))
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise RecipeError("no such recipe file or folder", file=str(path))
    return found


def golden_recipe_diff(golden: Path, loaded: LoadedRecipe, case: Case) -> None:
    """Attach the recipe diff when the golden was rendered from another recipe than the current one."""
    from sdbake.runner.diff import diff_loaded
    from sdbake.runner.diff_text import format_text
    from sdbake.runner.sources import load_image_recipe
    from sdbake.schemas.canonical import canonical_dict
    try:
        embedded = load_image_recipe(golden)
    except SdbakeError as err:
        case.notes.append(f"the golden's recipe is not compared: {err.message}")
        return
    if canonical_dict(embedded.recipe) != canonical_dict(loaded.recipe):
        case.recipe_diff = format_text(diff_loaded(embedded, loaded, labels=(f"{golden} (embedded recipe)",
                                                                             str(loaded.path))))


def _accept(case: Case, status: str, message: str) -> None:
    case.golden_path.parent.mkdir(parents=True, exist_ok=True)
    case.golden_path.write_bytes(case.new_bytes)
    case.status, case.message = status, message


def judge_output(case: Case, loaded: LoadedRecipe, update: bool) -> None:
    """Fill case.status/message/metrics from its golden and new bytes; with update, accept the render."""
    new_pixels = load_pixels(case.new_bytes, f"{case.recipe}: rendered {case.output}")
    if not case.golden_path.is_file():
        if update:
            return _accept(case, "added", f"new golden {case.golden_path}")
        case.status = "fail"
        case.message = f"no golden image at {case.golden_path} (run with --update to accept this render)"
        return
    case.golden_bytes = case.golden_path.read_bytes()
    if case.golden_bytes == case.new_bytes:
        case.status, case.message = "pass", "identical bytes"
        return
    golden_recipe_diff(case.golden_path, loaded, case)
    try:
        golden_pixels = load_pixels(case.golden_bytes, str(case.golden_path))
    except SdbakeError as err:
        if update:
            return _accept(case, "updated", f"replaced an unreadable golden ({err.message})")
        case.status, case.message = "error", f"golden {case.golden_path}: {err.message}"
        return
    if golden_pixels.shape != new_pixels.shape:
        sizes = f"golden {size_text(golden_pixels)}, new render {size_text(new_pixels)}"
        if update:
            return _accept(case, "updated", f"size changed: {sizes}")
        case.status, case.message = "fail", f"size differs: {sizes}"
        return
    case.metrics = compare(golden_pixels, new_pixels)
    missed = judge(case.metrics, case.tolerances or Tolerances(), exact=case.exact)
    if update and (missed or case.metrics.max_abs_diff or case.recipe_diff):
        # equal pixels from an equal recipe are kept: only metadata bytes (e.g. the folder) differ
        return _accept(case, "updated", case.metrics.summary())
    case.status = "fail" if missed else "pass"
    passed = "equal pixels" if case.exact else f"within tolerance ({case.metrics.summary()})"
    case.message = "; ".join(missed) if missed else passed


def check_recipe(path: Path, options: CheckOptions, output_root: Path) -> list[Case]:
    """The cases of one recipe: one per output image, or one error case when it does not load or render."""
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe

    started = time.perf_counter()
    try:
        loaded = load_recipe(path)
    except SdbakeError as err:
        return [Case(str(path), path.name, message=f"invalid recipe:\n{err}")]
    from sdbake.runner.numerics import Numerics

    name = loaded.recipe.name
    # Regression renders pin one CPU thread (unless SDBAKE_THREADS says otherwise): CPU results
    # depend on the thread count, and goldens must compare across machines.
    threads = None if os.environ.get("SDBAKE_THREADS") else 1
    performance = loaded.recipe.performance
    fingerprint = Numerics.choose(options.device, None, threads, compile=performance.compile,
                                  channels_last=performance.channels_last).machine_fingerprint()
    comparison = choose_comparison(exact_flag=options.exact, flags=options.flag_tolerances(),
                                   recipe_check=loaded.recipe.check,
                                   golden_fingerprint=read_fingerprint(options.golden / name),
                                   current_fingerprint=fingerprint)
    try:
        result = render(loaded, output_root=output_root, cache_dir=options.cache_dir, no_cache=options.no_cache,
                        device=options.device, threads=threads)
    except SdbakeError as err:
        return [Case(str(path), name, message=f"render failed: {err}", seconds=time.perf_counter() - started)]
    seconds = time.perf_counter() - started
    if not result.outputs:
        return [Case(str(path), name, message="the recipe wrote no image (does it end with a save stage?)",
                     seconds=seconds)]
    cases = []
    for written in result.outputs:
        output = Path(written).relative_to(output_root).as_posix()
        case = Case(str(path), name, output, golden_path=options.golden / name / output,
                    new_bytes=Path(written).read_bytes(), tolerances=comparison.tolerances,
                    exact=comparison.exact, comparison=comparison.describe(), seconds=seconds)
        try:
            judge_output(case, loaded, options.update)
        except SdbakeError as err:
            case.status, case.message = "error", str(err)
        cases.append(case)
    if options.update and not any(c.failed for c in cases):
        # every golden of this recipe now has this run's pixels: they were accepted or already equal
        write_fingerprint(options.golden / name, fingerprint)
    return cases


def stale_goldens(golden: Path, cases: list[Case]) -> list[Path]:
    """Golden files of the recipes that rendered, which no output matched."""
    rendered_names = {c.name for c in cases if c.output}
    matched = {c.golden_path.resolve() for c in cases if c.golden_path}
    stale = []
    for name in sorted(rendered_names):
        folder = golden / name
        if folder.is_dir():
            stale += [p for p in sorted(folder.rglob("*")) if p.is_file() and p.resolve() not in matched
                      and p != folder / FINGERPRINT_FILE]
    return stale


def run_check(sources: list[str], options: CheckOptions,
              on_case: Callable[[Case], None] = lambda case: None) -> CheckResult:
    started = time.perf_counter()
    recipes = collect_recipes(sources)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="sdbake-check-") as scratch:
        if options.executor is not None and not options.no_cache:
            from sdbake.runner.executors.render import precompute_suite
            precompute_suite(recipes, options.executor, cache_dir=options.cache_dir, device=options.device,
                             threads=None if os.environ.get("SDBAKE_THREADS") else 1)
        for index, path in enumerate(recipes):
            # each recipe renders into a fresh root, so earlier outputs never bump a file name
            for case in check_recipe(path, options, Path(scratch) / str(index)):
                cases.append(case)
                on_case(case)
    return CheckResult(cases, stale_goldens(options.golden, cases), time.perf_counter() - started)
