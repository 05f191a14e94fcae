"""`validate` catches what `run` would hit: a corpus of broken recipes, one per failure kind. Each fails
`validate` with `file:line:col: path: message` at the line of the mistake (with a did-you-mean where a
near name exists), and `run` on it fails before any stage executes."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from sdbake.runner.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "models" / "demo"

BASE = """version = 1
name = "corpus"

[models.base]
checkpoint = "{model}"

[defaults]
model = "base"
seed = 3
width = 64
height = 64
steps = 2
sampler = "euler"
scheduler = "normal"

[[stages]]
type = "encode"
prompt = "a __colors__ circle, embedding:style"

[[stages]]
type = "sample"
end = 1

[[stages]]
type = "intervene"
ops = [{{ op = "paste", image = "edits/square.png", at = [8, 8] }}, {{ op = "fill", color = "red", rect = [0, 0, 8, 8] }}]

[[stages]]
type = "sample"
start = 1

[[stages]]
type = "hires"
scale = 2.0
upscaler = "latent-nearest-exact"

[[stages]]
type = "inpaint"
mask = "masks/center.png"

[[stages]]
type = "save"
path = "{{{{ name }}}}/{{{{ seed }}}}.png"
on_exists = "number"
"""

# (case, text replaced, replacement, how the line the error names starts, the message part)
CORPUS = [
    ("missing model", 'checkpoint = "{model}"', 'checkpoint = "nowhere/model.safetensors"', "checkpoint =",
     "models.base.checkpoint: checkpoints model 'nowhere/model.safetensors' not found"),
    ("model folder that is no model", 'checkpoint = "{model}"', 'checkpoint = "edits"', "checkpoint =",
     "is a folder without model_index.json"),
    ("missing mask", 'mask = "masks/center.png"', 'mask = "masks/centre.png"', "mask =",
     "stages[5].mask: mask file not found: {folder}/masks/centre.png (did you mean `masks/center.png`?)"),
    ("mask that is a folder", 'mask = "masks/center.png"', 'mask = "masks"', "mask =",
     "mask `masks` is not a regular file"),
    ("mask that is no image", 'mask = "masks/center.png"', 'mask = "notes.txt"', "mask =",
     "stages[5].mask: not a readable image"),
    ("missing init image", 'prompt = "a __colors__', 'image = "init.pgn"\nprompt = "a __colors__', "image =",
     "stages[0].image: image file not found: {folder}/init.pgn (did you mean `init.png`?)"),
    ("missing paste image", 'image = "edits/square.png"', 'image = "edits/squares.png"', "ops = ",
     "stages[2].ops[0].image: image file not found: {folder}/edits/squares.png (did you mean `edits/square.png`?)"),
    ("template with an undefined name", 'path = "{{{{ name }}}}/{{{{ seed }}}}.png"', 'path = "{{{{ sed }}}}.png"',
     "path =", "stages[6].path: save path template '{{ sed }}.png': 'sed' is undefined"),
    ("template syntax error", 'path = "{{{{ name }}}}/{{{{ seed }}}}.png"', 'path = "out/{{{{ seed }}.png"',
     "path =", "is invalid: unexpected '}' (template line 1, column 5)"),
    ("template with an unknown filter", 'path = "{{{{ name }}}}/{{{{ seed }}}}.png"',
     'path = "{{{{ prompt | wordz(3) }}}}.png"', "path =", "(did you mean `words`?)"),
    ("colour name typo", 'color = "red"', 'color = "greeen"', "ops = ",
     ("stages[2].ops[1].color: unknown colour 'greeen' (use '#rrggbb', a CSS colour name or [r, g, b]) "
     "(did you mean `green`?)")),
    ("colour out of range", 'color = "red"', "color = [300, 0, 0]", "ops = ",
     "a colour list is [r, g, b] with values 0-255 (got [300, 0, 0])"),
    ("upscaler typo", 'upscaler = "latent-nearest-exact"', 'upscaler = "latent-nearest-exakt"', "upscaler =",
     "unknown upscaler 'latent-nearest-exakt'"),
    ("sampler typo", 'sampler = "euler"', 'sampler = "eulr"', "sampler =",
     "defaults.sampler: unknown sampler 'eulr'"),
    ("scheduler typo", 'scheduler = "normal"', 'scheduler = "karas"', "scheduler =",
     "(did you mean `karras`?)"),
    ("missing wildcard", "a __colors__ circle", "a __colours__ circle", "prompt =",
     "stages[0].prompt: wildcard __colours__ not found in: {folder}/wildcards (did you mean `colors`?)"),
    ("missing LoRA", 'scheduler = "normal"', 'scheduler = "normal"\nloras = [{{ name = "loras/detial.safetensors" }}]',
     "loras =", "(did you mean `loras/detail.safetensors`?)"),
    ("LoRA that is a folder", 'scheduler = "normal"', 'scheduler = "normal"\nloras = [{{ name = "loras" }}]',
     "loras =", "lora `loras` is a folder, not a file"),
    ("missing embedding", "embedding:style", "embedding:styel", "prompt =",
     "embedding `styel` not found in: {folder}/embeddings (did you mean `style`?)"),
    ("hires target too large", "width = 64", "width = 4160", "scale =",
     "stages[4].scale: the hires target 8320x128 is outside 64-8192 pixels a side (from 4160x64)"),
    ("paste outside the image", "at = [8, 8]", "at = [64, 8]", "ops = ",
     ("stages[2].ops[0]: the paste op's extent [64, 8, 16, 16] lies entirely outside the 64x64 image: it would "
     "change nothing")),
    ("fill outside the stage's rect", 'type = "intervene"\n', 'type = "intervene"\nrect = [32, 32, 32, 32]\n',
     "ops = ", ("stages[2].ops[1]: the fill op's extent [0, 0, 8, 8] lies entirely outside the stage's rect "
     "[32, 32, 32, 32]: it would change nothing")),
    ("intervene rect outside the image", 'type = "intervene"\n', 'type = "intervene"\nrect = [100, 0, 8, 8]\n',
     "rect =", "stages[2].rect: the rect [100, 0, 8, 8] lies entirely outside the 64x64 image: nothing can change"),
    ("output collision", 'on_exists = "number"', 'on_exists = "error"', "path =",
     'already exists and on_exists = "error" (it was not made by this recipe'),
]


@pytest.fixture
def corpus_folder(tmp_path) -> Path:
    from PIL import Image
    folder = tmp_path / "recipes"
    for name, size in (("masks/center.png", (64, 64)), ("edits/square.png", (16, 16)), ("init.png", (64, 64))):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L" if "mask" in name else "RGB", size, 255).save(folder / name)
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "wildcards").mkdir()
    (folder / "wildcards" / "colors.txt").write_text("red\nblue\n")
    (folder / "embeddings").mkdir()
    (folder / "embeddings" / "style.safetensors").write_bytes(b"embedding bytes: named, never loaded here")
    (folder / "loras").mkdir()
    (folder / "loras" / "detail.safetensors").write_bytes(b"lora bytes: named, never loaded here")
    collision = tmp_path / "out" / "corpus" / "3.png"
    collision.parent.mkdir(parents=True)
    Image.new("RGB", (64, 64), (1, 2, 3)).save(collision)        # someone else's file, no sdbake recipe
    return folder


def write_recipe(folder: Path, replace: str = "", by: str = "") -> Path:
    text = BASE.replace(replace, by) if replace else BASE
    assert not replace or replace in BASE, replace
    path = folder / "recipe.toml"
    path.write_text(text.format(model=DEMO_MODEL))
    return path


def test_the_corpus_base_recipe_validates(corpus_folder, tmp_path, capsys):
    recipe = write_recipe(corpus_folder)
    assert main(["validate", str(recipe), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    upscaler = write_recipe(corpus_folder, 'upscaler = "latent-nearest-exact"',
                            'upscaler = "Latent (bicubic antialiased)"')       # A1111's label
    assert main(["validate", str(upscaler), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("case, replace, by, at, message", CORPUS, ids=[c[0] for c in CORPUS])
def test_validate_names_the_line_and_run_stops_before_any_stage(case, replace, by, at, message, corpus_folder,
                                                                 tmp_path, capsys, monkeypatch):
    recipe = write_recipe(corpus_folder, replace, by)
    [line] = [n for n, text in enumerate(recipe.read_text().splitlines(), 1) if text.startswith(at)]
    out = str(tmp_path / "out")
    assert main(["validate", str(recipe), "--out", out]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    expected = message.replace("{folder}", str(corpus_folder))
    matching = [e for e in errors if expected in e]
    assert matching, f"{case}: expected {expected!r} in {errors}"
    assert matching[0].startswith(f"{recipe}:{line}:"), f"{case}: {matching[0]} is not at line {line}"

    def no_stage_may_run(*args, **kwargs):
        raise AssertionError("a stage started: the run got past its checks")
    # A class attribute, looked up at each call: patching a module-level function would leak into any
    # module that first imports it (by name) while the patch is on, and break later tests' renders.
    monkeypatch.setattr("sdbake.runner.runtime.Runtime.run_stage", no_stage_may_run)
    started = time.perf_counter()
    code = main(["run", str(recipe), "--out", out, "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 1 and expected in capsys.readouterr().err
    assert time.perf_counter() - started < 10


def test_ops_partly_outside_the_image_or_the_rect_validate_and_are_clipped_at_run_time(corpus_folder, tmp_path,
                                                                                        capsys):
    recipe = write_recipe(corpus_folder, 'type = "intervene"\n', 'type = "intervene"\nrect = [4, 4, 60, 60]\n')
    text = recipe.read_text().replace("at = [8, 8]", "at = [56, -8]")
    recipe.write_text(text)
    assert main(["validate", str(recipe), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err


def test_rerun_with_on_exists_error_meets_its_own_image_and_passes(tmp_path, tiny_model_dir, capsys):
    """The collision check refuses files this recipe did not make, not the image of its own last run
    (the writer accepts identical bytes)."""
    recipe = tmp_path / "again.toml"
    recipe.write_text(f'version = 1\nname = "again"\n[models.m]\ncheckpoint = "{tiny_model_dir}"\n'
                      '[defaults]\nmodel = "m"\nwidth = 64\nheight = 64\nsteps = 1\n'
                      '[[stages]]\ntype = "encode"\nprompt = "a red circle"\n[[stages]]\ntype = "sample"\n'
                      '[[stages]]\ntype = "save"\npath = "{{ seed }}.png"\non_exists = "error"\n')
    argv = ["run", str(recipe), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(argv) == 0 and (tmp_path / "out" / "0.png").is_file()
    assert main(["validate", str(recipe), "--out", str(tmp_path / "out")]) == 0
    assert main(argv) == 0, capsys.readouterr().err
