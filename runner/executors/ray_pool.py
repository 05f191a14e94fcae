"""The `ray` executor's workers: one long-lived Ray actor per device, keeping models resident.

Each actor method call is a Ray task with the actor's resources (`num_gpus=1` on a GPU run). Tasks
carry cache keys (a plan index and a stage index; the plans go to the object store once per run),
never tensors: the actor reads its inputs from the shared cache and publishes there. Ray restarts an
actor whose process dies and retries the call it was running; the retried call finds what the dead
process had published and computes only the rest.
"""
from __future__ import annotations

import os
from pathlib import Path

from sdbake.runner.cache import CacheStore
from sdbake.runner.console import RunOptions
from sdbake.runner.executors.probe import sees_beacon, write_beacon
from sdbake.schemas.errors import SdbakeError

TASK_RETRIES = 5


def import_ray():
    try:
        import ray
    except ImportError:
        raise SdbakeError("--executor ray needs Ray: pip install 'sdbake[ray]' (or pip install ray)") from None
    return ray


class _StageActor:
    """Body of the Ray actor (wrapped with ray.remote at run time, so importing this needs no Ray)."""

    def __init__(self, cache_root: str, options: RunOptions, name: str):
        from sdbake.runner.executors.worker import StageWorker
        self.worker = StageWorker(cache_root, options, name=name)
        self._plans: dict[str, list] = {}

    def pid(self) -> int:
        return os.getpid()

    def sees(self, path: str, nonce: str) -> bool:
        return sees_beacon(path, nonce)

    def compute(self, plans_box: list, tasks: list):
        import ray
        ref = plans_box[0]                   # boxed so Ray hands the reference over, not a copy per call
        plans = self._plans.get(ref.hex())
        if plans is None:
            self._plans = {ref.hex(): ray.get(ref)}
            self.worker.forget_plans()
            plans = self._plans[ref.hex()]
        return self.worker.compute(plans, tasks)


def start_ray(ray, address: str | None, cpus: int | None = None):
    """Connect to a cluster, or start a local one on the loopback interface for this run."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="warning")
    return True


class RayPool:
    def __init__(self, store: CacheStore, options: RunOptions, graph, executor_options):
        ray = self.ray = import_ray()
        self._started = start_ray(ray, executor_options.ray_address)
        numerics = graph.plans[0].numerics if graph.plans else None
        on_gpu = numerics is not None and numerics.device.startswith("cuda")
        resources = ray.cluster_resources()
        count = executor_options.workers or (int(resources.get("GPU", 0)) if on_gpu else
                                             max(1, int(resources.get("CPU", 1)) // max(1, numerics.threads
                                                                                            if numerics else 1)))
        if count < 1:
            raise SdbakeError("--executor ray: the cluster has no GPU for a cuda run (use --device cpu)")
        actor_class = ray.remote(max_restarts=-1, max_task_retries=TASK_RETRIES)(_StageActor)
        self.workers = [f"worker-{n + 1}" for n in range(count)]
        self.actors = {name: actor_class.options(num_cpus=1, num_gpus=1 if on_gpu else 0)
                       .remote(str(Path(store.root).resolve()), options, name) for name in self.workers}
        self._check_visible(store)
        self._pending: dict = {}             # object ref -> worker
        self._models: dict[str, set[str]] = {name: set() for name in self.workers}

    def _check_visible(self, store: CacheStore) -> None:
        path, nonce = write_beacon(store.root)
        try:
            answers = self.ray.get([actor.sees.remote(str(path.resolve()), nonce)
                                    for actor in self.actors.values()])
        finally:
            path.unlink(missing_ok=True)
        blind = [name for name, ok in zip(self.actors, answers) if not ok]
        if blind:
            raise SdbakeError(f"{store.root}: Ray worker(s) {', '.join(blind)} do not see the cache folder: it must "
                              "be on a filesystem every worker mounts at the same path (docs/scale.md)")

    def plans_handle(self, plans: list) -> list:
        return [self.ray.put(plans)]

    def preferred(self, model: str | None) -> list[str]:
        """Workers that have this model loaded first (model affinity), then the rest."""
        if model is None:
            return self.workers
        return sorted(self.workers, key=lambda name: model not in self._models[name])

    def submit(self, worker: str, plans_handle, tasks) -> None:
        self._pending[self.actors[worker].compute.remote(plans_handle, tasks)] = worker

    def wait(self):
        ray = self.ray
        (ref,), _ = ray.wait(list(self._pending), num_returns=1)
        worker = self._pending.pop(ref)
        try:
            executions = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, SdbakeError):
                raise cause from None
            raise
        for execution in executions:
            self._models[worker].update(execution.models)
        return worker, executions

    def pids(self) -> dict[str, int]:
        return dict(zip(self.actors, self.ray.get([a.pid.remote() for a in self.actors.values()])))

    def close(self) -> None:
        for actor in getattr(self, "actors", {}).values():
            self.ray.kill(actor)
        if self._started:
            self.ray.shutdown()
