"""The recipe schema: every stage kind from TOML and YAML, defaults, ids, sampler labels, --set,
canonical twins and the JSON Schema for editors."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import tomllib
import yaml
from sdbake.schemas.canonical import canonical_json, dumps
from sdbake.schemas.errors import RecipeError
from sdbake.schemas.jsonschema import recipe_json_schema
from sdbake.schemas.loader import load_recipe, load_text
from sdbake.schemas.stages import (
    AdjustOp,
    BlurOp,
    EncodeParams,
    FillOp,
    HiresParams,
    ImageOp,
    InpaintParams,
    InterveneParams,
    PasteOp,
    SampleParams,
    SaveParams,
)

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TWINS = sorted(path.stem for path in RECIPES.glob("*.toml") if path.with_suffix(".yaml").exists())
EXAMPLES = sorted(RECIPES.glob("*.toml")) + sorted(RECIPES.glob("*.yaml")) + sorted(RECIPES.glob("*.yml"))

EVERY_STAGE_TOML = '''
version = 1
name = "every stage"

[models.base]
checkpoint = "base.safetensors"
loras = [{ name = "style.safetensors", weight = 0.6 }]

[models.refiner]
checkpoint = "refiner.safetensors"

[defaults]
model = "base"
seed = 42
width = 512
height = 768
steps = 30
sampler = "DPM++ 2M Karras"
cfg = 6.5

[[stages]]
type = "encode"
prompt = "a lighthouse at dusk"
negative = "blurry"

[[stages]]
type = "sample"
end = 12

[[stages]]
type = "intervene"
mask = "masks/sky.png"
ops = [
  { op = "paste", image = "edits/moon.png", at = [300, 40], alpha = 0.9 },
  { op = "image", image = "edits/step12.png" },
  { op = "adjust", brightness = 1.1, hue = -10.0 },
  { op = "blur", radius = 3.0 },
  { op = "fill", color = "#203040", rect = [0, 0, 64, 64] },
]

[[stages]]
type = "sample"
start = 12

[[stages]]
type = "hires"
denoise = 0.4
steps = 0
model = "refiner"

[[stages]]
type = "inpaint"
rects = [[10, 20, 64, 64]]
loops = 2
denoise = [0.5, 0.25]
sampler = "Euler a"

[[stages]]
type = "save"
path = "{{ name }}/{{ seed }}.webp"
format = "webp"
'''

EVERY_STAGE_YAML = '''
version: 1
name: every stage
models:
  base:
    checkpoint: base.safetensors
    loras:
      - {name: style.safetensors, weight: 0.6}
  refiner:
    checkpoint: refiner.safetensors
defaults:
  model: base
  seed: 42
  width: 512
  height: 768
  steps: 30
  sampler: DPM++ 2M Karras
  cfg: 6.5
stages:
  - type: encode
    prompt: a lighthouse at dusk
    negative: blurry
  - type: sample
    end: 12
  - type: intervene
    mask: masks/sky.png
    ops:
      - {op: paste, image: edits/moon.png, at: [300, 40], alpha: 0.9}
      - {op: image, image: edits/step12.png}
      - {op: adjust, brightness: 1.1, hue: -10.0}
      - {op: blur, radius: 3.0}
      - {op: fill, color: "#203040", rect: [0, 0, 64, 64]}
  - type: sample
    start: 12
  - type: hires
    denoise: 0.4
    steps: 0
    model: refiner
  - type: inpaint
    rects: [[10, 20, 64, 64]]
    loops: 2
    denoise: [0.5, 0.25]
    sampler: Euler a
  - type: save
    path: "{{ name }}/{{ seed }}.webp"
    format: webp
'''


def load(text: str, fmt: str, overrides: list[str] = ()):
    return load_text(text, fmt, label=f"recipe.{fmt}", folder=Path("."), overrides=list(overrides)).recipe


@pytest.fixture(scope="module")
def every_stage():
    return load(EVERY_STAGE_TOML, "toml")


def test_every_stage_kind_parses_equal_from_toml_and_yaml(every_stage):
    assert load(EVERY_STAGE_YAML, "yaml") == every_stage
    kinds = [type(stage) for stage in every_stage.stages]
    assert kinds == [EncodeParams, SampleParams, InterveneParams, SampleParams, HiresParams, InpaintParams,
                     SaveParams]
    assert [type(op) for op in every_stage.stages[2].ops] == [PasteOp, ImageOp, AdjustOp, BlurOp, FillOp]


def test_stage_ids_are_type_or_type_n(every_stage):
    assert [stage.id for stage in every_stage.stages] == [
        "encode", "sample-1", "intervene", "sample-2", "hires", "inpaint", "save"]


def test_explicit_stage_id_is_kept_and_others_still_numbered():
    text = EVERY_STAGE_YAML.replace("  - type: sample\n    start: 12\n", "  - type: sample\n    id: finish\n"
                                    "    start: 12\n")
    assert [stage.id for stage in load(text, "yaml").stages][:4] == ["encode", "sample-1", "intervene", "finish"]


def test_defaults_fill_every_stage_that_does_not_set_its_own(every_stage):
    encode, first, intervene, second, hires, inpaint, save = every_stage.stages
    assert (encode.model, encode.seed, encode.width, encode.height, encode.batch_size, encode.clip_skip) == (
        "base", 42, 512, 768, 1, 1)
    for stage in (first, second, inpaint):
        assert (stage.model, stage.seed, stage.steps, stage.cfg) == ("base", 42, 30, 6.5)
    assert (intervene.model, intervene.cfg, intervene.feather) == ("base", 6.5, 0.0)
    assert (hires.model, hires.scale, hires.upscaler, hires.cfg) == ("refiner", 2.0, "latent-nearest-exact", 6.5)
    assert hires.steps == 30            # A1111: hires steps 0 means the base pass's steps
    assert (inpaint.blur, inpaint.curve, inpaint.area, inpaint.padding, inpaint.color_correction) == (
        4, "linear", "whole", 32, False)
    assert (save.quality, save.on_exists) == (95, "number")
    assert every_stage.stages[2].ops[0].mask is None and every_stage.stages[2].ops[4].mask is None


def test_split_positions_are_filled(every_stage):
    first, second = every_stage.stages[1], every_stage.stages[3]
    assert (first.start, first.end, second.start, second.end) == (0, 12, 12, 30)


def test_img2img_start_follows_a1111_denoise_rule():
    text = EVERY_STAGE_YAML.split("  - type: intervene")[0].replace(
        "    negative: blurry\n", "    negative: blurry\n    image: init.png\n    denoise: 0.5\n").replace(
        "    end: 12\n", "")
    recipe = load(text, "yaml")
    # A1111 img2img: t_enc = int(0.5 * 30) = 15, so sampling starts at 30 - 15 - 1 = 14
    assert (recipe.stages[1].start, recipe.stages[1].end) == (14, 30)


def test_loras_are_inherited_as_copies():
    text = EVERY_STAGE_YAML.replace("  cfg: 6.5\n", "  cfg: 6.5\n  loras: [{name: detail.safetensors}]\n")
    recipe = load(text, "yaml")
    first, second = recipe.stages[1], recipe.stages[3]
    assert [lora.name for lora in first.loras] == ["detail.safetensors"] and first.loras[0].weight == 1.0
    assert first.loras[0] is not second.loras[0]


@pytest.mark.parametrize("label, sampler, scheduler", [
    ("DPM++ 2M Karras", "dpmpp_2m", "karras"),
    ("dpm++ 2m  karras", "dpmpp_2m", "karras"),
    ("Euler a", "euler_ancestral", "normal"),
    ("DPM++ SDE Karras", "dpmpp_sde", "karras"),
    ("DPM++ 2M SDE Exponential", "dpmpp_2m_sde", "exponential"),
    ("Heun", "heun", "normal"),
    ("dpmpp_2m", "dpmpp_2m", "normal"),
])
def test_a1111_sampler_labels(label, sampler, scheduler):
    text = f'version = 1\nname = "s"\n[models.m]\ncheckpoint = "x"\n[defaults]\nmodel = "m"\n' \
           f'[[stages]]\ntype = "encode"\n[[stages]]\ntype = "sample"\nsampler = "{label}"\n'
    stage = load(text, "toml").stages[1]
    assert (stage.sampler, stage.scheduler) == (sampler, scheduler)


def test_sampler_label_scheduler_yields_to_an_explicit_scheduler(every_stage):
    text = EVERY_STAGE_YAML.replace("  cfg: 6.5\n", "  cfg: 6.5\n  scheduler: exponential\n")
    recipe = load(text, "yaml")
    assert (recipe.defaults.sampler, recipe.defaults.scheduler) == ("dpmpp_2m", "exponential")
    assert (every_stage.defaults.sampler, every_stage.defaults.scheduler) == ("dpmpp_2m", "karras")
    inpaint = every_stage.stages[5]
    assert (inpaint.sampler, inpaint.scheduler) == ("euler_ancestral", "karras")


@pytest.mark.parametrize("fmt, text", [("toml", EVERY_STAGE_TOML), ("yaml", EVERY_STAGE_YAML)])
def test_set_overrides_any_value(fmt, text):
    recipe = load(text, fmt, ["stages.hires.denoise=0.5", "models.m.checkpoint=/x", "defaults.cfg=6",
                              "stages.sample-2.cfg=4.5", "stages.0.prompt=a castle"])
    assert recipe.stages[4].denoise == 0.5
    assert recipe.models["m"].checkpoint == "/x"
    assert recipe.defaults.cfg == 6.0 and recipe.stages[1].cfg == 6.0 and recipe.stages[3].cfg == 4.5
    assert recipe.stages[0].prompt == "a castle"


def test_set_keeps_strict_types():
    with pytest.raises(RecipeError) as caught:
        load(EVERY_STAGE_YAML, "yaml", ["defaults.steps=twenty"])
    assert str(caught.value) == "recipe.yaml:16:3: defaults.steps: must be an integer (got 'twenty')"


# ---- canonical ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", TWINS)
@pytest.mark.parametrize("fmt", ["json", "toml", "yaml"])
def test_canonical_is_identical_for_toml_and_yaml_twins(stem, fmt):
    from_toml = dumps(load_recipe(RECIPES / f"{stem}.toml").recipe, fmt)
    from_yaml = dumps(load_recipe(RECIPES / f"{stem}.yaml").recipe, fmt)
    assert from_toml == from_yaml


def test_examples_include_txt2img_and_multistage_twins():
    assert {"txt2img", "multistage"} <= set(TWINS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("fmt", ["json", "toml", "yaml"])
def test_canonical_of_canonical_is_unchanged(path, fmt):
    once = dumps(load_recipe(path).recipe, fmt)
    again = dumps(load_text(once, "yaml" if fmt == "json" else fmt, label="c", folder=path.parent).recipe, fmt)
    assert again == once


def test_canonical_json_keys_are_sorted_and_defaults_expanded():
    data = json.loads(canonical_json(load_recipe(RECIPES / "txt2img.toml").recipe))
    assert list(data) == sorted(data)
    sample = data["stages"][1]
    assert list(sample) == sorted(sample)
    assert (sample["id"], sample["start"], sample["end"], sample["cfg"]) == ("sample", 0, 20, 5.0)


def test_inherited_and_explicit_values_canonicalize_the_same():
    explicit = EVERY_STAGE_YAML.replace("  - type: sample\n    end: 12\n",
                                        "  - type: sample\n    end: 12\n    cfg: 6.5\n    seed: 42\n")
    assert canonical_json(load(explicit, "yaml")) == canonical_json(load(EVERY_STAGE_YAML, "yaml"))


# ---- JSON Schema --------------------------------------------------------------------------------

def raw_document(path: Path) -> dict:
    if path.suffix == ".toml":
        return tomllib.loads(path.read_text())
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def validator():
    schema = recipe_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_json_schema_accepts_every_example(validator, path):
    assert list(validator.iter_errors(raw_document(path))) == []


@pytest.mark.parametrize("fmt, text", [("toml", EVERY_STAGE_TOML), ("yaml", EVERY_STAGE_YAML)])
def test_json_schema_accepts_every_stage_kind(validator, fmt, text):
    document = tomllib.loads(text) if fmt == "toml" else yaml.safe_load(text)
    assert list(validator.iter_errors(document)) == []


@pytest.mark.parametrize("where", ["top", "defaults", "stage", "op", "model"])
def test_json_schema_rejects_an_unknown_key(validator, where):
    document = raw_document(RECIPES / "multistage.toml")
    target = {"top": document, "defaults": document["defaults"], "stage": document["stages"][1],
              "op": document["stages"][2]["ops"][0], "model": document["models"]["base"]}[where]
    target["denoize"] = 0.5
    assert not validator.is_valid(document)


def test_json_schema_rejects_an_unknown_stage_type(validator):
    document = raw_document(RECIPES / "txt2img.yaml")
    document["stages"][1]["type"] = "upscale"
    assert not validator.is_valid(document)
