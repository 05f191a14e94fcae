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

# A1111 label -> (the schedule "Automatic" is for it, ComfyUI's id the export writes)
LABELS = {"DPM++ 2M SDE Heun": ("Exponential", "dpmpp_2m_sde_heun")}


def label_recipe(model, label: str) -> str:
    text = recipe(model, '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "x.png"\n',
                  sampler=label, steps=4)
    return text.replace('scheduler = "karras"', 'scheduler = "Automatic"')


@pytest.mark.parametrize("label", LABELS)
def test_the_a1111_label_renders_and_the_infotext_names_it(tmp_path, tiny_model_dir, label):
    from PIL import Image
    from sdbake.stages.output.infotext import parse_infotext
    path = write(tmp_path, "r.toml", label_recipe(tiny_model_dir, label))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 0
    (image,) = (tmp_path / "out").rglob("x.png")
    params = parse_infotext(Image.open(image).info["parameters"])[2]
    assert (params["Sampler"], params["Schedule type"]) == (label, LABELS[label][0])


@pytest.mark.parametrize("label", LABELS)
def test_the_a1111_label_exports_comfyuis_id(tmp_path, tiny_single_file, label):
    path = write(tmp_path, "r.toml", label_recipe(tiny_single_file, label))
    out = tmp_path / "workflow.json"
    assert main(["export", str(path), "--to", "comfyui", "-o", str(out), "--strict"]) == 0
    workflow = json.loads(out.read_text())
    assert validate_workflow(workflow) == []
    (sampler,) = [node for node in workflow.values() if node["class_type"] == "KSamplerAdvanced"]
    assert (sampler["inputs"]["sampler_name"], sampler["inputs"]["scheduler"]) == (LABELS[label][1], "exponential")
