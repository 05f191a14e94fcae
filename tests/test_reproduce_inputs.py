"""`run IMAGE` and `pack` re-render what used other files: wildcards, an init image, a mask, a paste
image (DESIGN.md section 4, save). The image embeds its resolved prompts and the sha256 of every
file its recipe prefix read; the files are found by hash next to the image, in --inputs, under
--recipe-dir, or in the cache's input store, and models by hash in the model folders."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

RECIPE = '''version = 1
name = "inputs"
[models.m]
checkpoint = "models/tiny"
[defaults]
model = "m"
seed = {seed}
width = 64
height = 64
steps = 4
sampler = "euler"
scheduler = "karras"
cfg = 5.0
batch_size = {batch}

[[stages]]
type = "encode"
prompt = "a __colors__ circle"
image = "init.png"
denoise = 0.9

[[stages]]
type = "sample"
end = 2

[[stages]]
type = "intervene"
mask = "mask.png"
ops = [{{ op = "paste", image = "paste.png", at = [8, 8] }}]

[[stages]]
type = "sample"
start = 2

[[stages]]
type = "inpaint"
mask = "mask.png"
steps = 3
denoise = 0.5

[[stages]]
type = "save"
path = "{{{{ seed }}}}.png"
'''


@pytest.fixture
def env(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("SDBAKE_THREADS", "1")
    monkeypatch.setenv("SDBAKE_HASH_INDEX", str(tmp_path / "hash-index.json"))
    config = tmp_path / "config.toml"       # the model folders of "this machine"
    config.write_text(f'[folders]\ncheckpoints = ["{tiny_model_dir.parent}"]\n')
    monkeypatch.setenv("SDBAKE_CONFIG", str(config))
    monkeypatch.delenv("SDBAKE_CACHE", raising=False)


def make_recipe(folder: Path, model: Path, seed=5, batch=2) -> Path:
    folder.mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "models" / "tiny").symlink_to(model, target_is_directory=True)
    (folder / "wildcards").mkdir()
    (folder / "wildcards" / "colors.txt").write_text("red\nblue\ngreen\nyellow\norange\npurple\n")
    Image.new("RGB", (64, 64), (200, 120, 40)).save(folder / "init.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(folder / "mask.png")
    Image.new("RGB", (16, 16), (20, 40, 220)).save(folder / "paste.png")
    recipe = folder / "r.toml"
    recipe.write_text(RECIPE.format(seed=seed, batch=batch))
    return recipe


def sdbake(capsys, *args) -> tuple[int, str, str]:
    from sdbake.runner.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


@pytest.fixture
def rendered(env, tmp_path, tiny_model_dir, capsys, monkeypatch):
    """The recipe rendered once (two images, different wildcard picks); then its folder moves away."""
    recipe = make_recipe(tmp_path / "project", tiny_model_dir)
    monkeypatch.chdir(tmp_path / "project")
    code, _, err = sdbake(capsys, "run", recipe, "--out", tmp_path / "first", "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    images = sorted((tmp_path / "first").glob("*.png"))
    assert [p.name for p in images] == ["5.png", "6.png"]
    for path in images:
        document = json.loads(Image.open(path).text["sdbake"])
        resolved = document["resolved"]["encode"]["prompts"]       # the batch's prompts, this one at its index
        assert resolved[document["batch_index"]] == document["prompt"] and "__" not in document["prompt"]
    shutil.move(tmp_path / "project", tmp_path / "moved")       # nothing is where the recipe said
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return images


def test_image_embeds_resolved_prompt_and_the_hash_of_every_file_it_read(rendered):
    document = json.loads(Image.open(rendered[1]).text["sdbake"])
    assert document["seed"] == 6 and document["batch_index"] == 1
    assert set(document["files"]) == {"encode", "intervene", "inpaint"}
    assert set(document["files"]["intervene"]) == {"mask", "ops.0.image"}
    assert list(document["wildcards"]) == ["wildcards/colors.txt"]
    assert len(document["models"]["m"]["checkpoint"]) == 64
    assert [s["id"] for s in document["recipe"]["stages"]] == ["encode", "sample-1", "intervene", "sample-2",
                                                                "inpaint", "save"]


def test_run_image_reproduces_from_another_folder_through_the_cache_input_store(rendered, tmp_path, capsys):
    for image in rendered:
        copy = tmp_path / "elsewhere" / image.name
        shutil.copy(image, copy)
        code, out, err = sdbake(capsys, "run", copy, "--out", tmp_path / f"again-{image.stem}",
                                "--cache-dir", tmp_path / "cache")
        assert code == 0, err
        assert "reproduced" in out
        # its batch is rendered again (the batch's size changes the last bits on CPU): both images
        assert pixels(tmp_path / f"again-{image.stem}" / image.name) == pixels(image)


def test_run_image_finds_files_in_inputs_or_recipe_dir_else_says_which_is_missing(rendered, tmp_path, capsys):
    image = rendered[0]
    fresh = tmp_path / "fresh-cache"
    code, _, err = sdbake(capsys, "run", image, "--out", tmp_path / "x", "--cache-dir", fresh)
    assert code == 1 and "init.png" in err and "sha256" in err
    for option, folder in (("--inputs", tmp_path / "moved"), ("--recipe-dir", tmp_path / "moved")):
        out_dir = tmp_path / f"out{option}"
        code, _, err = sdbake(capsys, "run", image, option, folder, "--out", out_dir, "--cache-dir", fresh)
        assert code == 0, err
        assert pixels(out_dir / image.name) == pixels(image)


def test_run_image_refuses_a_checkpoint_that_changed_under_its_name_and_takes_the_recorded_one_where_it_is(
        rendered, tmp_path, tiny_model_dir, capsys, monkeypatch):
    from safetensors.torch import load_file, save_file
    from sdbake.runner.modelfiles import path_sha256
    image = rendered[0]
    recorded = json.loads(Image.open(image).text["sdbake"])["models"]["m"]["checkpoint"]
    changed = image.parent / "models" / "tiny"           # where the name now leads: another model
    shutil.copytree(tiny_model_dir, changed)
    unet = next((changed / "unet").glob("*.safetensors"))
    save_file({name: tensor * 1.5 for name, tensor in load_file(unet).items()}, unet)
    changed_sha = path_sha256(changed)
    config = tmp_path / "no-models.toml"                 # and no model folder holds the recorded one
    config.write_text(f'[folders]\ncheckpoints = ["{tmp_path / "elsewhere"}"]\n')
    monkeypatch.setenv("SDBAKE_CONFIG", str(config))
    code, out, err = sdbake(capsys, "run", image, "--inputs", tmp_path / "moved", "--out", tmp_path / "refused",
                            "--cache-dir", tmp_path / "fresh-cache")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [(f"{image}: checkpoint `models/tiny` (sha256 {recorded[:12]}) is in no "
                                         f"checkpoint folder (`models/tiny` is {changed}, sha256 {changed_sha[:12]})")]
    assert not (tmp_path / "refused").exists()           # never a silent render with another model
    monkeypatch.setenv("SDBAKE_CONFIG", str(tmp_path / "config.toml"))      # the folder with the recorded one
    code, out, err = sdbake(capsys, "run", image, "--inputs", tmp_path / "moved", "--out", tmp_path / "again",
                            "--cache-dir", tmp_path / "fresh-cache")
    assert code == 0, err
    assert "reproduced" in out and pixels(tmp_path / "again" / image.name) == pixels(image)
    assert f"note: {image}: checkpoint `models/tiny` (sha256 {recorded[:12]}) found by its hash: " \
           f"{tiny_model_dir.resolve()} (`models/tiny` is {changed}, sha256 {changed_sha[:12]})" in err.splitlines()


def test_pack_round_trip_into_a_fresh_folder_and_cache(rendered, tmp_path, capsys, monkeypatch):
    bundle = tmp_path / "bundle.tar.gz"
    code, _, err = sdbake(capsys, "pack", tmp_path / "moved" / "r.toml", "-o", bundle)
    assert code == 0, err
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
    assert "recipe.toml" in names and "models.json" in names and "wildcards/colors.txt" in names
    assert sum(n.startswith("inputs/") for n in names) == 3          # init, mask, paste: once each
    assert not any("tiny" in n or n.endswith(".safetensors") for n in names)   # models are not packed
    shutil.rmtree(tmp_path / "moved")
    fresh = tmp_path / "machine-b"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    code, _, err = sdbake(capsys, "run", bundle, "--out", fresh / "out", "--cache-dir", fresh / "cache")
    assert code == 0, err
    assert sorted(p.name for p in (fresh / "out").glob("*.png")) == ["5.png", "6.png"]
    for image in rendered:
        assert pixels(fresh / "out" / image.name) == pixels(image)


def test_pack_of_an_image_reproduces_it(rendered, tmp_path, capsys, monkeypatch):
    image = rendered[1]
    bundle = tmp_path / "image.tgz"
    code, _, err = sdbake(capsys, "pack", image, "-o", bundle, "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    fresh = tmp_path / "machine-c"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    code, _, err = sdbake(capsys, "run", bundle, "--out", fresh / "out", "--cache-dir", fresh / "cache")
    assert code == 0, err
    assert pixels(fresh / "out" / image.name) == pixels(image)


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w:gz") as archive:
        recipe = b'version = 1\n'
        info = tarfile.TarInfo("recipe.toml")
        info.size = len(recipe)
        archive.addfile(info, io.BytesIO(recipe))
        archive.addfile(member, io.BytesIO(data) if data else None)


@pytest.mark.parametrize("name, kind", [("../escape.txt", tarfile.REGTYPE), ("/etc/evil", tarfile.REGTYPE),
                                        ("inputs/link", tarfile.SYMTYPE), ("inputs/hard", tarfile.LNKTYPE)])
def test_a_bundle_with_unsafe_members_is_refused(tmp_path, capsys, name, kind):
    bundle = tmp_path / "evil.tar.gz"
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind == tarfile.REGTYPE:
        member.size = 3
    else:
        member.linkname = "/etc/passwd"
    _tar_with(bundle, member, b"bad" if kind == tarfile.REGTYPE else b"")
    code, _, err = sdbake(capsys, "run", bundle, "--cache-dir", tmp_path / "cache")
    assert code == 1 and "refused" in err
    assert not (tmp_path / "escape.txt").exists()
    assert not any((tmp_path / "cache" / "bundles").glob("*/inputs/*"))


def test_seed_minus_one_is_drawn_once_printed_and_recorded_so_the_image_re_renders(env, tmp_path, tiny_model_dir,
                                                                                   capsys, monkeypatch):
    from recipe_helpers import txt2img, write
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path, "r.toml", txt2img(tiny_model_dir, steps=3, seed=-1, path="{{ seed }}.png"))
    code, _, err = sdbake(capsys, "lock", recipe, "--out", tmp_path / "o")
    assert code == 0, err
    seed = int(err.split("picked seed ")[1].split()[0])
    (image,) = (tmp_path / "o").glob("*.png")
    assert image.name == f"{seed}.png"
    assert f"Seed: {seed}" in Image.open(image).text["parameters"]
    assert json.loads(Image.open(image).text["sdbake"])["recipe"]["stages"][0]["seed"] == seed
    assert f"random_seed = {seed}" in (tmp_path / "r.toml.lock").read_text()
    code, out, err = sdbake(capsys, "run", image, "--out", tmp_path / "again")
    assert code == 0 and "reproduced" in out, err
    code, _, err = sdbake(capsys, "run", recipe, "--locked", "--out", tmp_path / "locked")
    assert code == 0 and f"picked seed {seed}" in err
    assert pixels(tmp_path / "locked" / f"{seed}.png") == pixels(image)
