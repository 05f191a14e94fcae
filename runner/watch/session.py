"""The watch loop: poll the recipe and the files it reads, re-plan and re-run on every change.

Each attempt goes through the same plan builder and executor as `sdbake run`, so only the stages whose
cache keys changed run again. An attempt that fails (a syntax error, a missing mask) keeps the last good
render on the page and its files on disk, and shows the error with its file:line:col.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdbake.schemas.errors import RecipeError, SdbakeError


@dataclass
class StageRow:
    id: str
    type: str
    status: str            # "HIT" | "ran" | "waiting" (not reached: the attempt failed before it)
    seconds: float
    key: str


@dataclass
class Snapshot:
    """What the page shows; replaced as a whole (never mutated) so readers need no lock."""
    version: int = 0
    recipe: str = ""
    state: str = "starting"                      # starting | rendering | ok | error
    attempt: int = 0
    error: str | None = None                     # the last attempt's error, one line per problem
    stages: tuple[StageRow, ...] = ()            # of the last good render
    images: tuple[tuple[str, str, int], ...] = ()  # (stage id, path relative to the output root, mtime_ns)
    previews: tuple[tuple[str, int, int], ...] = ()  # (stage id, step, batch index) of the last run
    rendered_at: float | None = None
    seconds: float = 0.0


def file_signature(paths: list[Path]) -> dict[str, tuple]:
    """path -> (mtime_ns, size), (None, None) for a missing file: any save changes it."""
    signature = {}
    for path in paths:
        try:
            info = path.stat()
            signature[str(path)] = (info.st_mtime_ns, info.st_size)
        except OSError:
            signature[str(path)] = (None, None)
    return signature


@dataclass
class WatchSession:
    """One recipe under watch. `args` carries what `sdbake run` takes (recipe, overrides, out, ...)."""
    args: object
    log: object = print
    snapshot: Snapshot = field(default_factory=Snapshot)
    inputs: list[Path] = field(default_factory=list)          # files the last good plan read
    previews: dict = field(default_factory=dict)              # (stage, step, batch) -> PNG bytes
    output_root: Path | None = None
    _lock: threading.Condition = field(default_factory=threading.Condition)   # notified on every change
    _preview_stages: set = field(default_factory=set)

    def __post_init__(self):
        self.snapshot = Snapshot(recipe=str(self.args.recipe))

    def _publish(self, **changes) -> None:
        with self._lock:
            current = self.snapshot.__dict__ | changes
            current["version"] = self.snapshot.version + 1
            self.snapshot = Snapshot(**current)
            self._lock.notify_all()

    def wait_for_change(self, after: int, timeout_s: float) -> Snapshot:
        """The snapshot once its version differs from `after`, or the current one after `timeout_s`."""
        with self._lock:
            self._lock.wait_for(lambda: self.snapshot.version != after, timeout=timeout_s)
            return self.snapshot

    def watched_files(self) -> list[Path]:
        return [Path(self.args.recipe), *self.inputs]

    def preview_png(self, stage: str, step: int, batch: int) -> bytes | None:
        with self._lock:
            return self.previews.get((stage, step, batch))

    def _on_preview(self, stage_id: str, step: int, images: list) -> None:
        from sdbake.runner.previews import png_bytes
        encoded = {(stage_id, step, n): png_bytes(image) for n, image in enumerate(images)}
        with self._lock:
            if stage_id not in self._preview_stages:      # a stage that runs again replaces its old previews
                self._preview_stages.add(stage_id)
                self.previews = {k: v for k, v in self.previews.items() if k[0] != stage_id}
            self.previews.update(encoded)
            keys = tuple(sorted(self.previews))
        self._publish(previews=keys)

    def attempt(self) -> bool:
        """Plan and run once; True when it rendered. Errors are published, never raised (except bugs)."""
        from sdbake.runner.commands.run import prepare
        from sdbake.runner.execute import RunOptions, execute
        from sdbake.runner.sweep.matrix import has_matrix
        started = time.perf_counter()
        number = self.snapshot.attempt + 1
        self._publish(state="rendering", attempt=number)
        self._preview_stages = set()
        try:
            plan, store = prepare(self.args)
            if has_matrix(plan.loaded):
                raise RecipeError("watch renders one recipe, and this one is a sweep (`matrix`): watch a recipe "
                                  "without it, or use `sdbake run`", file=str(self.args.recipe))
            self.inputs = plan_inputs(plan)
            self.output_root = plan.output_root
            result = execute(plan, store, RunOptions(quiet=getattr(self.args, "quiet", False),
                                                     on_preview=self._on_preview))
        except SdbakeError as err:
            self._publish(state="error", error=str(err))
            self.log(f"attempt {number}: error\n{err}")
            return False
        except OSError as err:          # a file that vanished between polls (editors save by renaming)
            self._publish(state="error", error=f"{getattr(err, 'filename', '') or ''}: {err.strerror or err}")
            self.log(f"attempt {number}: error: {err}")
            return False
        reports = {report.id: report for report in result.reports}
        rows = tuple(StageRow(inv.id, inv.stage.type, _status(reports.get(inv.id)),
                              reports[inv.id].seconds if inv.id in reports else 0.0, inv.key[:12])
                     for inv in plan.invocations)
        images = tuple(_image_entry(report.id, path, plan.output_root)
                       for report in result.reports for _, path in report.files)
        seconds = time.perf_counter() - started
        order = {row.id: n for n, row in enumerate(rows)}
        with self._lock:    # drop previews of stages that are gone, or that ran again without making any
            self.previews = {key: png for key, png in self.previews.items() if key[0] in order and not (
                getattr(reports.get(key[0]), "status", None) == "ran" and key[0] not in self._preview_stages)}
            previews = tuple(sorted(self.previews, key=lambda key: (order[key[0]], key[1], key[2])))
        self._publish(state="ok", error=None, stages=rows, images=images, previews=previews, rendered_at=time.time(),
                      seconds=seconds)
        ran = [row.id for row in rows if row.status == "ran"]
        self.log(f"attempt {number}: rendered in {seconds:.1f}s; ran {', '.join(ran) or 'nothing (all hits)'}")
        return True

    def run_forever(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Attempt now, then again whenever a watched file changes (and has stopped changing)."""
        seen: dict[str, tuple] | None = None
        while not stop.is_set():
            signature = file_signature(self.watched_files())
            if signature != seen:
                stop.wait(0.1)          # let an editor finish writing before reading
                if file_signature(self.watched_files()) != signature:
                    continue
                self.attempt()
                # Files the plan found for the first time count as seen as they are now; a file that
                # changed while the attempt ran keeps its old signature, so it triggers the next one.
                now = file_signature(self.watched_files())
                seen = {path: signature.get(path, stamp) for path, stamp in now.items()}
            stop.wait(poll_s)


def _status(report) -> str:
    if report is None:
        return "waiting"
    return "HIT" if report.status == "hit" else "ran"


def _image_entry(stage_id: str, path: Path, root: Path) -> tuple[str, str, int]:
    relative = Path(path).resolve().relative_to(root.resolve()).as_posix()
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError:
        mtime = 0
    return stage_id, relative, mtime


def plan_inputs(plan) -> list[Path]:
    """Every file the plan read besides the recipe: init images, masks, edits, wildcards, embeddings."""
    found: list[Path] = []
    for inv in plan.invocations:
        found += [Path(p) for p in inv.files.values()]
        found += [plan.loaded.folder / name for name in inv.inputs.get("wildcards", {})]
    found += [Path(p) for p in plan.embedding_files.values()]
    return sorted(set(found))
