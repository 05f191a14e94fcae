"""`sdbake import` on a corpus of A1111 infotexts (tests/a1111_infotexts/, written in A1111 v1.10's format):
each imports with the settings mapped, keeps every key it cannot map as a comment, validates and renders on
the demo model (original model names mapped with --model)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sdbake.runner.cli import main
from sdbake.runner.interop.a1111_infotext import parse_parameters
from sdbake.schemas.recipe import Defaults

try:
    import tomllib
except ModuleNotFoundError:         # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "a1111_infotexts"
NAMES = sorted(path.stem for path in CORPUS.glob("*.txt"))
DEMO = REPO / "models" / "demo"
DEMO_VAE = DEMO / "vae" / "diffusion_pytorch_model.safetensors"
CHECKPOINTS = ("v1-5-pruned-emaonly", "sd_xl_base_1.0", "sd_xl_refiner_1.0", "7460a6fa", "dreamshaper_8")
VAES = ("vae-ft-mse-840000-ema-pruned", "sdxl_vae")
VARIATION = "subseed" in Defaults.model_fields
# Keys the importer turns into recipe fields; every other key must come back as an `# unmapped:` comment.
MAPPED = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "VAE hash",
          "VAE", "Denoising strength", "Clip skip", "Hires upscale", "Hires resize", "Hires steps",
          "Hires upscaler", "Hires sampler", "Hires schedule type", "Hires prompt", "Hires negative prompt",
          "Mask blur", "Inpaint area", "Masked area padding", "Refiner", "First pass size", "RNG", "Lora hashes",
          "Hires checkpoint", "Token merging ratio", "Eta",
          *(("Variation seed", "Variation seed strength", "Seed resize from") if VARIATION else ())}

# Per corpus file: recipe values (dotted paths, stage index) the import must give.
EXPECTED = {
    "txt2img_euler_a": {"defaults.sampler": "euler_ancestral", "defaults.scheduler": "normal",
                        "defaults.seed": 2715873312, "defaults.width": 512, "defaults.height": 512,
                        "defaults.steps": 20, "defaults.cfg": 7.0, "stages.1": {"type": "sample"},
                        "stages.0.negative": "blurry, lowres, watermark"},
    "txt2img_legacy_karras": {"defaults.sampler": "dpmpp_2m", "defaults.scheduler": "karras",
                              "defaults.cfg": 6.5, "defaults.height": 768,
                              "stages.0.negative": "(worst quality, low quality:1.4), extra fingers"},
    # before A1111 1.9 a label without a schedule name used the model's own schedule
    "txt2img_legacy_no_schedule": {"defaults.sampler": "dpmpp_2m", "defaults.scheduler": "normal",
                                   "defaults.width": 640, "defaults.height": 448},
    "hires_latent": {"stages.2": {"type": "hires", "scale": 2.0, "upscaler": "latent-bilinear", "denoise": 0.7}},
    "hires_own_sampler_prompt": {
        "defaults.clip_skip": 2,
        "stages.2": {"type": "hires", "scale": 1.5, "upscaler": "latent-nearest-exact", "steps": 15,
                     "denoise": 0.45, "sampler": "euler_ancestral", "scheduler": "normal",
                     "prompt": "1girl, solo, long hair, detailed eyes, detailed face",
                     "negative": "(worst quality:1.4), blurry"}},
    "hires_checkpoint": {"models.hires.checkpoint": DEMO,
                         "stages.2": {"type": "hires", "scale": 2.0, "upscaler": "latent-bicubic", "steps": 10,
                                      "denoise": 0.5, "model": "hires"}},
    "hires_resize_lanczos": {"defaults.scheduler": "karras",
                             "stages.2": {"type": "hires", "width": 1024, "height": 768, "upscaler": "lanczos",
                                          "steps": 10, "denoise": 0.35}},
    "hires_old_first_pass": {"defaults.width": 512, "defaults.height": 512,
                             "stages.2": {"type": "hires", "width": 1024, "height": 1024,
                                          "upscaler": "latent-bilinear", "denoise": 0.7}},
    "img2img": {"defaults.sampler": "dpmpp_sde", "stages.0.image": "init.png", "stages.0.denoise": 0.55,
                "stages.1": {"type": "sample"}},
    "inpaint_whole_picture": {"stages.0.image": "init.png", "stages.1": {
        "type": "inpaint", "mask": "mask.png", "blur": 4, "denoise": 0.75}},
    "inpaint_only_masked": {"stages.1": {"type": "inpaint", "mask": "mask.png", "blur": 8, "denoise": 0.4,
                                         "area": "masked", "padding": 48}},
    "sdxl_base": {"defaults.width": 1024, "defaults.sampler": "dpmpp_2m_sde", "defaults.scheduler": "karras",
                  "models.base.vae": DEMO_VAE},
    "sdxl_refiner": {"models.refiner.checkpoint": DEMO, "stages.1": {"type": "sample", "end": 32},
                     "stages.2": {"type": "sample", "start": 32, "model": "refiner"}},
    "lora_tags": {"stages.0.prompt": "masterpiece, best quality, 1boy, knight in shining armor, "
                                     "<lora:add_detail:0.6>, <lora:armor_style_v2:0.8:0.5>",
                  "defaults.clip_skip": 2},
    "variation_seed": ({"defaults.subseed": 2000, "defaults.subseed_strength": 0.3,
                        "defaults.seed_resize_from_w": 512, "defaults.seed_resize_from_h": 768}
                       if VARIATION else {"defaults.seed": 1000}),
    "clip_skip_vae": {"defaults.clip_skip": 2, "defaults.sampler": "dpmpp_2s_ancestral",
                      "defaults.scheduler": "karras", "models.base.vae": DEMO_VAE},
    "schedule_types": {"defaults.scheduler": "exponential",
                       "stages.2": {"type": "hires", "scale": 2.0, "upscaler": "latent-bicubic-antialiased",
                                    "steps": 8, "denoise": 0.5, "sampler": "ddim", "scheduler": "sgm_uniform"}},
    "quoted_values": {"stages.0.prompt": 'a sign that says "OPEN: 24/7", neon, night street\n'
                                         "second line of the prompt, rain",
                      "stages.0.negative": "blurry,\njpeg artifacts",
                      "stages.2.prompt": 'a sign that says "OPEN: 24/7", neon,\nnight street, sharp',
                      "stages.2.upscaler": "latent-nearest"},
    "extensions": {"defaults.sampler": "dpmpp_2m", "stages.1": {"type": "sample", "tome_ratio": 0.3}},
    "txt2img_plms": {"defaults.sampler": "plms", "defaults.scheduler": "ddim_uniform", "defaults.steps": 25},
    # "Automatic" is the schedule of A1111's sampler table: exponential for the 2M SDE samplers
    "txt2img_dpmpp_2m_sde_heun": {"defaults.sampler": "dpmpp_2m_sde_heun", "defaults.scheduler": "exponential",
                                  "defaults.steps": 24, "defaults.width": 512, "defaults.height": 768},
    # A1111 runs DPM fast with its eta option, 1 unless the infotext says `Eta`: sdbake's dpm_fast_a1111;
    # DPM adaptive with `Eta: 0` is ComfyUI's dpm_adaptive
    "txt2img_dpm_fast": {"defaults.sampler": "dpm_fast_a1111", "defaults.scheduler": "normal", "defaults.steps": 30},
    "txt2img_dpm_adaptive_eta0": {"defaults.sampler": "dpm_adaptive", "defaults.scheduler": "karras",
                                  "defaults.height": 640},
    # A1111's own schedule types, for the first pass and (Hires schedule type) the hires pass
    "schedule_align_your_steps": {"defaults.sampler": "dpmpp_2m", "defaults.scheduler": "align_your_steps",
                                  "defaults.steps": 11,
                                  "stages.2": {"type": "hires", "scale": 2.0, "upscaler": "latent-nearest-exact",
                                               "steps": 6, "denoise": 0.4, "scheduler": "polyexponential"}},
    # Restart's "Automatic" is karras (A1111's sampler table); the hires pass uses the same sampler
    "txt2img_restart": {"defaults.sampler": "restart", "defaults.scheduler": "karras", "defaults.steps": 24,
                        "defaults.height": 640,
                        "stages.2": {"type": "hires", "scale": 1.5, "upscaler": "latent-bilinear", "steps": 12,
                                     "denoise": 0.45}},
    "txt2img_ddim_cfg_pp": {"defaults.sampler": "ddim_cfg_pp", "defaults.scheduler": "ddim_uniform",
                            "defaults.cfg": 9.0},
}
# Unmapped keys that must be kept, word for word, as comments.
UNMAPPED = {
    "extensions": ["ENSD: 31337", "ADetailer model: face_yolov8n.pt", "Eta: 0.67", "Emphasis: No norm",
                   ("ControlNet 0: Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, "
                    "Resize Mode: Crop and Resize")],
    "quoted_values": ['Wildcard prompt: a sign that says "__signs__", neon', "Template: a sign, {neon|led}"],
    "inpaint_only_masked": ["Masked content: fill"],
    "lora_tags": ["TI hashes: easynegative: c74b4e810b03"],
    "variation_seed": [] if VARIATION else ["Variation seed: 2000", "Variation seed strength: 0.3",
                                            "Seed resize from: 512x768"],
    "sdxl_refiner": ["Refiner switch at: 0.8"],
}


def dig(recipe: dict, path: str):
    node = recipe
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@pytest.fixture(scope="module")
def demo_loras(tmp_path_factory) -> Path:
    """A LoRA folder with the two LoRAs lora_tags.txt names, made for the demo model's layers."""
    pytest.importorskip("torch")
    import tiny_models
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel
    folder = tmp_path_factory.mktemp("loras")
    unet = UNet2DConditionModel.from_pretrained(DEMO / "unet")
    text_encoder = CLIPTextModel.from_pretrained(DEMO / "text_encoder")
    for seed, name in enumerate(("add_detail", "armor_style_v2")):
        tiny_models.save_tiny_lora(folder / f"{name}.safetensors", unet, text_encoder, seed=seed)
    return folder


@pytest.fixture
def model_folders(request, tmp_path, monkeypatch):
    """For lora_tags.txt: an sdbake config whose LoRA folder holds the LoRAs its prompt names."""
    if "lora_tags" not in request.node.name:
        return
    config = tmp_path / "config.toml"
    config.write_text(f'[folders]\nloras = ["{request.getfixturevalue("demo_loras").as_posix()}"]\n')
    monkeypatch.setenv("SDBAKE_CONFIG", str(config))


def import_corpus(name: str, folder: Path) -> Path:
    """Import one corpus file into folder/<name>.toml (the demo model standing in for every checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 120, 40)).save(folder / "init.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(folder / "mask.png")
    maps = [f"{name}={DEMO}" for name in CHECKPOINTS] + [f"{name}={DEMO_VAE}" for name in VAES]
    args = ["import", str(CORPUS / f"{name}.txt"), "-o", str(folder / f"{name}.toml")]
    if name.startswith(("img2img", "inpaint")):
        args += ["--init-image", str(folder / "init.png")]
    if name.startswith("inpaint"):
        args += ["--mask", str(folder / "mask.png")]
    for pair in maps:
        args += ["--model", pair]
    assert main(args) == 0
    return folder / f"{name}.toml"


def test_the_corpus_covers_what_a1111_users_bring():
    assert len(NAMES) >= 15 and set(NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", NAMES)
def test_each_infotext_imports_with_its_settings_mapped_and_the_rest_as_comments(name, tmp_path, capsys,
                                                                                 model_folders):
    recipe_file = import_corpus(name, tmp_path / "recipes")
    text = recipe_file.read_text(encoding="utf-8")
    recipe = tomllib.loads(text)
    assert (recipe_file.parent / recipe["models"]["base"]["checkpoint"]).resolve() == DEMO.resolve()
    for path, value in EXPECTED[name].items():
        if isinstance(value, Path):      # a file: as the recipe spells it, relative to its folder
            assert (recipe_file.parent / dig(recipe, path)).resolve() == value.resolve(), path
        else:
            assert dig(recipe, path) == value, path
    assert recipe["stages"][-1]["type"] == "save"
    assert ("# An SDXL image" in text) == name.startswith("sdxl")       # the size / model name hint
    for line in UNMAPPED.get(name, []):
        assert f"# unmapped: {line}" in text, line
    # Never dropped silently: every key of the infotext is mapped or kept as a comment.
    _, _, params = parse_parameters((CORPUS / f"{name}.txt").read_text(encoding="utf-8"))
    keys = {key.rsplit("-", 1)[0] if key.endswith(("-1", "-2")) else key for key in params}
    for key in keys - MAPPED:
        assert f"# unmapped: {key}: " in text, key
    assert main(["validate", str(recipe_file)]) == 0, capsys.readouterr().err


def small_overrides(recipe: dict) -> list[str]:
    """--set values that make an imported recipe quick on the demo model: 64x64 (hires to 128), 4 steps."""
    overrides = ["defaults.width=64", "defaults.height=64", "defaults.steps=4"]
    for index, stage in enumerate(recipe["stages"]):
        if stage["type"] == "hires":
            overrides += [f"stages.{index}.{side}=128" for side in ("width", "height") if side in stage]
            overrides += [f"stages.{index}.steps=2"] if "steps" in stage else []
        for bound in ("start", "end"):
            if bound in stage:
                overrides.append(f"stages.{index}.{bound}=2")
    return overrides


@pytest.mark.slow        # one render per corpus file (26), about 1 s each after the demo model's load (the round trip renders in the fast suite)
@pytest.mark.parametrize("name", NAMES)
def test_each_imported_recipe_renders_on_the_demo_model(name, tmp_path, capsys, model_folders):
    pytest.importorskip("torch")
    from sdbake.runner.api import render
    from sdbake.runner.sources import load_any
    recipe_file = import_corpus(name, tmp_path / "recipes")
    recipe = tomllib.loads(recipe_file.read_text(encoding="utf-8"))
    loaded = load_any(str(recipe_file), small_overrides(recipe))
    outputs = render(loaded, output_root=tmp_path / "out", no_cache=True, threads=1).outputs
    assert len(outputs) == 1
    hires = next((stage for stage in recipe["stages"] if stage["type"] == "hires"), None)
    side = 64 if hires is None else 128 if "width" in hires else int(64 * hires["scale"]) // 8 * 8
    picture = Image.open(outputs[0])
    assert picture.size == (side, side)
    assert np.asarray(picture.convert("RGB"), dtype=np.float64).std() > 2, "a flat image"
