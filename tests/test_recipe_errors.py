"""Every invalid recipe names FILE:LINE:COL, the path into the recipe and what is wrong, on one line.

Each case is a whole document and the exact text `sdbake validate` prints for it. The documents
grow from four heads; their line numbers, for reading the expected positions:
T / Y   lines 1-9 (YAML 1-8): version, name, [models.m], [defaults] with model = "m", steps = 20.
TS / YS the same plus an encode and a sample stage; text appended to TS lands in the sample table
        from line 16 on (YAML: in the sample item from line 12 on, indented by four spaces).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from sdbake.schemas.errors import RecipeError, SdbakeError
from sdbake.schemas.loader import load_recipe, load_text
from sdbake.schemas.names import SAMPLERS

T = '''version = 1
name = "t"

[models.m]
checkpoint = "x.safetensors"

[defaults]
model = "m"
steps = 20
'''
Y = '''version: 1
name: t
models:
  m:
    checkpoint: x.safetensors
defaults:
  model: m
  steps: 20
'''
TS = T + '''
[[stages]]
type = "encode"

[[stages]]
type = "sample"
'''
YS = Y + '''stages:
  - type: encode
  - type: sample
'''
CASES = [
    ("toml-misspelled-stage-key", "toml", TS + 'stepz = 20\n',
     'recipe.toml:16:1: stages[1].stepz: unknown key `stepz` (did you mean `steps`?)'),
    ("yaml-misspelled-stage-key", "yaml", YS + '    cgf: 6\n',
     'recipe.yaml:12:5: stages[1].cgf: unknown key `cgf` (did you mean `cfg`?)'),
    ("toml-misspelled-top-key", "toml", 'verison = 1\n' + TS.split('\n', 1)[1],
     ('recipe.toml:1:1: version: required key is missing\n'
     'recipe.toml:1:1: verison: unknown key `verison` (did you mean `version`?)')),
    ("yaml-misspelled-defaults-key", "yaml", YS.replace('  steps: 20', '  sampler_name: euler'),
     'recipe.yaml:8:3: defaults.sampler_name: unknown key `sampler_name` (did you mean `sampler`?)'),
    ("yaml-misspelled-lora-key", "yaml", YS + '    loras:\n      - {name: detail.safetensors, wieght: 0.5}\n',
     'recipe.yaml:13:36: stages[1].loras[0].wieght: unknown key `wieght` (did you mean `weight`?)'),
    ("toml-denoise-above-1", "toml", TS + '\n[[stages]]\ntype = "hires"\ndenoise = 1.5\n',
     'recipe.toml:19:1: stages[2].denoise: must be <= 1 (got 1.5)'),
    ("yaml-denoise-above-1", "yaml", YS + '  - type: hires\n    denoise: 1.5\n',
     'recipe.yaml:13:5: stages[2].denoise: must be <= 1 (got 1.5)'),
    ("yaml-denoise-zero", "yaml", YS + '  - type: hires\n    denoise: 0\n',
     'recipe.yaml:13:5: stages[2].denoise: must be > 0 (got 0)'),
    ("toml-width-not-multiple-of-8", "toml", T.replace('steps = 20', 'width = 500') + '\n[[stages]]\ntype = "encode"\n',
     'recipe.toml:9:1: defaults.width: must be a multiple of 8 (got 500)'),
    ("yaml-height-not-multiple-of-8", "yaml", Y + 'stages:\n  - type: encode\n    height: 100\n',
     'recipe.yaml:11:5: stages[0].height: must be a multiple of 8 (got 100)'),
    ("toml-steps-zero", "toml", TS.replace('steps = 20', 'steps = 0'),
     'recipe.toml:9:1: defaults.steps: must be >= 1 (got 0)'),
    ("yaml-steps-zero-in-stage", "yaml", YS + '    steps: 0\n',
     'recipe.yaml:12:5: stages[1].steps: must be >= 1 (got 0)'),
    ("toml-start-equals-end", "toml", TS.replace('type = "encode"', 'type = "encode"\nimage = "init.png"') + 'start = 10\nend = 10\n',
     'recipe.toml:17:1: stages[1].start: must be < end (10) (got 10)'),
    ("yaml-start-after-end", "yaml", Y + 'stages:\n  - type: encode\n    image: init.png\n  - type: sample\n    start: 12\n    end: 8\n',
     'recipe.yaml:13:5: stages[1].start: must be < end (8) (got 12)'),
    ("toml-end-beyond-steps", "toml", TS + 'end = 30\n',
     'recipe.toml:16:1: stages[1].end: must be <= steps (20) (got 30)'),
    ("yaml-split-does-not-line-up", "yaml", YS + '    end: 10\n  - type: sample\n    start: 5\n',
     'recipe.yaml:14:5: stages[2].start: the previous stage ended at step 10, so this stage must start at 10 (got 5)'),
    ("toml-split-does-not-line-up", "toml", TS + 'end = 10\n\n[[stages]]\ntype = "sample"\nstart = 5\n',
     'recipe.toml:20:1: stages[2].start: the previous stage ended at step 10, so this stage must start at 10 (got 5)'),
    ("toml-continuation-other-steps", "toml", TS + 'end = 10\n\n[[stages]]\ntype = "sample"\nstart = 10\nsteps = 30\n',
     'recipe.toml:18:1: stages[2]: continues a 20-step normal schedule, but is set to 30 steps normal: a split must keep steps and scheduler'),
    ("yaml-continuation-other-scheduler", "yaml", YS + '    end: 10\n  - type: sample\n    scheduler: karras\n',
     'recipe.yaml:13:5: stages[2]: continues a 20-step normal schedule, but is set to 20 steps karras: a split must keep steps and scheduler'),
    ("yaml-start-on-empty-latent", "yaml", YS + '    start: 5\n',
     'recipe.yaml:12:5: stages[1].start: starts at step 5, but the latent before it is empty: only a stage that ended at step 5 or an init image can be continued'),
    ("yaml-unknown-stage-type", "yaml", YS + '  - type: upscale\n',
     "recipe.yaml:12:5: stages[2]: unknown stage type 'upscale' (expected one of 'encode', 'sample', 'intervene', 'hires', 'inpaint', 'save') (did you mean `sample`?)"),
    ("toml-unknown-stage-type-typo", "toml", TS + '\n[[stages]]\ntype = "sav"\n',
     "recipe.toml:17:1: stages[2]: unknown stage type 'sav' (expected one of 'encode', 'sample', 'intervene', 'hires', 'inpaint', 'save') (did you mean `save`?)"),
    ("yaml-unknown-op", "yaml", YS + '    end: 10\n  - type: intervene\n    ops:\n      - {op: pasta, image: a.png}\n',
     "recipe.yaml:15:9: stages[2].ops[0]: unknown op 'pasta' (expected one of 'paste', 'image', 'adjust', 'blur', 'fill') (did you mean `paste`?)"),
    ("toml-unknown-op", "toml", TS + 'end = 10\n\n[[stages]]\ntype = "intervene"\nops = [{ op = "rotate" }]\n',
     "recipe.toml:20:8: stages[2].ops[0]: unknown op 'rotate' (expected one of 'paste', 'image', 'adjust', 'blur', 'fill')"),
    ("yaml-unknown-sampler", "yaml", YS + '    sampler: euler_b\n',
     f"recipe.yaml:12:5: stages[1].sampler: unknown sampler 'euler_b' (known: {', '.join(SAMPLERS)}, or an A1111 label such as 'DPM++ 2M Karras') (did you mean `euler`?)"),
    ("toml-unknown-scheduler", "toml", TS + 'scheduler = "cosine"\n',
     "recipe.toml:16:1: stages[1].scheduler: unknown scheduler 'cosine' (known: normal, karras, exponential, sgm_uniform, simple, ddim_uniform, beta, kl_optimal, polyexponential, align_your_steps, or Automatic)"),
    ("yaml-unknown-model-reference", "yaml", YS + '    model: refiner\n',
     'recipe.yaml:12:5: stages[1].model: model `refiner` is not defined in [models] (defined: m)'),
    ("toml-unknown-default-model", "toml", TS.replace('model = "m"', 'model = "base"'),
     'recipe.toml:8:1: defaults.model: model `base` is not defined in [models] (defined: m)'),
    ("yaml-no-model-at-all", "yaml", 'version: 1\nname: t\nstages:\n  - type: encode\n',
     'recipe.yaml:4:5: stages[0]: no model: set `model` here or in [defaults], naming an entry of [models]'),
    ("yaml-duplicate-stage-ids", "yaml", YS.replace('  - type: sample\n', '    id: first\n  - type: sample\n    id: first\n'),
     ('recipe.yaml:11:5: stages[0].id: stage id `first` is used more than once\n'
     'recipe.yaml:13:5: stages[1].id: stage id `first` is used more than once')),
    ("toml-missing-name", "toml", TS.replace('name = "t"\n', ''),
     'recipe.toml:1:1: name: required key is missing'),
    ("yaml-missing-stages", "yaml", Y,
     'recipe.yaml:1:1: stages: required key is missing'),
    ("yaml-missing-stage-type", "yaml", YS + '  - prompt: a cat\n',
     'recipe.yaml:12:5: stages[2]: missing `type` key'),
    ("yaml-missing-op-image", "yaml", YS + '    end: 10\n  - type: intervene\n    ops:\n      - op: paste\n        at: [1, 2]\n',
     'recipe.yaml:15:9: stages[2].ops[0].image: required key is missing'),
    ("yaml-string-for-int", "yaml", YS + '    steps: "20"\n',
     "recipe.yaml:12:5: stages[1].steps: must be an integer (got '20')"),
    ("toml-string-for-int", "toml", TS + 'seed = "42"\n',
     "recipe.toml:16:1: stages[1].seed: must be an integer (got '42')"),
    ("yaml-float-for-int", "yaml", YS + '    steps: 20.0\n',
     'recipe.yaml:12:5: stages[1].steps: must be an integer (got 20.0)'),
    ("toml-float-for-int", "toml", TS.replace('steps = 20', 'steps = 20.5'),
     'recipe.toml:9:1: defaults.steps: must be an integer (got 20.5)'),
    ("yaml-bool-for-int", "yaml", YS + '    seed: true\n',
     'recipe.yaml:12:5: stages[1].seed: must be an integer (got true)'),
    ("yaml-int-for-string", "yaml", Y + 'stages:\n  - type: encode\n    prompt: 42\n',
     'recipe.yaml:11:5: stages[0].prompt: must be a string (got 42)'),
    ("toml-malformed-value", "toml", 'version = 1\nname = \n',
     'recipe.toml:2:8: invalid TOML: Invalid value'),
    ("toml-malformed-table", "toml", 'version = 1\nname = "t"\n[defaults\n',
     "recipe.toml:3:10: invalid TOML: Expected ']' at the end of a table declaration"),
    ("toml-duplicate-key", "toml", 'version = 1\nversion = 1\n',
     'recipe.toml:2:12: invalid TOML: Cannot overwrite a value'),
    ("yaml-malformed-flow", "yaml", 'version: 1\nname: [t\n',
     "recipe.yaml:3:1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ("yaml-bad-indentation", "yaml", 'version: 1\n  name: t\n',
     'recipe.yaml:2:7: invalid YAML: mapping values are not allowed here'),
    ("yaml-duplicate-key", "yaml", YS.replace('name: t\n', 'name: t\nname: u\n'),
     'recipe.yaml:3:1: name: duplicate key `name`'),
    ("yaml-empty-file", "yaml", '',
     'recipe.yaml:1:1: a recipe is a mapping of keys, but this document is empty'),
    ("yaml-comment-only", "yaml", '# nothing here\n',
     'recipe.yaml:1:1: a recipe is a mapping of keys, but this document is empty'),
    ("toml-empty-file", "toml", '',
     'recipe.toml:1:1: a recipe is a mapping of keys, but this document is empty'),
    ("yaml-list-document", "yaml", '- type: encode\n- type: sample\n',
     'recipe.yaml:1:1: a recipe is a mapping of keys, but this document is a list'),
    ("yaml-scalar-document", "yaml", 'just text\n',
     'recipe.yaml:1:1: a recipe is a mapping of keys, but this document is a string'),
    ("yaml-recursive-alias", "yaml", YS.replace('defaults:\n', 'matrix:\n  seed: &loop [*loop]\ndefaults:\n'),
     'recipe.yaml:7:9: matrix.seed[0]: this alias refers to a node that contains it (a recursive structure)'),
    ("yaml-non-string-key", "yaml", YS + '    1: 2\n',
     'recipe.yaml:1:1: keys must be strings (got 1)'),
    ("yaml-inpaint-without-mask", "yaml", YS + '  - type: inpaint\n    loops: 2\n',
     'recipe.yaml:12:5: stages[2]: needs a `mask` file or `rects`'),
    ("toml-inpaint-three-denoise", "toml", TS + '\n[[stages]]\ntype = "inpaint"\nmask = "m.png"\ndenoise = [0.5, 0.3, 0.1]\n',
     'recipe.toml:20:1: stages[2].denoise: give one value or [first, last] (got 3 values)'),
    ("yaml-intervene-before-encode", "yaml", Y + 'stages:\n  - type: intervene\n    ops: [{op: blur}]\n',
     'recipe.yaml:10:5: stages[0]: `intervene` needs an `encode` stage before it'),
    ("yaml-hires-on-empty-latent", "yaml", Y + 'stages:\n  - type: encode\n  - type: hires\n',
     'recipe.yaml:11:5: stages[1]: `hires` needs an image, but the latent is still empty: add a `sample` stage before it (or an `image` to the encode stage)'),
    ("yaml-hires-while-noisy", "yaml", YS + '    end: 10\n  - type: hires\n',
     'recipe.yaml:13:5: stages[2]: `hires` needs a finished image, but the latent is still noisy at step 10 of 20: add a sample stage with start = 10'),
    ("toml-inpaint-while-noisy", "toml", TS + 'end = 12\n\n[[stages]]\ntype = "inpaint"\nmask = "m.png"\n',
     'recipe.toml:18:1: stages[2]: `inpaint` needs a finished image, but the latent is still noisy at step 12 of 20: add a sample stage with start = 12'),
    ("yaml-save-before-anything", "yaml", Y + 'stages:\n  - type: save\n',
     'recipe.yaml:10:5: stages[0]: nothing to save: add an `encode` and a `sample` stage before it'),
    ("yaml-version-2", "yaml", YS.replace('version: 1', 'version: 2'),
     'recipe.yaml:1:1: version: must be 1 (got 2)'),
    ("toml-version-string", "toml", TS.replace('version = 1', 'version = "1"'),
     "recipe.toml:1:1: version: must be 1 (got '1')"),
    ("yaml-empty-stages", "yaml", Y + 'stages: []\n',
     'recipe.yaml:9:1: stages: must not be empty'),
    ("yaml-stages-not-a-list", "yaml", Y + 'stages:\n  type: encode\n',
     "recipe.yaml:9:1: stages: must be a list (got {'type': 'encode'})"),
    ("yaml-save-format", "yaml", YS + '  - type: save\n    format: gif\n',
     "recipe.yaml:13:5: stages[2].format: must be one of 'png', 'webp' or 'jpeg' (got 'gif')"),
    ("yaml-paste-at-one-number", "yaml", YS + '    end: 10\n  - type: intervene\n    ops:\n      - {op: paste, image: a.png, at: [4]}\n',
     'recipe.yaml:15:35: stages[2].ops[0].at: must have at least 2 items (got 1)'),
    ("toml-nested-array-table-op", "toml", TS + 'end = 10\n\n[[stages]]\ntype = "intervene"\n\n[[stages.ops]]\nop = "adjust"\nhue = 200\n',
     'recipe.toml:23:1: stages[2].ops[0].hue: must be <= 180 (got 200)'),
    ("yaml-bad-stage-id", "yaml", YS + '    id: "two words"\n',
     "recipe.yaml:12:5: stages[1].id: must match ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ (got 'two words')"),
    ("yaml-bad-sha256", "yaml", YS.replace('    checkpoint: x.safetensors\n', '    checkpoint: x.safetensors\n    sha256: abc\n'),
     "recipe.yaml:6:5: models.m.sha256: must match ^[0-9a-f]{64}$ (got 'abc')"),
    ("yaml-check-tolerance", "yaml", YS + 'check:\n  max_abs_diff: 300\n',
     'recipe.yaml:13:3: check.max_abs_diff: must be <= 255 (got 300)'),
    ("yaml-fill-color-table", "yaml", YS + '    end: 10\n  - type: intervene\n    ops:\n      - {op: fill, color: {r: 1}}\n',
     "recipe.yaml:15:20: stages[2].ops[0].color: must be a string (got {'r': 1}); or must be a list (got {'r': 1})"),
]


def error_text(text: str, fmt: str) -> str:
    with pytest.raises(RecipeError) as caught:
        load_text(text, fmt, label=f"recipe.{fmt}", folder=Path("."))
    return str(caught.value)


@pytest.mark.parametrize("fmt, text, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_invalid_recipe_gives_exact_message(fmt, text, expected):
    message = error_text(text, fmt)
    assert message == expected
    for line in message.splitlines():
        assert re.match(rf"^recipe\.{fmt}:\d+:\d+: \S.*", line), line


def test_there_are_thirty_or_more_cases_in_both_formats():
    formats = [case[1] for case in CASES]
    assert len(CASES) >= 30 and formats.count("toml") >= 10 and formats.count("yaml") >= 10
    assert len({case[0] for case in CASES}) == len(CASES)


def test_all_errors_of_a_file_are_listed_at_once_in_file_order():
    text = Y + """stages:
  - type: encode
    widht: 64
    seed: -2
  - type: sample
    cfg: 200
    sampler: nope
  - type: hires
    denoise: 2
"""
    with pytest.raises(RecipeError) as caught:
        load_text(text, "yaml", label="many.yaml", folder=Path("."))
    lines = str(caught.value).splitlines()
    assert len(caught.value.errors) == len(lines) == 5
    assert [line.split(":")[1] for line in lines] == ["11", "12", "14", "15", "17"]
    assert lines[0] == "many.yaml:11:5: stages[0].widht: unknown key `widht` (did you mean `width`?)"
    assert lines[4] == "many.yaml:17:5: stages[2].denoise: must be <= 1 (got 2)"


def test_cross_field_errors_are_listed_together():
    text = YS.replace("  - type: encode\n", "  - type: encode\n    id: same\n") + """    id: same
    model: other
"""
    assert error_text(text, "yaml").splitlines() == [
        "recipe.yaml:11:5: stages[0].id: stage id `same` is used more than once",
        "recipe.yaml:13:5: stages[1].id: stage id `same` is used more than once",
        "recipe.yaml:14:5: stages[1].model: model `other` is not defined in [models] (defined: m)",
    ]


def test_file_errors_name_the_file_and_position(tmp_path):
    # the document of the foundation check: a sample stage with a misspelled key and no encode before it
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nstages:\n  - type: sample\n    steps: 20\n    denoize: 0.5\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(bad)
    assert str(caught.value) == f"{bad}:6:5: stages[0].denoize: unknown key `denoize`"


@pytest.mark.parametrize("name, content, expected", [
    ("missing.toml", None, "{path}: no such recipe file"),
    ("notes.txt", "version = 1", "{path}: unknown recipe format `.txt` (use .toml, .yaml or .yml)"),
    ("folder.yaml", "dir", "{path}: cannot read recipe: [Errno 21] Is a directory: '{path}'"),
    ("latin1.yaml", b"name: caf\xe9\n", ("{path}: cannot read recipe: 'utf-8' codec can't decode byte 0xe9 in "
                                         "position 9: invalid continuation byte")),
])
def test_unreadable_recipe_files(tmp_path, name, content, expected):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert str(caught.value) == expected.format(path=path)


@pytest.mark.parametrize("override, expected", [
    ("cfg", "recipe.yaml: --set cfg: expected KEY=VALUE"),
    ("=3", "recipe.yaml: --set =3: expected KEY=VALUE with a dotted KEY such as stages.hires.denoise"),
    ("stages..cfg=3", ("recipe.yaml: --set stages..cfg=3: expected KEY=VALUE with a dotted KEY such as "
                      "stages.hires.denoise")),
    ("defaults.cfg=[", ("recipe.yaml: --set defaults.cfg=[: the value is not a TOML/YAML scalar: expected the "
                       "node content, but found '<stream end>'")),
    ("defaults.cfg=!!python/object:os.system", ("recipe.yaml: --set defaults.cfg=!!python/object:os.system: the "
     "value is not a TOML/YAML scalar: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object:os.system'")),
    ("stages.hires.denoise=0.5", ("recipe.yaml: --set stages.hires.denoise: no stage `hires` (stages: encode, "
                                 "sample)")),
    ("name.first=x", "recipe.yaml: --set name.first: `name` is not a table"),
    ("defaults.cfg=abc", "recipe.yaml:6:1: defaults.cfg: must be a number (got 'abc')"),
    ("stages.sample.steps=0", "recipe.yaml:11:5: stages[1].steps: must be >= 1 (got 0)"),
])
def test_bad_overrides_are_our_errors(override, expected):
    with pytest.raises(SdbakeError) as caught:
        load_text(YS, "yaml", label="recipe.yaml", folder=Path("."), overrides=[override])
    assert str(caught.value) == expected
