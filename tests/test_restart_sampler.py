"""A1111's "Restart" sampler as its users name it: a recipe with the label renders on the tiny model through
the CLI with A1111's model calls and restart, the infotext says "Sampler: Restart", prompts are scheduled
over two model calls per step (A1111's sampler table marks it second_order), and the ComfyUI export says
what stands in for it."""
from __future__ import annotations

import json
from itertools import pairwise

import pytest
from recipe_helpers import write
from sdbake.runner.cli import main
from sdbake.runner.interop.comfy_nodes import validate_workflow
from stage_helpers import count_denoiser_calls, recipe

torch = pytest.importorskip("torch")


def restart_recipe(model, steps: int) -> str:
    text = recipe(model, '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "x.png"\n',
                  sampler="Restart", steps=steps)
    return text.replace('scheduler = "karras"', 'scheduler = "Automatic"')


def test_restart_renders_through_the_cli_with_a1111s_restart_and_label(tmp_path, tiny_model_dir, monkeypatch):
    import numpy as np
    from PIL import Image
    from sdbake.stages.output.infotext import parse_infotext
    calls = count_denoiser_calls(monkeypatch)
    path = write(tmp_path, "r.toml", restart_recipe(tiny_model_dir, 20))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 0
    (image,) = (tmp_path / "out").rglob("x.png")
    params = parse_infotext(Image.open(image).info["parameters"])[2]
    assert (params["Sampler"], params["Schedule type"], params["Steps"]) == ("Restart", "Karras", "20")
    assert np.asarray(Image.open(image).convert("RGB"), dtype=np.float64).std() > 1.0
    # 20 Heun steps (11 down the schedule, 9 in the restart segment), the last one Euler: 39 model calls;
    # the sigma goes back up exactly once, from ~0.1 to ~2
    print(f"restart 20 steps on the tiny model: {len(calls)} model calls")
    assert len(calls) == 39
    ups = [(low, high) for low, high in pairwise(calls) if high > low * 1.5]
    assert len(ups) == 1 and 0.05 < ups[0][0] < 0.2 and 1.5 < ups[0][1] < 2.5


def test_restart_prompts_are_scheduled_over_two_model_calls_per_step():
    from sdbake.stages.sampler_run import schedule_length
    # A1111's setup_conds: total_steps = steps * 2 for a second_order sampler, Restart included
    assert schedule_length("restart", 20) == 40
    assert schedule_length("heun", 20) == 40 and schedule_length("euler", 20) == 20


def test_restart_exports_heun_to_comfyui_with_a_warning(tmp_path, tiny_single_file, capsys):
    path = write(tmp_path, "r.toml", restart_recipe(tiny_single_file, 8))
    out = tmp_path / "workflow.json"
    assert main(["export", str(path), "--to", "comfyui", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    workflow = json.loads(out.read_text())
    assert validate_workflow(workflow) == []
    (sampler,) = [node for node in workflow.values() if node["class_type"] == "KSamplerAdvanced"]
    assert (sampler["inputs"]["sampler_name"], sampler["inputs"]["scheduler"]) == ("heun", "karras")
    assert ("warning: stage sample (sample): sampler restart is not one of ComfyUI's KSampler samplers: "
            "exported as heun") in err
    assert main(["export", str(path), "--to", "comfyui", "-o", str(tmp_path / "strict.json"), "--strict"]) == 1


def test_a_split_restart_run_is_refused_at_validate(tmp_path, tiny_model_dir, capsys):
    text = recipe(tiny_model_dir, '[[stages]]\ntype = "sample"\nend = 10\n\n[[stages]]\ntype = "sample"\n',
                  sampler="Restart", steps=20)
    path = write(tmp_path, "r.toml", text)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    why = ("Restart (restart) chooses its own steps over the range it is given, so a split run would differ from "
           "one run: run it in one sample stage, or split with another sampler")
    # both parts: the one that ends early and the one that continues (each at its own place in the recipe)
    assert err == [f"{path}:20:1: stages[1].sampler: {why}", f"{path}:24:1: stages[2].sampler: {why}"]
