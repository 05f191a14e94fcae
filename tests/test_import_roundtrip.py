"""Round trip: a recipe rendered by sdbake, its image's A1111 infotext imported back, gives a recipe whose
stages have the same plan keys as the original's, for every stage an infotext can express."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from sdbake.runner.cli import main
from sdbake.schemas.recipe import Defaults
from test_import_a1111 import demo_loras  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"
RECIPES = {
    "txt2img": """
[[stages]]
type = "encode"
prompt = "a large (red:1.2) circle, blue background"
negative = "green, blurry"

[[stages]]
type = "sample"

[[stages]]
type = "save"
""",
    "hires": """
[[stages]]
type = "encode"
prompt = "a large red circle, blue background"

[[stages]]
type = "sample"

[[stages]]
type = "hires"
scale = 2.0
upscaler = "latent-bicubic-antialiased"
denoise = 0.45
steps = 3
sampler = "euler_ancestral"
prompt = "a large red circle, sharp edges"

[[stages]]
type = "save"
""",
    "hires_own_settings": """
[[stages]]
type = "encode"
prompt = "a large red circle, blue background"
negative = "green"

[[stages]]
type = "sample"

[[stages]]
type = "hires"
width = 96
height = 96
upscaler = "lanczos"
denoise = 0.6
scheduler = "exponential"
cfg = 4.5
negative = "green, yellow"

[[stages]]
type = "save"
""",
    "inpaint_loopback": """
[[stages]]
type = "encode"
prompt = "a large red circle, blue background"
image = "init.png"

[[stages]]
type = "inpaint"
mask = "mask.png"
blur = 2
loops = 3
denoise = [0.8, 0.5]
curve = "aggressive"
color_correction = true

[[stages]]
type = "save"
""",
    "refiner": """
[models.refiner]
checkpoint = "{demo}"

[[stages]]
type = "encode"
prompt = "a large red circle, blue background"

[[stages]]
type = "sample"
end = 3

[[stages]]
type = "sample"
start = 3
model = "refiner"

[[stages]]
type = "save"
""",
    "lora": """
[[stages]]
type = "encode"
prompt = "a large red circle, <lora:add_detail:0.7>, blue background"

[[stages]]
type = "sample"

[[stages]]
type = "save"
""",
    "token_merging": """
[[stages]]
type = "encode"
prompt = "a large red circle, blue background"

[[stages]]
type = "sample"
tome_ratio = 0.4

[[stages]]
type = "hires"
denoise = 0.5
steps = 2
tome_ratio = 0.3

[[stages]]
type = "save"
""",
    "variation": """
[[stages]]
type = "encode"
prompt = "a large red circle, blue background"
subseed = 99
subseed_strength = 0.25
seed_resize_from_w = 48
seed_resize_from_h = 56

[[stages]]
type = "sample"

[[stages]]
type = "save"
""",
    "img2img": """
[[stages]]
type = "encode"
prompt = "a large red circle, blue background"
image = "init.png"
denoise = 0.6

[[stages]]
type = "sample"

[[stages]]
type = "save"
""",
}
HEADER = """version = 1
name = "{name}"

[models.base]
checkpoint = "{demo}"

[defaults]
model = "base"
seed = 7
width = 64
height = 64
steps = 5
sampler = "dpmpp_2m"
scheduler = "karras"
cfg = 6.0
clip_skip = {clip_skip}
"""


def stage_keys(recipe: Path) -> dict[str, str]:
    from sdbake.runner.api import make_plan
    from sdbake.runner.sources import load_any
    plan = make_plan(load_any(str(recipe)), output_root=recipe.parent / "out", threads=1)
    return {inv.stage.type: inv.key for inv in plan.invocations if inv.stage.type != "save"}


CASES = [("txt2img", 1), ("txt2img", 2), ("hires", 1), ("hires_own_settings", 1), ("img2img", 1),
         ("inpaint_loopback", 1), ("refiner", 1), ("lora", 1), ("token_merging", 1)]
if "subseed" in Defaults.model_fields:       # A1111's variation seed, where this sdbake has it
    CASES.append(("variation", 1))


@pytest.mark.parametrize("name,clip_skip", CASES)
def test_our_infotext_imports_to_the_same_plan_keys(name, clip_skip, tmp_path, capsys, monkeypatch, request):
    pytest.importorskip("torch")
    if "<lora:" in RECIPES[name]:        # a LoRA folder holding the LoRA the prompt names, for both recipes
        config = tmp_path / "config.toml"
        config.write_text(f'[folders]\nloras = ["{request.getfixturevalue("demo_loras").as_posix()}"]\n')
        monkeypatch.setenv("SDBAKE_CONFIG", str(config))
    from sdbake.runner.api import render
    original = tmp_path / "original.toml"
    original.write_text(HEADER.format(name=name, demo=DEMO.as_posix(), clip_skip=clip_skip)
                        + RECIPES[name].replace("{demo}", DEMO.as_posix()))
    Image.new("RGB", (64, 64), (30, 60, 200)).save(tmp_path / "init.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 40, 40))
    mask.save(tmp_path / "mask.png")
    outputs = render(original, output_root=tmp_path / "out", no_cache=True, threads=1).outputs
    imported = tmp_path / "imported.toml"
    options = ["--init-image", str(tmp_path / "init.png")] if "image" in RECIPES[name] else []
    options += ["--mask", str(tmp_path / "mask.png")] if "mask" in RECIPES[name] else []
    assert main(["import", str(outputs[-1]), "-o", str(imported), "--model", f"demo={DEMO}", *options]) == 0
    assert main(["validate", str(imported)]) == 0
    assert stage_keys(imported) == stage_keys(original)
