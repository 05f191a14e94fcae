"""ComfyUI workflows in: the corpus in tests/data/comfyui (API and UI format) imports, validates and renders
on the demo model; nodes sdbake cannot express are one error naming them all."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from PIL import Image
from sdbake.runner.cli import main
from sdbake.runner.interop.comfy_import import import_workflow
from sdbake.runner.interop.comfy_workflow import widget_names
from sdbake.schemas.errors import RecipeError

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"
CORPUS = REPO / "tests" / "data" / "comfyui"
WORKFLOWS = sorted(CORPUS.glob("*.json"))

# What each workflow becomes: the stages after encode, each as (type, the fields that say what it does).
EXPECTED = {
    "default_txt2img": [("sample", {}), ("save", {"path": "ComfyUI.png"})],
    "two_pass_advanced": [("sample", {"start": 0, "end": 6}), ("sample", {"start": 6, "end": 10}),
                          ("save", {"path": "two-pass/final.png"})],
    "hires_latent": [("sample", {}), ("hires", {"upscaler": "latent-nearest-exact", "scale": 2.0, "steps": 6,
                                                "denoise": 0.5}), ("save", {})],
    "hires_advanced": [("sample", {}), ("hires", {"upscaler": "latent-bilinear", "scale": 2.0, "steps": 6,
                                                  "denoise": 0.5}), ("save", {})],
    "hires_pixel": [("sample", {}), ("save", {"path": "hires/base.png"}),
                    ("hires", {"upscaler": "lanczos", "scale": 1.5, "steps": 6, "denoise": 0.55}),
                    ("save", {"path": "hires/pixel.png"})],
    "hires_model": [("sample", {}), ("hires", {"scale": 2.0, "steps": 5, "denoise": 0.5}), ("save", {})],
    "inpaint_for_inpainting": [("inpaint", {"loops": 1, "steps": 8, "denoise": 1.0, "blur": 0}), ("save", {})],
    "inpaint_loops": [("sample", {}), ("save", {}), ("inpaint", {"loops": 2, "seed": 5, "denoise": [0.6, 0.4]}),
                      ("save", {})],
    "lora_clip_skip": [("sample", {}), ("save", {})],
    "and_prompt": [("sample", {}), ("save", {})],
    "img2img": [("sample", {"start": 5, "end": 13}), ("save", {})],    # KSampler 8 steps, denoise 0.6: 13 steps
}


def demo_lora(path: Path, seed: int) -> str:
    """A kohya-format LoRA for the demo model's attention projections, made from its weights' shapes."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for file, prefix, targets, scale in (
            (DEMO / "unet" / "diffusion_pytorch_model.safetensors", "lora_unet_", ("to_q", "to_k", "to_v", "to_out.0"), 0.3),
            (DEMO / "text_encoder" / "model.safetensors", "lora_te_text_model_", ("q_proj", "k_proj", "v_proj", "out_proj"), 0.05)):
        with safe_open(str(file), "pt") as weights:
            for key in sorted(weights.keys()):
                module = key.removesuffix(".weight")
                if key.endswith(".weight") and module.endswith(targets):
                    out_features, in_features = weights.get_slice(key).get_shape()
                    name = prefix + module.replace(".", "_")
                    lora[f"{name}.lora_down.weight"] = torch.randn(4, in_features, generator=generator) * scale
                    lora[f"{name}.lora_up.weight"] = torch.randn(out_features, 4, generator=generator) * scale
                    lora[f"{name}.alpha"] = torch.tensor(4.0)
    save_file(lora, str(path))
    return str(path)


@pytest.fixture(scope="module")
def model_map(tmp_path_factory) -> dict[str, str]:
    """The workflows' file names mapped onto this checkout: the demo model, LoRAs and an ESRGAN built for it."""
    from safetensors.torch import save_file
    from test_upscaler_model import basicsr_weights
    folder = tmp_path_factory.mktemp("comfy-files")
    save_file({k: v.contiguous() for k, v in basicsr_weights().items()}, str(folder / "esrgan.safetensors"))
    return {"v1-5-pruned-emaonly.safetensors": str(DEMO), "style.safetensors": demo_lora(folder / "style.safetensors", 1),
            "detail.safetensors": demo_lora(folder / "detail.safetensors", 2),
            "4x-tiny-esrgan.safetensors": str(folder / "esrgan.safetensors"),
            "input.png": str(CORPUS / "input.png"), "mask.png": str(CORPUS / "mask.png")}


def write_recipe(folder: Path, data: dict) -> Path:
    path = folder / f"{data['name']}.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_each_workflow_imports_validates_and_renders_on_the_demo_model(tmp_path, workflow, model_map):
    data, notes = import_workflow(workflow, model_map)
    assert notes == []
    stages = [(s["type"], {k: s[k] for k in fields}) for s, (_t, fields) in
              zip(data["stages"][1:], EXPECTED[workflow.stem.split(".")[0]])]
    assert stages == EXPECTED[workflow.stem.split(".")[0]]
    recipe = write_recipe(tmp_path, data)
    assert main(["validate", str(recipe)]) == 0
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "--no-cache"]) == 0
    saved = sorted((tmp_path / "out").rglob("*.png"))
    assert len(saved) == sum(s["type"] == "save" for s in data["stages"])
    for path in saved:
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        assert pixels.std() > 5.0            # a picture, not a flat or empty image


def test_the_ui_and_api_formats_of_a_workflow_import_alike():
    for name in ("default_txt2img", "two_pass_advanced"):
        api, _ = import_workflow(CORPUS / f"{name}.api.json", {})
        ui, _ = import_workflow(CORPUS / f"{name}.ui.json", {})
        assert ui.pop("name") == f"{name}.ui" and api.pop("name") == f"{name}.api"
        assert ui == api


def test_settings_map_as_comfyui_users_know_them(model_map):
    lora, _ = import_workflow(CORPUS / "lora_clip_skip.api.json", model_map)
    assert lora["defaults"]["clip_skip"] == 2                  # CLIPSetLastLayer -2
    assert lora["defaults"]["loras"] == [{"name": model_map["style.safetensors"], "weight": 0.8},
                                         {"name": model_map["detail.safetensors"], "weight": 0.5}]
    assert lora["models"] == {"v1-5-pruned-emaonly": {"checkpoint": str(DEMO)}}
    combined, _ = import_workflow(CORPUS / "and_prompt.ui.json", {})    # a Reroute, a PrimitiveNode, a Note
    assert combined["stages"][0]["prompt"] == "a large red circle AND blue background"
    assert combined["defaults"]["seed"] == 4                             # the primitive's value, not the widget's
    inpaint, _ = import_workflow(CORPUS / "inpaint_for_inpainting.api.json", model_map)
    assert inpaint["stages"][0]["image"] == model_map["input.png"]
    assert inpaint["stages"][1]["mask"] == model_map["mask.png"]


def test_nodes_without_an_sdbake_equivalent_are_one_error_naming_each(tmp_path):
    nodes = json.loads((CORPUS / "default_txt2img.api.json").read_text())
    nodes["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}}
    nodes["21"] = {"class_type": "FreeU_V2", "inputs": {"model": ["4", 0]}}
    path = tmp_path / "w.json"
    path.write_text(json.dumps(nodes))
    with pytest.raises(RecipeError) as err:
        import_workflow(path, {})
    assert str(err.value) == f"{path}: no sdbake equivalent for node(s): 20 (ControlNetLoader), 21 (FreeU_V2)"


def test_a_chain_sdbake_cannot_express_names_its_nodes(tmp_path):
    nodes = json.loads((CORPUS / "hires_latent.api.json").read_text())
    nodes["10"]["inputs"]["upscale_method"] = "bislerp"
    nodes["11"]["inputs"]["sampler_name"] = "res_multistep"
    path = tmp_path / "w.json"
    path.write_text(json.dumps(nodes))
    with pytest.raises(RecipeError) as err:
        import_workflow(path, {})
    assert str(err.value) == (f"{path}: cannot import node(s): 10 (LatentUpscaleBy): upscale_method 'bislerp' "
                              f"(sdbake has nearest-exact, bilinear, bicubic); 11 (KSampler): sampler_name "
                              f"'res_multistep' is not one sdbake has")


def test_a_workflow_comfyui_would_refuse_is_refused_with_its_problems(tmp_path):
    nodes = json.loads((CORPUS / "default_txt2img.api.json").read_text())
    nodes["3"]["inputs"]["cfg"] = 500.0
    del nodes["5"]["inputs"]["batch_size"]
    path = tmp_path / "w.json"
    path.write_text(json.dumps(nodes))
    with pytest.raises(RecipeError) as err:
        import_workflow(path, {})
    assert str(err.value) == (f"{path}: not a workflow ComfyUI would queue: node 5 (EmptyLatentImage): required "
                              f"input 'batch_size' is missing; node 3 (KSampler): input 'cfg': 500.0 is above the "
                              f"maximum 100.0")


def test_a_file_that_is_no_workflow_is_one_error_line(tmp_path):
    path = tmp_path / "w.json"
    path.write_text('{"a": 1}')
    with pytest.raises(RecipeError, match="not a ComfyUI workflow: expected the API format"):
        import_workflow(path, {})


def test_widget_order_follows_comfyui_with_its_extra_frontend_values():
    assert widget_names("KSampler") == ["seed", "<control>", "steps", "cfg", "sampler_name", "scheduler", "denoise"]
    assert widget_names("LoadImageMask") == ["image", "channel", "<upload>"]


def test_sdbake_import_writes_a_recipe_from_a_workflow_and_names_what_it_cannot_map(tmp_path, capsys):
    recipe = tmp_path / "flow.toml"
    assert main(["import", str(CORPUS / "two_pass_advanced.ui.json"), "-o", str(recipe),
                 "--model", f"v1-5-pruned-emaonly.safetensors={DEMO}"]) == 0
    text = recipe.read_text()
    assert "start = 6" in text and "end = 10" in text
    assert main(["validate", str(recipe)]) == 0
    nodes = json.loads((CORPUS / "default_txt2img.api.json").read_text())
    nodes["20"] = {"class_type": "UpscaleModelLoaderX", "inputs": {}}
    (tmp_path / "custom.json").write_text(json.dumps(nodes))
    capsys.readouterr()
    assert main(["import", str(tmp_path / "custom.json"), "-o", str(tmp_path / "custom.toml")]) == 1
    assert capsys.readouterr().err.strip() == (f"{tmp_path / 'custom.json'}: no sdbake equivalent for node(s): "
                                               f"20 (UpscaleModelLoaderX)")
    assert not (tmp_path / "custom.toml").exists()
