"""`sdbake export --to comfyui`: workflows ComfyUI's own node definitions accept, that say what they leave out."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sdbake.runner.cli import main
from sdbake.runner.interop.comfy_export import SAMPLER_STAND_INS, SCHEDULER_STAND_INS
from sdbake.runner.interop.comfy_nodes import node_definitions, validate_workflow
from sdbake.schemas.names import SAMPLERS, SCHEDULERS
from stage_helpers import recipe

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").rglob("*.toml"))


def export(tmp_path, recipe_path, *extra) -> tuple[int, dict | None]:
    out = tmp_path / "workflow.json"
    code = main(["export", str(recipe_path), "--to", "comfyui", "-o", str(out), "--out", str(tmp_path / "o"), *extra])
    return code, json.loads(out.read_text()) if out.exists() else None


def by_class(workflow: dict, class_type: str) -> list[dict]:
    return [node for _id, node in sorted(workflow.items(), key=lambda kv: int(kv[0]))
            if node["class_type"] == class_type]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_recipe_exports_to_a_workflow_comfyui_accepts(tmp_path, path):
    code, workflow = export(tmp_path, path)
    assert code == 0
    assert validate_workflow(workflow) == []
    assert by_class(workflow, "SaveImage")


def test_left_out_stages_are_warnings_naming_the_stage_and_strict_fails(tmp_path, capsys):
    code, _ = export(tmp_path, REPO / "recipes" / "multistage.toml")
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: stage intervene (intervene): editing the clean estimate" in err
    assert "warning: stage inpaint (inpaint): color_correction = True has no ComfyUI core equivalent" in err
    assert "warning: stage encode (encode): prompt editing [from:to:when]" in err
    (tmp_path / "workflow.json").unlink()
    code, workflow = export(tmp_path, REPO / "recipes" / "multistage.toml", "--strict")
    assert code == 1 and workflow is None
    assert "(--strict): nothing written" in capsys.readouterr().err


def test_a_single_file_txt2img_exports_without_warnings(tmp_path, tiny_single_file, capsys):
    (tmp_path / "r.toml").write_text(recipe(tiny_single_file, '[[stages]]\ntype = "sample"\n\n[[stages]]\n'
                                                              'type = "save"\npath = "x/{{ seed }}.png"\n'))
    code, workflow = export(tmp_path, tmp_path / "r.toml", "--strict")
    assert code == 0 and capsys.readouterr().err == ""
    assert by_class(workflow, "CheckpointLoaderSimple")[0]["inputs"] == {"ckpt_name": tiny_single_file.name}
    assert by_class(workflow, "SaveImage")[0]["inputs"]["filename_prefix"] == "x/3"
    (sampler,) = by_class(workflow, "KSamplerAdvanced")
    assert {k: sampler["inputs"][k] for k in ("add_noise", "noise_seed", "steps", "start_at_step", "end_at_step",
                                              "return_with_leftover_noise", "sampler_name", "scheduler", "cfg")} == {
        "add_noise": "enable", "noise_seed": 3, "steps": 8, "start_at_step": 0, "end_at_step": 8,
        "return_with_leftover_noise": "disable", "sampler_name": "euler", "scheduler": "karras", "cfg": 5.0}


def test_split_hires_and_inpaint_loops_map_onto_ksampler_advanced_steps(tmp_path):
    code, workflow = export(tmp_path, REPO / "recipes" / "demo.toml")
    assert code == 0
    samplers = [n["inputs"] for n in by_class(workflow, "KSamplerAdvanced")]
    split = [(s["add_noise"], s["steps"], s["start_at_step"], s["end_at_step"], s["return_with_leftover_noise"])
             for s in samplers]
    total = int(8 / 0.45)                       # hires: 8 steps at denoise 0.45, A1111's schedule
    assert split == [("enable", 20, 0, 14, "enable"), ("disable", 20, 14, 20, "disable"),
                     ("enable", total, total - 8, 10000, "disable"),
                     ("enable", 12, 12 - int(0.8 * 12) - 1, 10000, "disable"),      # loop 1 at denoise 0.8
                     ("enable", 12, 12 - int(0.6 * 12) - 1, 10000, "disable")]      # loop 2 at denoise 0.6
    assert [s["noise_seed"] for s in samplers] == [1, 1, 1, 1, 2]               # loop i uses seed + i
    assert by_class(workflow, "LatentUpscale")[0]["inputs"]["width"] == 128
    assert [n["inputs"]["filename_prefix"] for n in by_class(workflow, "SaveImage")] == [
        "demo/1-base", "demo/1-a large orange red circle in"]
    rect = by_class(workflow, "MaskComposite")[0]["inputs"]
    assert (rect["x"], rect["y"], rect["operation"]) == (40, 40, "add")


def test_clip_skip_and_loras_become_clip_set_last_layer_and_lora_loader(tmp_path, tiny_single_file, tiny_lora):
    stages = '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "a.png"\n'
    text = recipe(tiny_single_file, stages).replace("[defaults]\n", "[defaults]\nclip_skip = 2\n"
                                                    f'loras = [{{ name = "{tiny_lora}", weight = 0.7 }}]\n')
    (tmp_path / "r.toml").write_text(text)
    code, workflow = export(tmp_path, tmp_path / "r.toml")
    assert code == 0 and validate_workflow(workflow) == []
    lora = by_class(workflow, "LoraLoader")[0]["inputs"]
    assert (lora["lora_name"], lora["strength_model"], lora["strength_clip"]) == (tiny_lora.name, 0.7, 0.7)
    assert by_class(workflow, "CLIPSetLastLayer")[0]["inputs"]["stop_at_clip_layer"] == -2


def test_sdbake_sampler_and_scheduler_ids_are_comfyui_choices():
    ksampler = node_definitions()["KSampler"]["input"]["required"]
    # A1111's PLMS, eta-1 DPM fast and DDIM CFG++ are not KSampler choices: the export says what it writes
    assert set(SAMPLERS) - set(ksampler["sampler_name"][0]) == set(SAMPLER_STAND_INS)
    assert {stand_in for stand_in, _why in SAMPLER_STAND_INS.values()} <= set(ksampler["sampler_name"][0])
    # A1111's polyexponential and align_your_steps are not KSampler choices: the export says what it writes
    assert set(SCHEDULERS) - set(ksampler["scheduler"][0]) == set(SCHEDULER_STAND_INS)
    assert {stand_in for stand_in, _why in SCHEDULER_STAND_INS.values()} <= set(ksampler["scheduler"][0])


@pytest.mark.parametrize("scheduler,stand_in", [("Polyexponential", "exponential"),
                                                ("Align Your Steps", "kl_optimal")])
def test_a1111_schedules_comfyui_lacks_are_exported_with_a_warning(tmp_path, tiny_single_file, capsys, scheduler,
                                                                  stand_in):
    stages = '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "a.png"\n'
    text = recipe(tiny_single_file, stages).replace('scheduler = "karras"', f'scheduler = "{scheduler}"')
    (tmp_path / "r.toml").write_text(text)
    code, workflow = export(tmp_path, tmp_path / "r.toml")
    err = capsys.readouterr().err
    assert code == 0 and validate_workflow(workflow) == []
    assert by_class(workflow, "KSamplerAdvanced")[0]["inputs"]["scheduler"] == stand_in
    name = scheduler.lower().replace(" ", "_")
    assert (f"warning: stage sample (sample): scheduler {name} is not one of ComfyUI's KSampler schedulers: "
            f"exported as {stand_in}") in err
    code, workflow = export(tmp_path, tmp_path / "r.toml", "--strict")
    assert code == 1


@pytest.mark.parametrize("label,stand_in,cfg,why", [
    ("PLMS", "ipndm", 5.0, "the same Adams-Bashforth steps after an Euler first step"),
    ("DDIM CFG++", "euler_cfg_pp", 0.4, "the same CFG++ steps, with cfg written as A1111's / 12.5")])
def test_a_sampler_comfyui_lacks_exports_as_the_nearest_with_a_warning(tmp_path, tiny_single_file, capsys, label,
                                                                        stand_in, cfg, why):
    stages = f'[[stages]]\ntype = "sample"\nsampler = "{label}"\n\n[[stages]]\ntype = "save"\npath = "a.png"\n'
    (tmp_path / "r.toml").write_text(recipe(tiny_single_file, stages))
    code, workflow = export(tmp_path, tmp_path / "r.toml")
    assert code == 0 and validate_workflow(workflow) == []
    inputs = by_class(workflow, "KSamplerAdvanced")[0]["inputs"]
    assert (inputs["sampler_name"], inputs["cfg"]) == (stand_in, cfg)
    name = label.lower().replace(" cfg++", "_cfg_pp")
    assert (f"warning: stage sample (sample): sampler {name} is not one of ComfyUI's KSampler samplers: exported "
            f"as {stand_in} ({why}") in capsys.readouterr().err


def test_comfyuis_cfg_pp_samplers_export_as_themselves(tmp_path, tiny_single_file, capsys):
    for sampler in ("euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "dpmpp_2s_ancestral_cfg_pp"):
        stages = f'[[stages]]\ntype = "sample"\nsampler = "{sampler}"\n\n[[stages]]\ntype = "save"\npath = "a.png"\n'
        (tmp_path / "r.toml").write_text(recipe(tiny_single_file, stages, cfg=0.6))
        code, workflow = export(tmp_path, tmp_path / "r.toml", "--strict")
        inputs = by_class(workflow, "KSamplerAdvanced")[0]["inputs"]
        assert code == 0 and (inputs["sampler_name"], inputs["cfg"]) == (sampler, 0.6)
    assert capsys.readouterr().err == ""


def test_the_validator_names_each_problem_and_its_node():
    workflow = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 64}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler_b", "scheduler": "karras",
            "positive": ["1", 1], "negative": ["9", 0], "latent_image": ["2", 0], "denoise": 1.0}},
        "4": {"class_type": "FreeU_V2", "inputs": {}},
    }
    assert validate_workflow(workflow) == [
        "node 2 (EmptyLatentImage): input 'width': 8 is below the minimum 16",
        "node 2 (EmptyLatentImage): required input 'batch_size' is missing",
        "node 3 (KSampler): input 'sampler_name': 'euler_b' is not one of " +
        ", ".join(node_definitions()["KSampler"]["input"]["required"]["sampler_name"][0]),
        "node 3 (KSampler): input 'positive': needs CONDITIONING, but output 1 of node 1 is CLIP",
        "node 3 (KSampler): input 'negative': links to node '9', which is not in the workflow",
        "node 4: unknown node class 'FreeU_V2'",
    ]


def test_variation_seed_and_batch_count_are_warnings(tmp_path, tiny_single_file, capsys):
    stages = '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "a.png"\n'
    text = recipe(tiny_single_file, stages).replace("[defaults]\n", "[defaults]\nn_iter = 2\n").replace(
        'negative = "blurry"\n', 'negative = "blurry"\nsubseed = 5\nsubseed_strength = 0.3\n')
    (tmp_path / "r.toml").write_text(text)
    code, workflow = export(tmp_path, tmp_path / "r.toml")
    err = capsys.readouterr().err
    assert code == 0 and validate_workflow(workflow) == []
    assert "warning: stage encode (encode): A1111's variation seed (subseed) has no ComfyUI core equivalent" in err
    assert "warning: stage encode (encode): batch count n_iter = 2: the workflow renders one batch" in err
