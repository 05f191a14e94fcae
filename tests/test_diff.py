"""`sdbake diff`: semantic per-stage differences and the reuse / re-run consequence (checked against plan keys).

Plans need model files that resolve, not weights that load: a folder with a model_index.json and a
few bytes is a model here, so these tests never import torch.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sdbake.runner.commands import diff as diff_command
from sdbake.runner.diff import consequence_line, diff_loaded, diff_sources
from sdbake.runner.diff_text import format_text
from sdbake.runner.numerics import Numerics
from sdbake.runner.plan import build_plan
from sdbake.schemas.loader import load_recipe

ROOT = Path(__file__).resolve().parent.parent

HEAD = """version = 1
name = "d"
[models.base]
checkpoint = "model"
[defaults]
model = "base"
seed = 3
width = 64
height = 64
steps = 20
"""
SIMPLE = HEAD + """
[[stages]]
type = "encode"
prompt = "a red circle"
[[stages]]
type = "sample"
{sample}
[[stages]]
type = "save"
path = "{{{{ name }}}}/{{{{ seed }}}}.png"
"""
SPLIT = HEAD + """
[[stages]]
type = "encode"
prompt = "a red circle"
[[stages]]
type = "sample"
end = 10
[[stages]]
type = "sample"
start = 10
{second}
{extra}
[[stages]]
type = "save"
path = "{{{{ name }}}}/{{{{ seed }}}}.png"
"""
HIRES = """[[stages]]
type = "hires"
scale = 2.0
denoise = 0.5
steps = 4"""


def fake_model(folder: Path, weights: bytes = b"weights-a") -> Path:
    """Enough of a diffusers folder to resolve and hash (nothing loads it)."""
    (folder / "model" / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (folder / "model" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    return folder / "model"


def write(folder: Path, name: str, text: str, weights: bytes = b"weights-a") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model").exists():
        fake_model(folder, weights)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def plan_outcome(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """(reused, re-run) stage ids of B straight from the two plans' keys."""
    numerics = Numerics.choose()
    old = build_plan(load_recipe(a), numerics, Path("outputs"))
    new = build_plan(load_recipe(b), numerics, Path("outputs"))
    cached = {inv.key for inv in old.invocations}
    return ([inv.id for inv in new.invocations if inv.key in cached],
            [inv.id for inv in new.invocations if inv.key not in cached])


def diff_paths(a: Path, b: Path):
    return diff_sources(str(a), str(b))


def stage(diff, stage_id):
    return next(s for s in diff.stages if s.id == stage_id)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    diff_command.register(parser.add_subparsers())
    args = parser.parse_args(["diff", *argv])
    return args.func(args)


def test_toml_and_yaml_twins_are_identical(tmp_path, capsys):
    toml = write(tmp_path, "r.toml", SIMPLE.format(sample=""))
    yaml_text = ("version: 1\nname: d\nmodels: {base: {checkpoint: model}}\n"
                 "defaults: {model: base, seed: 3, width: 64, height: 64, steps: 20}\n"
                 "stages:\n  - {type: encode, prompt: a red circle}\n  - {type: sample}\n"
                 "  - {type: save, path: '{{ name }}/{{ seed }}.png'}\n")
    yaml = write(tmp_path, "r.yaml", yaml_text)
    diff = diff_paths(toml, yaml)
    assert diff.identical and diff.exact and diff.rerun == []
    assert run_cli(str(toml), str(yaml)) == 0
    assert "identical" in capsys.readouterr().out


def test_the_repository_twins_are_identical(capsys):
    for toml in sorted((ROOT / "recipes").glob("*.toml")):
        yaml = toml.with_suffix(".yaml")
        if yaml.exists():
            assert run_cli(str(toml), str(yaml)) == 0, capsys.readouterr().out


def test_explicit_default_is_no_change(tmp_path):
    omitted = write(tmp_path, "a.toml", SIMPLE.format(sample=""))
    explicit = write(tmp_path, "b.toml", SIMPLE.format(sample="cfg = 7.0\nsampler = \"euler\""))
    assert diff_paths(omitted, explicit).identical


def test_changed_field_shows_old_and_new_value_and_what_reruns(tmp_path, capsys):
    a = write(tmp_path, "a.toml", SIMPLE.format(sample=""))
    b = write(tmp_path, "b.toml", SIMPLE.format(sample="cfg = 11.5"))
    diff = diff_paths(a, b)
    changes = stage(diff, "sample").changes
    assert [(c.field, c.old, c.new) for c in changes] == [("cfg", 7.0, 11.5)]
    assert (diff.reused, diff.rerun) == plan_outcome(a, b) == (["encode"], ["sample", "save"])
    assert run_cli(str(a), str(b)) == 1
    out = capsys.readouterr().out
    assert "cfg: 7.0 -> 11.5" in out and "stages encode reused from cache; sample, save re-run" in out


def test_change_in_the_second_half_of_a_split_reuses_the_first(tmp_path):
    a = write(tmp_path, "a.toml", SPLIT.format(second="", extra=""))
    b = write(tmp_path, "b.toml", SPLIT.format(second="cfg = 4.0", extra=""))
    diff = diff_paths(a, b)
    assert (diff.reused, diff.rerun) == plan_outcome(a, b)
    assert consequence_line(diff) == "stages encode, sample-1 reused from cache; sample-2, save re-run"


def test_added_and_removed_stage_follow_the_plan(tmp_path):
    a = write(tmp_path, "a.toml", SPLIT.format(second="", extra=""))
    b = write(tmp_path, "b.toml", SPLIT.format(second="", extra=HIRES))
    added = diff_paths(a, b)
    assert stage(added, "hires").status == "added" and stage(added, "hires").outcome == "re-run"
    assert (added.reused, added.rerun) == plan_outcome(a, b)
    removed = diff_paths(b, a)
    assert stage(removed, "hires").status == "removed"
    assert (removed.reused, removed.rerun) == plan_outcome(b, a)
    assert "hires no longer run" in consequence_line(removed)


def test_moved_stage_is_reported_with_its_positions(tmp_path):
    saves = ('[[stages]]\ntype = "save"\nid = "{}"\npath = "{}.png"\n')
    body = HEAD + '[[stages]]\ntype = "encode"\nprompt = "x"\n[[stages]]\ntype = "sample"\n'
    a = write(tmp_path, "a.toml", body + saves.format("first", "one") + saves.format("second", "two"))
    b = write(tmp_path, "b.toml", body + saves.format("second", "two") + saves.format("first", "one"))
    diff = diff_paths(a, b)
    moved = [s for s in diff.stages if s.moved]
    assert len(moved) == 1 and moved[0].status == "same"
    assert (moved[0].old_index, moved[0].new_index) in ((2, 3), (3, 2))
    assert (diff.reused, diff.rerun) == plan_outcome(a, b)
    assert not diff.identical and " moved " in format_text(diff)


def test_changed_model_file_is_found_by_hash(tmp_path):
    a = write(tmp_path / "one", "r.toml", SIMPLE.format(sample=""), weights=b"weights-a")
    b = write(tmp_path / "two", "r.toml", SIMPLE.format(sample=""), weights=b"weights-b")
    diff = diff_paths(a, b)
    model = diff.models[0]
    assert model.status == "changed" and model.changes == []       # same path text, other content
    assert [c.field for c in model.files] == ["checkpoint"]
    assert (diff.reused, diff.rerun) == plan_outcome(a, b) == ([], ["encode", "sample", "save"])
    assert "sha256 checkpoint" in format_text(diff)


def test_unresolvable_model_compares_paths_and_says_so(tmp_path):
    a = write(tmp_path, "a.toml", SIMPLE.format(sample="").replace('"model"', '"missing-a"'))
    b = write(tmp_path, "b.toml", SIMPLE.format(sample="steps = 30").replace('"model"', '"missing-b"'))
    diff = diff_paths(a, b)
    assert not diff.exact and "compared paths only" in diff.models[0].note
    assert [(c.field, c.old, c.new) for c in diff.models[0].changes] == [("checkpoint", "missing-a", "missing-b")]
    assert diff.rerun == ["encode", "sample", "save"]      # estimated: the model path changed everywhere
    assert "estimated" in format_text(diff)


def test_changed_input_file_is_reported_in_its_stage(tmp_path):
    from PIL import Image
    body = HEAD + ('[[stages]]\ntype = "encode"\nimage = "init.png"\ndenoise = 0.5\n'
                   '[[stages]]\ntype = "sample"\n[[stages]]\ntype = "save"\npath = "x.png"\n')
    a = write(tmp_path / "one", "r.toml", body)
    b = write(tmp_path / "two", "r.toml", body)
    Image.new("RGB", (64, 64), (0, 0, 0)).save(tmp_path / "one" / "init.png")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "two" / "init.png")
    diff = diff_paths(a, b)
    encode = stage(diff, "encode")
    assert encode.status == "changed" and [c.field for c in encode.inputs] == ["input files.image"]
    assert (diff.reused, diff.rerun) == plan_outcome(a, b)


def test_changed_wildcard_file_is_reported(tmp_path):
    pytest.importorskip("sdbake.stages.prompts.wildcards", reason="the wildcard module has not landed yet")
    body = SIMPLE.format(sample="").replace("a red circle", "a __colour__ circle")
    a = write(tmp_path / "one", "r.toml", body)
    b = write(tmp_path / "two", "r.toml", body)
    for folder, words in (("one", "red\n"), ("two", "green\n")):
        (tmp_path / folder / "wildcards").mkdir()
        (tmp_path / folder / "wildcards" / "colour.txt").write_text(words)
    diff = diff_paths(a, b)
    assert [w.name for w in diff.wildcards] == ["colour"]
    assert [c.field for c in stage(diff, "encode").inputs if c.field.startswith("resolved prompts")]
    assert (diff.reused, diff.rerun) == plan_outcome(a, b)


def embed(recipe_path: Path, image_path: Path) -> Path:
    """An image carrying `recipe_path`'s canonical recipe, as the save stage embeds it."""
    from PIL import Image
    from sdbake.schemas.canonical import canonical_dict
    from sdbake.stages.output.metadata import encode_image
    loaded = load_recipe(recipe_path)
    embedded = json.dumps({"recipe": canonical_dict(loaded.recipe), "recipe_folder": str(loaded.folder)})
    image_path.write_bytes(encode_image(Image.new("RGB", (64, 64)), "png", "a red circle", embedded))
    return image_path


def test_image_against_recipe(tmp_path):
    a = write(tmp_path, "a.toml", SIMPLE.format(sample=""))
    b = write(tmp_path, "b.toml", SIMPLE.format(sample="steps = 8"))
    image = embed(a, tmp_path / "made.png")
    assert run_cli(str(image), str(a)) == 0
    diff = diff_paths(image, b)
    assert [(c.field, c.old, c.new) for c in stage(diff, "sample").changes] == [("end", 20, 8), ("steps", 20, 8)]
    assert (diff.reused, diff.rerun) == plan_outcome(a, b)


def git(repo: Path, *argv: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *argv], cwd=repo,
                   check=True, capture_output=True)


def test_git_revision_against_working_copy(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    recipe = write(repo, "r.recipe.toml", SIMPLE.format(sample=""))
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    recipe.write_text(SIMPLE.format(sample='sampler = "heun"'))
    monkeypatch.chdir(repo)
    assert run_cli("HEAD:r.recipe.toml", "r.recipe.toml") == 1
    out = capsys.readouterr().out
    assert 'sampler: "euler" -> "heun"' in out
    assert run_cli("HEAD:r.recipe.toml", "HEAD:r.recipe.toml") == 0


def test_json_format_and_no_colour_when_piped(tmp_path, capsys):
    a = write(tmp_path, "a.toml", SIMPLE.format(sample=""))
    b = write(tmp_path, "b.toml", SIMPLE.format(sample="cfg = 11.5"))
    assert run_cli(str(a), str(b), "--format", "json") == 1
    document = json.loads(capsys.readouterr().out)
    assert document["identical"] is False and document["rerun"] == ["sample", "save"]
    assert run_cli(str(a), str(b)) == 1
    assert "\033[" not in capsys.readouterr().out            # captured output is not a terminal
    assert run_cli(str(a), str(b), "--color", "always") == 1
    assert "\033[" in capsys.readouterr().out


def test_bad_input_exits_2(tmp_path, capsys):
    a = write(tmp_path, "a.toml", SIMPLE.format(sample=""))
    assert run_cli(str(a), str(tmp_path / "missing.toml")) == 2
    assert "missing.toml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        run_cli(str(a))
    assert usage.value.code == 2


def test_diff_does_not_import_torch(tmp_path):
    a = write(tmp_path, "a.toml", SIMPLE.format(sample=""))
    b = write(tmp_path, "b.toml", SIMPLE.format(sample="cfg = 11.5"))
    code = ("import sys; from sdbake.runner.diff import diff_sources; "
            f"d = diff_sources({str(a)!r}, {str(b)!r}); assert d.exact; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_diff_loaded_labels_and_field_paths_inside_lists(tmp_path):
    body = HEAD + ('[[stages]]\ntype = "encode"\nprompt = "x"\n[[stages]]\ntype = "sample"\nend = 10\n'
                   '[[stages]]\ntype = "intervene"\nops = [{{ op = "blur", radius = {r} }}]\n'
                   '[[stages]]\ntype = "sample"\n[[stages]]\ntype = "save"\npath = "x.png"\n')
    a = write(tmp_path, "a.toml", body.format(r=2.0))
    b = write(tmp_path, "b.toml", body.format(r=3.0))
    diff = diff_loaded(load_recipe(a), load_recipe(b), labels=("old", "new"))
    assert [(c.field, c.old, c.new) for c in stage(diff, "intervene").changes] == [("ops[0].radius", 2.0, 3.0)]
    assert diff.reused == ["encode", "sample-1"] and (diff.reused, diff.rerun) == plan_outcome(a, b)
    assert format_text(diff).startswith("--- old\n+++ new\n")


def test_git_textconv_makes_plain_git_diff_semantic(tmp_path):
    repo = tmp_path / "repo"
    recipe = write(repo, "r.recipe.toml", SIMPLE.format(sample=""))
    (repo / ".gitattributes").write_text("*.recipe.toml diff=sdbake\n")
    git(repo, "init", "-q")
    git(repo, "config", "diff.sdbake.textconv", f"{sys.executable} -m sdbake.runner.cli canonical")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")

    def git_diff() -> str:
        return subprocess.run(["git", "diff"], cwd=repo, capture_output=True, text=True, check=True).stdout

    recipe.write_text(SIMPLE.format(sample="cfg = 7.0   # the default, spelled out"))
    assert git_diff() == ""                       # textually changed, semantically the same
    recipe.write_text(SIMPLE.format(sample="cfg = 11.5"))
    assert "-cfg = 7.0\n+cfg = 11.5" in git_diff()
