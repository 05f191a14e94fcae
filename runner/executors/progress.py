"""Progress of a whole run over the graph, and the summary table at its end."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from sdbake.runner.executors.worker import Execution
from sdbake.runner.graph import StageGraph


@dataclass
class WorkerActivity:
    ran: int = 0
    hits: int = 0
    calls: int = 0
    busy_s: float = 0.0
    doing: str = "idle"
    models: set[str] = field(default_factory=set)


class RunProgress:
    """Points done / total, stage executions done / needed, cache hits, per-worker activity, ETA."""

    def __init__(self, graph: StageGraph, cached: set[str], executor: str, quiet: bool = False, stream=None):
        self.graph = graph
        self.cached = set(cached)
        self.done: set[str] = set(cached)
        self.executor = executor
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self.workers: dict[str, WorkerActivity] = {}
        self.executions: list[Execution] = []

    @property
    def needed(self) -> int:
        return len(self.graph.nodes) - len(self.cached)

    def points_done(self) -> int:
        return sum(1 for keys in self.graph.point_keys if all(key in self.done for key in keys))

    def dispatched(self, worker: str, keys: list[str]) -> None:
        ids = sorted({self.graph.invocation(key).id for key in keys})
        self.workers.setdefault(worker, WorkerActivity()).doing = f"{'+'.join(ids)} x{len(keys)}"

    def finished(self, worker: str, executions: list[Execution]) -> None:
        activity = self.workers.setdefault(worker, WorkerActivity())
        activity.calls += 1
        activity.doing = "idle"
        if executions:
            activity.busy_s += max(e.finished for e in executions) - min(e.started for e in executions)
        for execution in executions:
            self.executions.append(execution)
            self.done.add(execution.key)
            activity.models.update(execution.models)
            if execution.status == "ran":
                activity.ran += 1
            else:
                activity.hits += 1
        self._draw()

    def eta_s(self) -> float | None:
        computed = len(self.done) - len(self.cached)
        if computed == 0:
            return None
        elapsed = time.perf_counter() - self.started
        return elapsed / computed * (self.needed - computed)

    def line(self) -> str:
        computed = len(self.done) - len(self.cached)
        eta = self.eta_s()
        busy = ", ".join(f"{name}: {a.doing}" for name, a in sorted(self.workers.items()))
        return (f"points {self.points_done()}/{len(self.graph.plans)}, stage executions {computed}/{self.needed} "
                f"({len(self.cached)} cached), ETA {'?' if eta is None else f'{eta:.0f}s'} | {busy}")

    def _draw(self) -> None:
        if self.quiet:
            return
        if self.tty:
            print(f"\r{self.line()[:160]:<160}", end="", file=self.stream, flush=True)
        else:
            print(self.line(), file=self.stream, flush=True)

    def summary(self) -> dict:
        elapsed = time.perf_counter() - self.started
        ran = [e for e in self.executions if e.status == "ran"]
        return {
            "executor": self.executor, "points": len(self.graph.plans), "points_done": self.points_done(),
            "stage_executions": {"naive": self.graph.naive, "distinct": len(self.graph.nodes),
                                 "cached_before": len(self.cached), "ran": len(ran),
                                 "published_by_others": len(self.executions) - len(ran)},
            "batched_calls": len({(e.worker, e.started) for e in ran if e.batch > 1}),
            "elapsed_s": round(elapsed, 3),
            "workers": {name: {"ran": a.ran, "hits": a.hits, "calls": a.calls, "busy_s": round(a.busy_s, 3),
                               "models": sorted(a.models)} for name, a in sorted(self.workers.items())},
        }

    def table(self) -> list[str]:
        summary = self.summary()
        counts = summary["stage_executions"]
        head = (f"{summary['points_done']}/{summary['points']} points with the {self.executor} executor in "
                f"{summary['elapsed_s']:.1f}s: {counts['ran']} stage executions ran, {counts['cached_before']} "
                f"were cached, {counts['published_by_others']} published by another run meanwhile "
                f"({counts['distinct']} distinct, {counts['naive']} naive)")
        lines = [head, f"{'worker':<28} {'ran':>5} {'hits':>5} {'calls':>6} {'busy s':>8}  models"]
        for name, row in summary["workers"].items():
            lines.append(f"{name:<28} {row['ran']:>5} {row['hits']:>5} {row['calls']:>6} {row['busy_s']:>8.1f}  "
                         f"{', '.join(row['models']) or '-'}")
        return lines

    def close(self) -> None:
        if not self.quiet and self.tty:
            print(file=self.stream)
