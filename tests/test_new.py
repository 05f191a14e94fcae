"""`sdbake new`: every template validates and renders as written; --from takes an image's settings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sdbake.runner.cli import main

REPO = Path(__file__).resolve().parent.parent
DEMO_TEMPLATES = ("txt2img", "split", "intervene", "hires", "inpaint", "sweep")


def _render(recipe: Path, out: Path, overrides=()) -> list[Path]:
    from sdbake.runner.api import render
    from sdbake.runner.sources import load_any
    from sdbake.runner.sweep.matrix import has_matrix
    loaded = load_any(str(recipe), list(overrides))
    if has_matrix(loaded):
        from sdbake.runner.sweep.run import run_sweep
        return list(run_sweep(str(recipe), output_root=out, no_cache=True, overrides=list(overrides),
                              quiet=True).paths)
    return render(loaded, output_root=out, no_cache=True, threads=1).outputs


@pytest.mark.parametrize("template", DEMO_TEMPLATES)
def test_every_template_validates_and_renders_on_the_demo_model(template, tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["new", str(tmp_path / "mine"), "--template", template]) == 0
    recipe = tmp_path / "mine.toml"
    text = recipe.read_text()
    assert text.startswith("# ") and f'checkpoint = "{(REPO / "models" / "demo").as_posix()}"' in text
    assert main(["validate", str(recipe)]) == 0
    outputs = _render(recipe, tmp_path / "out")
    assert outputs, "the template saved nothing"
    for path in outputs:
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        assert pixels.std() > 5, f"{path.name} is (nearly) flat"


def test_sdxl_template_renders_on_a_tiny_sdxl(tmp_path, tiny_sdxl, capsys):
    pytest.importorskip("torch")
    assert main(["new", str(tmp_path / "xl.toml"), "--template", "sdxl"]) == 0
    recipe = tmp_path / "xl.toml"
    assert 'checkpoint = "sd_xl_base_1.0.safetensors"' in recipe.read_text()
    # validate checks that the model file exists: here it is not installed, so validate says which file
    assert main(["validate", str(recipe)]) == 1
    assert "checkpoints model 'sd_xl_base_1.0.safetensors' not found" in capsys.readouterr().err
    folder, _ = tiny_sdxl        # the template's size and steps are for a real SDXL: smaller for the tiny one
    assert main(["validate", str(recipe), "--set", f"models.base.checkpoint={folder}"]) == 0
    outputs = _render(recipe, tmp_path / "out", [f"models.base.checkpoint={folder}", "defaults.width=64",
                                                 "defaults.height=64", "defaults.steps=4"])
    assert [Image.open(p).size for p in outputs] == [(64, 64)]


def test_new_inside_the_checkout_points_at_the_demo_relatively():
    from sdbake.runner.commands.new import default_checkpoint
    checkpoint, _ = default_checkpoint("txt2img", REPO / "recipes" / "mine.toml")
    assert checkpoint == "../models/demo"


def test_new_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "taken.toml").write_text("keep me")
    assert main(["new", str(tmp_path / "taken")]) == 1
    assert "taken.toml: already exists" in capsys.readouterr().err
    assert (tmp_path / "taken.toml").read_text() == "keep me"


def test_new_from_an_a1111_image_takes_its_settings(tmp_path):
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", 'a "quoted" cat, (fluffy:1.2)\nNegative prompt: blurry\nSteps: 9, Sampler: DPM++ 2M '
                                "Karras, CFG scale: 5.5, Seed: 1234, Size: 64x128, Model hash: 0123456789, "
                                "Model: myModel_v2")
    Image.new("RGB", (64, 128)).save(tmp_path / "a1111.png", pnginfo=info)
    assert main(["new", str(tmp_path / "again"), "--from", str(tmp_path / "a1111.png")]) == 0
    from sdbake.schemas.loader import load_recipe
    recipe = load_recipe(tmp_path / "again.toml").recipe
    encode, sample = recipe.stages[0], recipe.stages[1]
    assert (encode.prompt, encode.negative, encode.seed, encode.width, encode.height) == (
        'a "quoted" cat, (fluffy:1.2)', "blurry", 1234, 64, 128)
    assert (sample.steps, sample.sampler, sample.scheduler, sample.cfg) == (9, "dpmpp_2m", "karras", 5.5)
    assert recipe.models["base"].checkpoint == "myModel_v2.safetensors"


def test_new_from_an_a1111_image_with_automatic_schedule_takes_the_samplers_own(tmp_path):
    # A1111 v1.10 writes "Schedule type: Automatic" when the sampler's default schedule was used
    # (karras for DPM++ 2M): the recipe must render with that schedule, not ours.
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 9, Sampler: DPM++ 2M, Schedule type: Automatic, CFG scale: 5.5, "
                                "Seed: 1234, Size: 64x128")
    Image.new("RGB", (64, 128)).save(tmp_path / "a1111.png", pnginfo=info)
    assert main(["new", str(tmp_path / "again"), "--from", str(tmp_path / "a1111.png")]) == 0
    from sdbake.schemas.loader import load_recipe
    sample = load_recipe(tmp_path / "again.toml").recipe.stages[1]
    assert (sample.sampler, sample.scheduler) == ("dpmpp_2m", "karras")


def test_new_from_an_sdbake_image_takes_its_recipe_settings_and_model(tmp_path):
    pytest.importorskip("torch")
    assert main(["new", str(tmp_path / "first"), "--template", "txt2img"]) == 0
    text = (tmp_path / "first.toml").read_text().replace("seed = 1\n", "seed = 77\n").replace("steps = 12", "steps = 5")
    (tmp_path / "first.toml").write_text(text)
    [image] = _render(tmp_path / "first.toml", tmp_path / "out")
    assert main(["new", str(tmp_path / "second"), "--template", "hires", "--from", str(image)]) == 0
    from sdbake.schemas.loader import load_recipe
    recipe = load_recipe(tmp_path / "second.toml").recipe
    assert recipe.stages[0].seed == 77 and recipe.stages[1].steps == 5
    assert Path(recipe.models["base"].checkpoint).name == "demo"
    assert [s.type for s in recipe.stages] == ["encode", "sample", "save", "hires", "save"]
