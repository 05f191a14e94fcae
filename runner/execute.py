"""Execute a plan: serve hits from the cache, compute misses, write outputs (docs/design.md sections 5, 9).

Torch is imported only when some stage misses; a fully cached run reads entry.json files and
re-materializes any output file that went missing, nothing else.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbake.runner.cache import CacheStore
from sdbake.runner.console import Console, RunOptions
from sdbake.runner.output_files import StageFiles
from sdbake.runner.plan import Invocation, Plan
from sdbake.schemas.errors import SdbakeError, StateError


@dataclass
class StageReport:
    id: str
    status: str                      # "hit" | "ran"
    seconds: float = 0.0
    files: list[tuple[str, Path]] = field(default_factory=list)   # (status, path) of outputs


@dataclass
class RunResult:
    reports: list[StageReport]
    final_state: Any = None

    @property
    def outputs(self) -> list[Path]:
        return [path for r in self.reports for _, path in r.files]


def _ordered_until(plan: Plan, until: str | None) -> list[Invocation]:
    if until is None:
        return plan.invocations
    ids = [inv.id for inv in plan.invocations]
    if until not in ids:
        raise SdbakeError(f"--until {until}: no such stage (stages: {', '.join(ids)})")
    return plan.invocations[: ids.index(until) + 1]


def materialize(plan: Plan, inv: Invocation, files: dict[str, bytes] | None, entry, console) -> list:
    """Write a cache hit's stored files under the output root: identical files are left alone."""
    from sdbake.stages.output.writer import write_new_file
    on_exists = getattr(inv.stage, "on_exists", "number")
    written = []
    if files is not None:
        items = [(rel, files[rel]) for rel in sorted(files)]
    else:
        items = [(inv.outputs[int(n)], entry.blob_bytes(n)) for n in sorted(entry.files, key=int)]
    for rel, data in items:
        result = write_new_file(plan.output_root / rel, data, on_exists, root=plan.output_root,
                                sequence=getattr(inv.stage, "sequence_number", False))
        written.append((result.status, result.path))
        console.line(f"  {result.status}: {result.path}")
    return written


def _remember_inputs(plan: Plan, store: CacheStore, console: Console) -> None:
    """Keep the plan's input files in the cache's input store, so `run IMAGE` finds them later."""
    from sdbake.runner.inputs import remember_inputs
    try:
        remember_inputs(plan, store.root)
    except OSError as err:             # a read-only cache still serves hits
        console.warn(f"input files not kept in the cache: {err}")


def execute(plan: Plan, store: CacheStore | None, options: RunOptions) -> RunResult:
    console = Console(options.quiet)
    if store is not None:
        store.warn = console.warn
    invocations = _ordered_until(plan, options.until)
    if store is not None and not options.no_cache:
        _remember_inputs(plan, store, console)
    reports: list[StageReport] = []
    runtime = None                    # torch-side helpers, created at the first miss
    state = None
    state_key: str | None = None      # key of the state in `state` (None: the empty start)
    input_key: str | None = None      # key of the state the next stage reads
    for inv in invocations:
        use_cache = store is not None and not options.no_cache and inv.id not in options.refresh
        entry = store.get(inv.key) if use_cache else None
        if entry is not None and not _files_fit(entry, inv):
            store.evict_corrupt(inv.key, "its stored files do not fit the stage's outputs")
            entry = None
        if entry is not None:
            console.line(f"{inv.id}: HIT {inv.key[:12]}")
            reports.append(StageReport(inv.id, "hit", files=materialize(plan, inv, None, entry, console)
                                       if entry.files else []))
            input_key = inv.state_key
            store.write_record(plan.recipe.name, inv.id, inv.key, inv.inputs)
            continue
        if runtime is None:
            from sdbake.runner.runtime import Runtime
            runtime = Runtime(plan, options, console)
        if state_key != input_key or (state is None and input_key is not None):
            state = runtime.load_state(store, input_key)
            state_key = input_key
        console.begin(inv.id)
        started = time.perf_counter()
        outputs = StageFiles(plan, inv)          # written while the stage runs, named once it succeeded
        try:
            new_state, side_files = runtime.run_stage(inv, state, on_file=outputs.emitted)
        except BaseException:
            outputs.discard()
            raise
        seconds = time.perf_counter() - started
        console.line(f"{inv.id}: ran in {seconds:.2f}s")
        with ThreadPoolExecutor(max_workers=1) as background:
            # The cache entry (fsynced too) is written while the output files take their names.
            stored = background.submit(_store_or_warn, runtime, store, inv, new_state, side_files, console) \
                if store is not None and not options.no_cache else None
            files = outputs.commit(console)
            if stored is not None:
                stored.result()
        reports.append(StageReport(inv.id, "ran", seconds, files))
        state, state_key = new_state, inv.state_key
        input_key = inv.state_key
        if store is not None:
            store.write_record(plan.recipe.name, inv.id, inv.key, inv.inputs)
    return RunResult(reports, state)


def _files_fit(entry, inv: Invocation) -> bool:
    """Whether a hit's stored files are outputs of this stage (an entry.json from a shared cache is
    not trusted to index inside the stage's outputs)."""
    return all(name.isdigit() and int(name) < len(inv.outputs) for name in entry.files)


def _store_or_warn(runtime, store: CacheStore, inv: Invocation, state, side_files, console) -> None:
    """Store a computed stage; a cache that cannot take it (read-only, full, removed) costs only the reuse:
    the run goes on with the state in memory and says so."""
    try:
        runtime.store_stage(store, inv, state, side_files)
    except (OSError, SdbakeError) as err:
        reason = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) and err.filename else str(err)
        console.warn(f"stage {inv.id} not stored in the cache {store.root} ({reason})")


__all__ = ["RunOptions", "RunResult", "StateError", "execute"]
