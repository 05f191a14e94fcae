"""Export to ComfyUI then import back: every recipe in recipes/ comes back with the same plan keys for what
ComfyUI can express (the recipe less what the export warned it left out)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w
from sdbake.runner.interop.comfy_export import export_comfyui, input_name
from sdbake.runner.interop.comfy_import import import_workflow
from sdbake.runner.planning import PlanOptions, plan_recipe
from sdbake.schemas.loader import load_text

try:
    import tomllib
except ModuleNotFoundError:         # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").rglob("*.toml"))
# What the export leaves out or approximates, as the recipe says it (docs/interop.md).
APPROXIMATED_UPSCALERS = {"latent-nearest": "latent-nearest-exact", "latent-bilinear-antialiased": "latent-bilinear",
                          "latent-bicubic-antialiased": "latent-bicubic"}


def expressible(document: dict) -> dict:
    """The recipe as ComfyUI core nodes can render it."""
    document = json.loads(json.dumps(document))
    document["defaults"].pop("sdxl", None)
    stages = []
    for stage in document["stages"]:
        if stage["type"] == "intervene":
            continue
        stage.pop("sdxl", None)
        for field in ("regions", "tome_ratio", "tome_max_downsample"):
            stage.pop(field, None)
        if stage["type"] == "hires":
            stage["upscaler"] = APPROXIMATED_UPSCALERS.get(stage.get("upscaler"), stage.get("upscaler"))
            stage.pop("tiled", None)
        if stage["type"] == "inpaint":
            stage.update(blur=0, color_correction=False, area="whole")
        stages.append(stage)
    document["stages"] = stages
    return document


@pytest.fixture
def sdxl_files(tiny_sdxl, tiny_sdxl_refiner, tiny_sdxl_inpaint) -> dict[str, str]:
    """The SDXL recipes' checkpoints, absent here, mapped onto tiny models of their families."""
    return {"sd_xl_base_1.0.safetensors": str(tiny_sdxl[1]), "sd_xl_refiner_1.0.safetensors": str(tiny_sdxl_refiner[1]),
            "sd_xl_inpainting_0.1.safetensors": str(tiny_sdxl_inpaint[1])}


def plan_keys(document: dict, folder: Path, out: Path) -> tuple[dict, dict]:
    loaded = load_text(tomli_w.dumps(document), "toml", label="r.toml", folder=folder)
    plan = plan_recipe(loaded, PlanOptions(output_root=out, device="cpu", dtype="float32"))
    keys = {inv.id: inv.key for inv in plan.invocations if inv.stage.type != "save"}
    outputs = {inv.id: inv.outputs for inv in plan.invocations if inv.stage.type == "save"}
    return keys, outputs


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_export_then_import_gives_the_same_plan_keys(tmp_path, path, request):
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    if "sdxl" in path.parts:      # the SDXL checkpoints are not installed: both sides use the same tiny models
        files = request.getfixturevalue("sdxl_files")
        for entry in document["models"].values():
            entry["checkpoint"] = files[entry["checkpoint"]]
    original = expressible(document)
    keys, outputs = plan_keys(original, path.parent, tmp_path / "out")

    loaded = load_text(tomli_w.dumps(document), "toml", label=str(path), folder=path.parent)
    plan = plan_recipe(loaded, PlanOptions(output_root=tmp_path / "out", device="cpu", dtype="float32"))
    result = export_comfyui(loaded, {inv.id: inv.outputs for inv in plan.invocations if inv.outputs})
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(result.workflow))
    # what a user gives `sdbake import --model`: each name the workflow uses, mapped to the recipe's file
    names = {input_name(stage[key]): stage[key] for stage in document["stages"] for key in ("mask", "image")
             if stage.get(key)}
    for node in result.workflow.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            entry = node["_meta"]["title"].removeprefix("Load Checkpoint: ")
            names[node["inputs"]["ckpt_name"]] = document["models"][entry]["checkpoint"]
    imported, notes = import_workflow(workflow, names)
    assert notes == []
    assert plan_keys(imported, path.parent, tmp_path / "out") == (keys, outputs)
    assert len(keys) == len([s for s in original["stages"] if s["type"] != "save"])
