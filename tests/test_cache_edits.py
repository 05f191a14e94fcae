"""Edit a 5-stage recipe and re-run: only what the edit changed is computed (issue 6 acceptance).

The recipe is encode -> sample (steps 0-10) -> sample (10-12) -> hires -> save on the tiny model. Denoiser
calls are counted by wrapping `Denoiser.__call__`, so "the base stages are hits" is proven by the
number of model evaluations, not only by the runner's own reports.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from recipe_helpers import txt2img, write

pytest.importorskip("torch")

STEPS, SPLIT, HIRES_STEPS = 12, 10, 3          # euler: one denoiser call per step
COMPUTE_STAGES = ["encode", "sample-1", "sample-2", "hires"]


def hires(denoise: float = 0.5) -> str:
    return f'[[stages]]\ntype = "hires"\nscale = 1.5\ndenoise = {denoise}\nsteps = {HIRES_STEPS}\n'


def five_stages(model: Path, *, path="out/a.png", denoise=0.5, seed=42) -> str:
    return txt2img(model, steps=STEPS, split=SPLIT, extra_stages=hires(denoise), path=path, seed=seed,
                   name="five")


@pytest.fixture
def denoiser_calls(monkeypatch) -> list[int]:
    """A list that grows by one per D(x, sigma) evaluation, in any stage."""
    from sdbake.stages.denoiser import Denoiser
    calls: list[int] = []
    original = Denoiser.__call__

    def counting(self, x, sigma):
        calls.append(1)
        return original(self, x, sigma)
    monkeypatch.setattr(Denoiser, "__call__", counting)
    return calls


@pytest.fixture
def render(tmp_path, monkeypatch):
    """Render recipe text through one cache under tmp_path; returns {stage id: "hit" | "ran"} and outputs."""
    from sdbake.runner.api import render as run
    from sdbake.schemas.loader import load_recipe

    def go(text: str):
        recipe = write(tmp_path, "five.toml", text)
        result = run(load_recipe(recipe), output_root=tmp_path / "out", cache_dir=tmp_path / "cache",
                     threads=1)
        return {r.id: r.status for r in result.reports}, result.outputs
    return go


def pixels(path: Path) -> bytes:
    from PIL import Image
    with Image.open(path) as image:
        return image.tobytes()


def test_first_run_computes_every_stage(render, tiny_model_dir, denoiser_calls):
    statuses, outputs = render(five_stages(tiny_model_dir))
    assert statuses == dict.fromkeys(COMPUTE_STAGES + ["save"], "ran")
    assert len(denoiser_calls) == STEPS + HIRES_STEPS
    assert [p.name for p in outputs] == ["a.png"]


def test_unchanged_rerun_hits_every_stage(render, tiny_model_dir, denoiser_calls):
    render(five_stages(tiny_model_dir))
    denoiser_calls.clear()
    statuses, outputs = render(five_stages(tiny_model_dir))
    assert statuses == dict.fromkeys(COMPUTE_STAGES + ["save"], "hit")
    assert denoiser_calls == [] and outputs[0].is_file()


def test_changing_only_the_save_path_runs_no_sampling_step(render, tiny_model_dir, denoiser_calls):
    _, (first,) = render(five_stages(tiny_model_dir))
    denoiser_calls.clear()
    statuses, (second,) = render(five_stages(tiny_model_dir, path="elsewhere/b.png"))
    assert denoiser_calls == []
    assert statuses == dict(dict.fromkeys(COMPUTE_STAGES, "hit"), save="ran")
    assert second.name == "b.png" and pixels(second) == pixels(first)


def test_changing_the_hires_denoise_reuses_the_base_sampling(render, tiny_model_dir, denoiser_calls):
    render(five_stages(tiny_model_dir))
    denoiser_calls.clear()
    statuses, _ = render(five_stages(tiny_model_dir, denoise=0.6, path="out/c.png"))
    assert statuses == {"encode": "hit", "sample-1": "hit", "sample-2": "hit", "hires": "ran", "save": "ran"}
    assert len(denoiser_calls) == HIRES_STEPS


def test_changing_the_seed_misses_every_stage(render, tiny_model_dir, denoiser_calls):
    render(five_stages(tiny_model_dir))
    denoiser_calls.clear()
    statuses, _ = render(five_stages(tiny_model_dir, seed=43, path="out/d.png"))
    assert statuses == dict.fromkeys(COMPUTE_STAGES + ["save"], "ran")
    assert len(denoiser_calls) == STEPS + HIRES_STEPS


def test_a_renamed_copy_of_the_model_hits_every_compute_stage(render, tiny_model_dir, denoiser_calls,
                                                              tmp_path):
    _, (first,) = render(five_stages(tiny_model_dir))
    renamed = shutil.copytree(tiny_model_dir, tmp_path / "another-name-for-the-model")
    denoiser_calls.clear()
    statuses, (second,) = render(five_stages(renamed, path="out/e.png"))
    assert denoiser_calls == []
    # The save stage embeds the recipe, whose checkpoint path changed: it re-decodes, nothing more.
    assert statuses == dict(dict.fromkeys(COMPUTE_STAGES, "hit"), save="ran")
    assert pixels(second) == pixels(first)


def test_a_cached_run_equals_an_uncached_run(render, tiny_model_dir, tmp_path):
    from sdbake.runner.api import render as run
    from sdbake.schemas.loader import load_recipe
    render(five_stages(tiny_model_dir))
    _, (cached,) = render(five_stages(tiny_model_dir, path="out/f.png"))
    recipe = write(tmp_path, "fresh.toml", five_stages(tiny_model_dir, path="fresh.png"))
    fresh = run(load_recipe(recipe), output_root=tmp_path / "fresh", no_cache=True, threads=1).outputs[0]
    assert pixels(cached) == pixels(fresh)


def test_refresh_recomputes_only_the_named_stage_and_no_cache_touches_no_cache(
        render, tiny_model_dir, denoiser_calls, tmp_path, capsys, monkeypatch):
    from sdbake.runner.cache import CacheStore
    from sdbake.runner.cli import main
    render(five_stages(tiny_model_dir))
    entries = sorted(e.key for e in CacheStore(tmp_path / "cache").entries())
    command = ["run", str(tmp_path / "five.toml"), "--out", str(tmp_path / "out"),
               "--cache-dir", str(tmp_path / "cache")]
    denoiser_calls.clear()
    capsys.readouterr()
    assert main([*command, "--refresh", "hires"]) == 0
    stderr = capsys.readouterr().err
    assert "sample-2: HIT" in stderr and "hires: ran" in stderr and "save: HIT" in stderr
    assert len(denoiser_calls) == HIRES_STEPS

    denoiser_calls.clear()
    assert main([*command, "--no-cache"]) == 0
    assert "HIT" not in capsys.readouterr().err and len(denoiser_calls) == STEPS + HIRES_STEPS
    assert sorted(e.key for e in CacheStore(tmp_path / "cache").entries()) == entries
