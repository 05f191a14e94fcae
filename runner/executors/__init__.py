"""Executors over a run's stage graph (DESIGN.md section 12): `local` in this process, `ray` on a cluster.

Both walk the graph in dependency order and only compute; the cache is where results meet. Output
files are then written by the ordinary per-recipe execution, which finds every stage cached.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sdbake.runner.cache import CacheStore
from sdbake.runner.console import RunOptions
from sdbake.runner.executors.batching import batch_signature, group_ready
from sdbake.runner.executors.progress import RunProgress
from sdbake.runner.executors.worker import Execution, StageWorker
from sdbake.runner.graph import StageGraph
from sdbake.schemas.errors import SdbakeError

EXECUTORS = ("local", "ray")


@dataclass
class ExecutorOptions:
    executor: str = "local"
    max_batch: int = 1                  # sample executions per sampling call
    ray_address: str | None = None      # None: start a local cluster for the run
    workers: int | None = None          # Ray actors (default: one per GPU, else per CPU thread budget)
    quiet: bool = False
    allow_pickle: bool = False


@dataclass
class GraphRun:
    progress: RunProgress
    executions: list[Execution] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        return self.progress.summary()


class LocalPool:
    """One in-process worker: each call computes immediately."""

    def __init__(self, store: CacheStore, options: RunOptions):
        self.worker = StageWorker(store.root, options, name="local")
        self.workers = ["local"]
        self._results: list[tuple[str, list[Execution]]] = []

    def preferred(self, model: str | None) -> list[str]:
        return self.workers

    def submit(self, worker: str, plans, tasks) -> None:
        self._results.append((worker, self.worker.compute(plans, tasks)))

    def wait(self) -> tuple[str, list[Execution]]:
        return self._results.pop(0)

    def close(self) -> None:
        pass


def _model_of(graph: StageGraph, key: str) -> str | None:
    inv = graph.invocation(key)
    return inv.model.model_name if inv.model else None


def _cap_groups(graph: StageGraph, ready: list[str], max_batch: int, workers: int) -> int:
    """Largest batch to form now: spread a signature's ready executions over the idle workers."""
    if max_batch <= 1 or workers <= 1:
        return max_batch
    counts = Counter(batch_signature(graph, key) for key in ready)
    counts.pop(None, None)
    largest = max(counts.values(), default=1)
    return max(1, min(max_batch, math.ceil(largest / workers)))


def walk(graph: StageGraph, store: CacheStore, pool, options: ExecutorOptions) -> GraphRun:
    """Compute every uncached node, a node only after the node it reads from, batching where allowed."""
    cached = {key for key in graph.nodes if store.has(key)}
    progress = RunProgress(graph, cached, options.executor, quiet=options.quiet)
    children = graph.dependents()
    done = set(cached)
    ready = [key for key, node in graph.nodes.items()
             if key not in done and (node.depends_on is None or node.depends_on in done)]
    busy: dict[str, list[str]] = {}
    plans_handle = pool.plans_handle(graph.plans) if hasattr(pool, "plans_handle") else graph.plans
    tasks_of = {key: (graph.nodes[key].plan_index, graph.nodes[key].inv_index) for key in graph.nodes}
    while ready or busy:
        idle = [w for w in pool.workers if w not in busy]
        batch = _cap_groups(graph, ready, options.max_batch, len(idle))
        for group in group_ready(graph, ready, batch):
            if not idle:
                break
            holders = [w for w in pool.preferred(_model_of(graph, group[0])) if w in idle]
            worker = holders[0] if holders else idle[0]
            idle.remove(worker)
            busy[worker] = group
            for key in group:
                ready.remove(key)
            progress.dispatched(worker, group)
            pool.submit(worker, plans_handle, [tasks_of[key] for key in group])
        worker, executions = pool.wait()
        group = busy.pop(worker)
        returned = {e.key for e in executions}
        if returned != set(group):
            raise SdbakeError(f"worker {worker} returned {len(returned)} of {len(group)} stage executions")
        progress.finished(worker, executions)
        done.update(returned)
        for key in group:
            for child in children[key]:
                if child not in done and child not in ready and all(c != child for g in busy.values() for c in g):
                    ready.append(child)
    progress.close()
    return GraphRun(progress, progress.executions)


def run_graph(graph: StageGraph, store: CacheStore, options: ExecutorOptions) -> GraphRun:
    """Compute the graph's missing stages into `store` with the chosen executor."""
    if options.executor not in EXECUTORS:
        raise SdbakeError(f"--executor {options.executor}: choose one of {', '.join(EXECUTORS)}")
    run_options = RunOptions(quiet=True, allow_pickle=options.allow_pickle)
    if options.executor == "local":
        pool = LocalPool(store, run_options)
    else:
        from sdbake.runner.executors.probe import check_shared_cache
        from sdbake.runner.executors.ray_pool import RayPool
        check_shared_cache(Path(store.root))
        pool = RayPool(store, run_options, graph, options)
    try:
        return walk(graph, store, pool, options)
    finally:
        pool.close()
