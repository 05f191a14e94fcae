"""Compute stage executions into the cache: the same code in process (local) and in a Ray actor.

A worker receives keys, never tensors: it reads each input state from the cache, runs the stage and
publishes the result with the cache's atomic rename. A key that is already published when the worker
comes to it (another worker, another run) is reported as a hit and not computed again.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdbake.runner.cache import CacheStore
from sdbake.runner.console import Console, RunOptions
from sdbake.runner.plan import Plan

Task = tuple[int, int]                 # (plan index, invocation index)


@dataclass
class Execution:
    """What happened to one stage execution, for progress, the summary and the tests."""
    key: str
    stage_id: str
    status: str                        # "ran" | "hit" (published by someone else first)
    worker: str
    started: float
    finished: float
    batch: int = 1                     # how many executions shared its sampling call
    models: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.finished - self.started


class StageWorker:
    """Holds a cache store and resident models (the process-wide model registry) between tasks."""

    def __init__(self, cache_root: str | Path, options: RunOptions, name: str | None = None):
        self.store = CacheStore(Path(cache_root))
        self.options = options
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.console = Console(quiet=True)
        self.store.warn = self.console.warn
        self._runtimes: dict[int, object] = {}
        self.models_loaded: set[str] = set()

    def _runtime(self, plans: list[Plan], plan_index: int):
        if plan_index not in self._runtimes:
            from sdbake.runner.runtime import Runtime
            self._runtimes[plan_index] = Runtime(plans[plan_index], self.options, self.console)
        return self._runtimes[plan_index]

    def forget_plans(self) -> None:
        """A new run: plans are indexed per run (the models stay loaded)."""
        self._runtimes.clear()

    def compute(self, plans: list[Plan], tasks: list[Task]) -> list[Execution]:
        """Compute the tasks' keys; two or more batchable sample executions share one sampler call."""
        started = time.time()
        pending, done = [], []
        for plan_index, inv_index in tasks:
            inv = plans[plan_index].invocations[inv_index]
            if self.store.has(inv.key):
                done.append(Execution(inv.key, inv.id, "hit", self.name, started, time.time()))
            else:
                pending.append((plan_index, inv_index))
        if len(pending) > 1:
            done += self._compute_batch(plans, pending)
        elif pending:
            done.append(self._compute_one(plans, *pending[0]))
        return done

    def _input_state(self, plans: list[Plan], plan_index: int, inv_index: int):
        plan = plans[plan_index]
        input_key = plan.invocations[inv_index - 1].state_key if inv_index > 0 else None
        return self._runtime(plans, plan_index).load_state(self.store, input_key)

    def _model_names(self, plans: list[Plan], plan_index: int, inv_index: int) -> list[str]:
        inv = plans[plan_index].invocations[inv_index]
        names = [inv.model.model_name] if inv.model else []
        self.models_loaded.update(names)
        return names

    def _compute_one(self, plans: list[Plan], plan_index: int, inv_index: int) -> Execution:
        inv = plans[plan_index].invocations[inv_index]
        started = time.time()
        runtime = self._runtime(plans, plan_index)
        state = self._input_state(plans, plan_index, inv_index)
        new_state, side_files = runtime.run_stage(inv, state)
        runtime.store_stage(self.store, inv, new_state, side_files)
        return Execution(inv.key, inv.id, "ran", self.name, started, time.time(),
                         models=self._model_names(plans, plan_index, inv_index))

    def _compute_batch(self, plans: list[Plan], tasks: list[Task]) -> list[Execution]:
        from sdbake.stages.sample import batchable
        started = time.time()
        members = []
        for plan_index, inv_index in tasks:
            state = self._input_state(plans, plan_index, inv_index)
            inv = plans[plan_index].invocations[inv_index]
            if inv.stage.type != "sample" or not batchable(inv.stage, state):
                # The graph said batchable, the state disagrees: a bug in the grouping, not a user error.
                raise RuntimeError(f"{inv.id} {inv.key[:12]} cannot join a sampling batch")
            members.append((self._runtime(plans, plan_index), inv, state))
        results = members[0][0].run_batch(members)
        finished = time.time()
        executions = []
        for (runtime, inv, _), new_state, (plan_index, inv_index) in zip(members, results, tasks):
            runtime.store_stage(self.store, inv, new_state, {})
            executions.append(Execution(inv.key, inv.id, "ran", self.name, started, finished, batch=len(tasks),
                                        models=self._model_names(plans, plan_index, inv_index)))
        return executions
