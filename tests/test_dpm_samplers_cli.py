"""The DPM samplers A1111 v1.10 has and sdbake added later, used as A1111 users name them: a recipe with
the A1111 label renders on the tiny model through the CLI, its infotext names the label (and the
schedule "Automatic" gave it), and it exports to ComfyUI with ComfyUI's own sampler id."""
from __future__ import annotations

import json

import pytest
from recipe_helpers import write
from sdbake.runner.cli import main
from sdbake.runner.interop.comfy_nodes import validate_workflow
from stage_helpers import recipe

torch = pytest.importorskip("torch")

# recipe sampler -> (A1111 label and schedule in the infotext, its `Eta`, the id import reads back, the
# ComfyUI id and schedule the export writes). ComfyUI's eta-0 ids write `Eta: 0.0` so that A1111 and
# import run them as they ran; A1111's "DPM fast" (eta 1, its default) writes no Eta.
CASES = {
    "DPM++ 2M SDE Heun": ("DPM++ 2M SDE Heun", "Exponential", None, "dpmpp_2m_sde_heun",
                          "dpmpp_2m_sde_heun", "exponential"),
    "DPM fast": ("DPM fast", "Normal", None, "dpm_fast_a1111", "dpm_fast", "normal"),
    "dpm_fast": ("DPM fast", "Normal", "0.0", "dpm_fast", "dpm_fast", "normal"),
    "DPM adaptive": ("DPM adaptive", "Normal", None, "dpm_adaptive_a1111", "dpm_adaptive", "normal"),
    "dpm_adaptive": ("DPM adaptive", "Normal", "0.0", "dpm_adaptive", "dpm_adaptive", "normal"),
}
# the whole-range samplers also run the slice a hires pass hands them
HIRES = '\n[[stages]]\ntype = "hires"\nscale = 2.0\nsteps = 3\ndenoise = 0.5\nupscaler = "latent-bilinear"\n'


def label_recipe(model, sampler: str, hires: bool = False) -> str:
    stages = '[[stages]]\ntype = "sample"\n' + (HIRES if hires else "") + '\n[[stages]]\ntype = "save"\npath = "x.png"\n'
    return recipe(model, stages, sampler=sampler, steps=4).replace('scheduler = "karras"', 'scheduler = "Automatic"')


@pytest.mark.parametrize("sampler", CASES)
def test_the_label_renders_and_its_infotext_imports_back_to_the_same_sampler(tmp_path, tiny_model_dir, sampler):
    from PIL import Image
    from sdbake.stages.output.infotext import parse_infotext
    try:
        import tomllib
    except ModuleNotFoundError:         # Python 3.10
        import tomli as tomllib
    label, schedule, eta, imported_id, *_ = CASES[sampler]
    whole_range = sampler != "DPM++ 2M SDE Heun"
    path = write(tmp_path, "r.toml", label_recipe(tiny_model_dir, sampler, hires=whole_range))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 0
    (image,) = (tmp_path / "out").rglob("x.png")
    assert Image.open(image).size == ((128, 128) if whole_range else (64, 64))
    params = parse_infotext(Image.open(image).info["parameters"])[2]
    assert (params["Sampler"], params["Schedule type"], params.get("Eta")) == (label, schedule, eta)
    out = tmp_path / "imported.toml"
    assert main(["import", str(image), "-o", str(out), "--model", f"{params['Model']}={tiny_model_dir}"]) == 0
    assert tomllib.loads(out.read_text())["defaults"]["sampler"] == imported_id


@pytest.mark.parametrize("sampler", CASES)
def test_the_label_exports_comfyuis_id(tmp_path, tiny_single_file, sampler, capsys):
    *_, comfy_id, scheduler = CASES[sampler]
    path = write(tmp_path, "r.toml", label_recipe(tiny_single_file, sampler))
    out = tmp_path / "workflow.json"
    strict = [] if sampler in ("DPM fast", "DPM adaptive") else ["--strict"]
    assert main(["export", str(path), "--to", "comfyui", "-o", str(out), *strict]) == 0
    workflow = json.loads(out.read_text())
    assert validate_workflow(workflow) == []
    (node,) = [node for node in workflow.values() if node["class_type"] == "KSamplerAdvanced"]
    assert (node["inputs"]["sampler_name"], node["inputs"]["scheduler"]) == (comfy_id, scheduler)
    if not strict:      # A1111's eta-1 solvers are not ComfyUI's eta-0 ones: said, not hidden
        assert (f"warning: stage sample (sample): sampler {CASES[sampler][3]} is not one of ComfyUI's KSampler "
                f"samplers: exported as {comfy_id} (A1111's {sampler} runs with eta 1") in capsys.readouterr().err


def test_import_reads_eta_to_the_sampler_a1111_ran_and_says_when_none_runs_it(tmp_path):
    text = ("a red circle\nSteps: 20, Sampler: DPM adaptive, Schedule type: Automatic, CFG scale: 7, Seed: 5, "
            "Size: 512x512, Model: v1-5-pruned-emaonly, Version: v1.10.1\n")
    source, out = write(tmp_path, "a.txt", text), tmp_path / "a.toml"
    for eta, sampler in ((None, "dpm_adaptive_a1111"), ("0", "dpm_adaptive"), ("0.5", "dpm_adaptive_a1111")):
        source.write_text(text if eta is None else text.replace("CFG scale: 7,", f"CFG scale: 7, Eta: {eta},"))
        assert main(["import", str(source), "-o", str(out), "--force", "--model",
                     f"v1-5-pruned-emaonly={tmp_path}"]) == 0
        recipe_text = out.read_text()
        assert f'sampler = "{sampler}"' in recipe_text
        note = ("# A1111 ran DPM adaptive with eta 0.5 (the infotext's `Eta`): sdbake's dpm_adaptive_a1111 runs "
                "with eta 1, so the same settings give another image.")
        assert (note in recipe_text, "# unmapped: Eta: 0.5" in recipe_text) == (eta == "0.5",) * 2


def test_dpm_adaptive_with_prompt_editing_runs_past_the_schedule_on_its_last_prompt(tmp_path, tiny_model_dir,
                                                                                    monkeypatch):
    # A1111 schedules prompts over model calls; dpm_adaptive makes more calls than steps, and the calls
    # past the schedule's end keep its last prompt, as A1111's (stages/conditioning.py _pick)
    from stage_helpers import count_denoiser_calls, render_text
    seen = count_denoiser_calls(monkeypatch)
    text = recipe(tiny_model_dir, '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "x.png"\n',
                  sampler="dpm_adaptive", steps=4, prompt="[a red circle:a blue square:0.5]")
    result = render_text(tmp_path, text)
    assert len(seen) > 4 and len(seen) % 3 == 0 and result.outputs[0].exists()
