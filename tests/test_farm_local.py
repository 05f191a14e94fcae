"""The stage graph of a run, the local executor, batched points and the shared-cache probe (no Ray)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from farm_helpers import entry_count, pixels_by_name, write_sweep
from sdbake.runner.cache import CacheStore
from sdbake.runner.executors import ExecutorOptions, run_graph
from sdbake.runner.executors.probe import check_shared_cache
from sdbake.runner.graph import StageGraph
from sdbake.runner.sweep.matrix import load_sweep
from sdbake.runner.sweep.run import point_plans, run_sweep
from sdbake.schemas.errors import CacheError, SdbakeError


def sdbake(*args, cwd):
    env = dict(os.environ, SDBAKE_THREADS="1")
    return subprocess.run([sys.executable, "-m", "sdbake", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600, check=False)


def test_graph_merges_points_and_keeps_shared_prefixes_once(tmp_path, tiny_model_dir):
    # 2 seeds x 3 cfgs: encode depends on the seed only, so it is shared by the three cfg points of a seed
    recipe = write_sweep(tmp_path, tiny_model_dir, 'seed = "1-2"\n"defaults.cfg" = [4.0, 5.0, 6.0]')
    graph = StageGraph.build(point_plans(load_sweep(recipe, [], []), tmp_path / "out", threads=1))
    kinds = [graph.invocation(key).id for key in graph.nodes]
    assert (kinds.count("encode"), kinds.count("sample"), kinds.count("save")) == (2, 6, 6)
    assert graph.naive == 18 and len(graph.nodes) == 14
    path = [graph.invocation(key).id for key in graph.critical_path()]
    assert path == ["encode", "sample", "save"]
    for key, node in graph.nodes.items():            # each sample reads the encode of its own seed
        if graph.invocation(key).id == "sample":
            assert graph.invocation(node.depends_on).id == "encode"
            assert graph.plan_of(node.depends_on).recipe.defaults.seed == graph.plan_of(key).recipe.defaults.seed


def test_plan_shows_critical_path_and_stages_per_model(tmp_path, tiny_model_dir):
    recipe = write_sweep(tmp_path, tiny_model_dir, 'seed = "1-2"\n"defaults.cfg" = [4.0, 5.0, 6.0]')
    result = sdbake("plan", str(recipe), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stage executions: 14 needed, 18 naive" in result.stdout
    assert "critical path: 3 stages (encode -> sample -> save)" in result.stdout
    assert "stages per model: (no model) 6, tiny-sd1 8" in result.stdout


@pytest.mark.slow
def test_local_executor_and_batches_render_what_point_by_point_renders(tmp_path, tiny_model_dir):
    recipe = write_sweep(tmp_path, tiny_model_dir, 'seed = "1-4"\n"defaults.cfg" = [5.0, 7.0]', hires=True)
    runs = {}
    for name, executor in (("plain", None), ("local", ExecutorOptions(quiet=True)),
                           ("batched", ExecutorOptions(max_batch=8, quiet=True))):
        outcome = run_sweep(recipe, output_root=tmp_path / name, cache_dir=tmp_path / f"c-{name}", threads=1,
                            executor=executor)
        runs[name] = outcome
    reference = pixels_by_name(tmp_path / "plain")
    assert len(reference) == 9                                         # 8 points and the grid
    assert pixels_by_name(tmp_path / "local") == reference
    summary = runs["batched"].farm.summary
    assert summary["batched_calls"] == 1 and summary["stage_executions"]["ran"] == 28
    assert entry_count(tmp_path / "c-batched") == entry_count(tmp_path / "c-plain") == 28
    assert pixels_by_name(tmp_path / "batched") == reference


@pytest.mark.slow
def test_sixteen_seeds_on_the_demo_model_batched_equal_unbatched(tmp_path):
    import torch
    demo = Path(__file__).resolve().parents[1] / "models" / "demo"
    recipe = write_sweep(tmp_path, demo, 'seed = "1-16"', steps=8)
    for name, max_batch in (("unbatched", 1), ("batched", 16)):
        outcome = run_sweep(recipe, output_root=tmp_path / name, cache_dir=tmp_path / f"c-{name}", threads=1,
                            executor=ExecutorOptions(max_batch=max_batch, quiet=True))
        assert outcome.farm.summary["batched_calls"] == (1 if max_batch > 1 else 0)
    assert pixels_by_name(tmp_path / "batched") == pixels_by_name(tmp_path / "unbatched")
    assert len(pixels_by_name(tmp_path / "batched")) == 17                         # 16 images and the grid
    plans = point_plans(load_sweep(recipe, [], []), tmp_path / "batched", threads=1)
    for plan in plans:                        # the latents too, bit for bit, each in its own entry
        sample = next(inv for inv in plan.invocations if inv.id == "sample")
        latents = [CacheStore(tmp_path / f"c-{name}").get(sample.key).load_tensors()["latent"]
                   for name in ("unbatched", "batched")]
        assert torch.equal(*latents)


def test_batches_never_exceed_max_batch_nor_mix_samplers(tmp_path, tiny_model_dir):
    recipe = write_sweep(tmp_path, tiny_model_dir, 'seed = "1-5"\n"defaults.sampler" = ["euler", "heun"]', steps=2)
    plans = point_plans(load_sweep(recipe, [], []), tmp_path / "out", threads=1)
    run = run_graph(StageGraph.build(plans), CacheStore(tmp_path / "cache"), ExecutorOptions(max_batch=3,
                                                                                             quiet=True))
    batches = {}
    for execution in run.executions:
        if execution.stage_id == "sample":
            batches.setdefault(execution.started, []).append(execution)
    sizes = sorted(len(group) for group in batches.values())
    assert sizes == [2, 2, 3, 3]                                       # 5 euler + 5 heun, at most 3 a call
    graph = StageGraph.build(plans)
    for group in batches.values():
        assert len({graph.invocation(e.key).stage.sampler for e in group}) == 1


def test_json_summary_counts_points_and_executions(tmp_path, tiny_model_dir):
    recipe = write_sweep(tmp_path, tiny_model_dir, 'seed = "1-2"\n"defaults.cfg" = [4.0, 5.0]', steps=2)
    first = sdbake("run", str(recipe), "--executor", "local", "--json", "--cache-dir", "c", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["points_done"] == summary["points"] == 4
    assert summary["stage_executions"] == {"naive": 12, "distinct": 10, "cached_before": 0, "ran": 10,
                                           "published_by_others": 0}
    assert "4/4 points with the local executor" in first.stderr
    again = json.loads(sdbake("run", str(recipe), "--json", "--cache-dir", "c", cwd=tmp_path).stdout)
    assert again["stage_executions"]["cached_before"] == 10 and again["stage_executions"]["ran"] == 0


def test_probe_accepts_a_local_folder(tmp_path):
    check_shared_cache(tmp_path / "cache")
    assert not list((tmp_path / "cache" / "tmp" / "probe").rglob("entry"))       # it cleans up


def test_probe_refuses_a_folder_where_rename_replaces_the_first_writer(tmp_path, monkeypatch):
    import shutil
    real_rename = os.rename

    def clobbering_rename(source, target):       # as a filesystem that replaces a non-empty folder
        if os.path.isdir(target):
            shutil.rmtree(target)
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", clobbering_rename)
    with pytest.raises(CacheError, match="renaming a folder onto an existing one replaced it"):
        check_shared_cache(tmp_path / "cache")


def test_probe_refuses_a_folder_where_rename_fails_or_is_not_visible(tmp_path, monkeypatch):
    def failing_rename(source, target):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(CacheError, match="cannot be shared by workers: renaming a folder into place failed"):
        check_shared_cache(tmp_path / "cache")

    def copying_rename(source, target):          # a mount that shows the result late: nothing yet
        pass

    monkeypatch.setattr(os, "rename", copying_rename)
    with pytest.raises(CacheError, match="not visible at once"):
        check_shared_cache(tmp_path / "cache")


def test_ray_executor_refuses_an_unfit_cache_before_starting_anything(tmp_path, tiny_model_dir, monkeypatch):
    recipe = write_sweep(tmp_path, tiny_model_dir, 'seed = "1-2"', steps=2)
    plans = point_plans(load_sweep(recipe, [], []), tmp_path / "out", threads=1)
    monkeypatch.setattr(os, "rename", lambda source, target: None)
    monkeypatch.setitem(sys.modules, "ray", None)                  # would fail loudly if it got that far
    with pytest.raises(CacheError, match="cannot be shared by workers"):
        run_graph(StageGraph.build(plans), CacheStore(tmp_path / "cache"), ExecutorOptions(executor="ray"))


def test_without_ray_the_ray_executor_says_how_to_get_it(tmp_path, tiny_model_dir, monkeypatch):
    recipe = write_sweep(tmp_path, tiny_model_dir, 'seed = "1-2"', steps=2)
    plans = point_plans(load_sweep(recipe, [], []), tmp_path / "out", threads=1)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SdbakeError, match=r"--executor ray needs Ray: pip install 'sdbake\[ray\]'"):
        run_graph(StageGraph.build(plans), CacheStore(tmp_path / "cache"), ExecutorOptions(executor="ray"))
    assert not (tmp_path / "out").exists()


def test_check_suite_runs_as_one_graph_and_passes_its_goldens(tmp_path, tiny_model_dir):
    from sdbake.runner.check.run import CheckOptions, run_check
    from sdbake.runner.executors.render import precompute_suite
    suite = tmp_path / "suite"
    suite.mkdir()
    for name, cfg in (("one", 5.0), ("two", 7.0)):            # same seed: one shared encode
        text = write_sweep(suite, tiny_model_dir, "", name=name, steps=2).read_text()
        (suite / f"{name}.toml").write_text(text.replace("cfg = 6.0", f"cfg = {cfg}").replace("[matrix]\n", ""))
    golden = tmp_path / "golden"
    plain = run_check([str(suite)], CheckOptions(golden=golden, update=True, cache_dir=tmp_path / "c-plain"))
    assert [c.status for c in plain.cases] == ["added", "added"]
    farm = precompute_suite(sorted(suite.iterdir()), ExecutorOptions(max_batch=4, quiet=True),
                            cache_dir=tmp_path / "c-farm", device=None, threads=1)
    assert farm.summary["stage_executions"] == {"naive": 6, "distinct": 5, "cached_before": 0, "ran": 5,
                                                "published_by_others": 0}
    assert farm.summary["batched_calls"] == 1                  # the two samples differ only in cfg
    checked = run_check([str(suite)], CheckOptions(golden=golden, cache_dir=tmp_path / "c-farm",
                                                   executor=ExecutorOptions(max_batch=4, quiet=True)))
    assert [(c.status, c.message) for c in checked.cases] == [("pass", "identical bytes")] * 2
