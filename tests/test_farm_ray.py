"""The `ray` executor on a real local Ray cluster (loopback only, 2 workers of 1 CPU each)."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'sdbake[ray]'): the ray executor's "
                                        "tests need it")

from farm_helpers import entry_count, pixels_by_name, write_sweep
from sdbake.runner.cache import CacheStore
from sdbake.runner.executors import ExecutorOptions
from sdbake.runner.sweep.run import run_sweep

pytestmark = pytest.mark.slow           # a cluster start and worker processes importing torch: tens of seconds

SWEEP_12 = 'seed = "1-3"\n"defaults.cfg" = [4.0, 5.0, 6.0, 7.0]'        # encode shared by 4 cfg points


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module: 2 CPUs on 127.0.0.1, no dashboard."""
    if ray.is_initialized():
        ray.shutdown()
    # the workers inherit this process's environment, where conftest.py pins SDBAKE_THREADS=1 (the
    # thread count is in the plans' numerics)
    assert os.environ.get("SDBAKE_THREADS") == "1"
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             logging_level="warning")
    yield ray
    ray.shutdown()


def ray_options(**changes) -> ExecutorOptions:
    return ExecutorOptions(**{"executor": "ray", "workers": 2, "quiet": True, **changes})


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, tiny_model_dir):
    """The 12-point sweep rendered by the local executor: (recipe, output root, cache)."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = write_sweep(folder, tiny_model_dir, SWEEP_12, hires=True)
    run_sweep(recipe, output_root=folder / "out", cache_dir=folder / "cache", threads=1,
              executor=ExecutorOptions(quiet=True))
    return recipe, folder / "out", folder / "cache"


def test_sweep_on_two_workers_runs_each_shared_stage_once_and_equals_local(cluster, local_reference, tmp_path):
    recipe, local_out, local_cache = local_reference
    outcome = run_sweep(recipe, output_root=tmp_path / "out", cache_dir=tmp_path / "cache", threads=1,
                        executor=ray_options())
    ran = Counter(e.key for e in outcome.farm.executions if e.status == "ran")
    assert max(ran.values()) == 1                                       # no stage twice, cluster-wide
    store = CacheStore(tmp_path / "cache")
    shared = [e for e in store.entries() if e.info["stage"]["id"] == "encode"]
    assert len(shared) == 3                                             # one encode per seed, for 4 points each
    assert entry_count(tmp_path / "cache") == entry_count(local_cache) == len(ran) == 3 + 12 * 3
    assert {e.worker for e in outcome.farm.executions} == {"worker-1", "worker-2"}
    assert pixels_by_name(tmp_path / "out") == pixels_by_name(local_out)


def _actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::_StageActor"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_worker_killed_mid_run_is_replaced_and_the_run_completes(cluster, local_reference, tmp_path):
    recipe, local_out, _ = local_reference
    cache = tmp_path / "cache"
    killed = []

    def kill_one_worker_once_work_has_started():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            pids = _actor_pids() if (cache / "objects").is_dir() and entry_count(cache) >= 6 else []
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_once_work_has_started)
    killer.start()
    outcome = run_sweep(recipe, output_root=tmp_path / "out", cache_dir=cache, threads=1, executor=ray_options())
    killer.join()
    assert killed, "no worker was killed: the test did not test anything"
    store = CacheStore(cache)
    entries = store.entries()
    assert len(entries) == 3 + 12 * 3
    assert all(store.get(e.key, touch=False) is not None for e in entries)          # every entry verifies
    assert outcome.farm.summary["points_done"] == 12
    assert pixels_by_name(tmp_path / "out") == pixels_by_name(local_out)


def test_two_overlapping_sweeps_at_once_compute_nothing_already_published(cluster, tiny_model_dir, tmp_path):
    first = write_sweep(tmp_path, tiny_model_dir, 'seed = "1-3"\n"defaults.cfg" = [5.0, 7.0]', name="a", hires=True)
    second = write_sweep(tmp_path, tiny_model_dir, 'seed = "2-4"\n"defaults.cfg" = [5.0, 7.0]', name="b",
                         hires=True)
    cache = tmp_path / "cache"
    outcomes = {}

    def sweep(recipe):
        outcomes[recipe.stem] = run_sweep(recipe, output_root=tmp_path / recipe.stem, cache_dir=cache, threads=1,
                                          executor=ray_options(workers=1))

    threads = [threading.Thread(target=sweep, args=(recipe,)) for recipe in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(outcomes) == {"a", "b"}
    executions = [e for outcome in outcomes.values() for e in outcome.farm.executions]
    assert all(outcome.farm.executions for outcome in outcomes.values())
    published: dict[str, float] = {}
    for execution in sorted(executions, key=lambda e: e.finished):
        if execution.status == "ran":
            published.setdefault(execution.key, execution.finished)
    for execution in executions:
        if execution.status == "ran" and published[execution.key] < execution.finished:
            # a second computation of a key is only allowed when it started before the first was published
            assert execution.started <= published[execution.key], execution.stage_id
    # the save stages differ (their recipes differ), the shared seeds' encode/sample/hires are shared
    assert entry_count(cache) == len(published) == 4 * 1 + 8 * 2 + 12
