"""save end to end: A1111 readers understand our images, re-runs are idempotent, `run IMAGE` reproduces."""
from __future__ import annotations

import pytest
from PIL import Image
from recipe_helpers import txt2img, write

pytest.importorskip("torch")


def cli(*args, cwd=None):
    import contextlib
    import io
    import os

    from sdbake.runner.cli import main
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd or old)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def rendered(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SDBAKE_CACHE", str(tmp_path / "cache"))
    write(tmp_path, "r.toml", txt2img(tiny_model_dir, sampler="dpmpp_2m", steps=6,
                                      path="out/{{ seed }}-{{ prompt | words(3) }}.png"))
    code, _out, err = cli("run", "r.toml", "--quiet", cwd=tmp_path)
    assert code == 0, err
    images = list((tmp_path / "outputs" / "out").glob("*.png"))
    assert len(images) == 1
    return tmp_path, images[0]


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_sd_parsers_reads_prompt_seed_steps_sampler_cfg_size(tmp_path, tiny_model_dir, fmt):
    from sd_parsers import ParserManager
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    suffix = {"jpeg": "jpg"}.get(fmt, fmt)
    path = write(tmp_path, "f.toml", txt2img(tiny_model_dir, sampler="dpmpp_2m", steps=4, path=f"img.{suffix}"))
    result = render(load_recipe(path), output_root=tmp_path / "out", no_cache=True, threads=1)
    info = ParserManager().parse(str(result.outputs[0]))
    assert info is not None
    assert "red circle" in info.full_prompt and "blurry" in info.full_negative_prompt
    sampler = next(iter(info.samplers))
    assert sampler.name.lower().startswith("dpm++ 2m")
    assert sampler.parameters["seed"] == "42" and sampler.parameters["steps"] == "4"
    assert float(sampler.parameters["cfg_scale"]) == 5.0
    assert info.metadata["Size"] == "64x64"


def test_rerunning_an_unchanged_recipe_leaves_the_folder_as_it_was(rendered):
    folder, _image = rendered
    before = {p: p.read_bytes() for p in (folder / "outputs").rglob("*") if p.is_file()}
    code, _, err = cli("run", "r.toml", "--quiet", cwd=folder)
    assert code == 0, err
    after = {p: p.read_bytes() for p in (folder / "outputs").rglob("*") if p.is_file()}
    assert before == after


def test_a_different_image_for_the_same_name_gets_a_new_file(rendered):
    folder, image = rendered
    original = image.read_bytes()
    text = (folder / "r.toml").read_text().replace("cfg = 5.0", "cfg = 6.5")
    (folder / "r2.toml").write_text(text)
    code, _, err = cli("run", "r2.toml", "--quiet", cwd=folder)
    assert code == 0, err
    assert len(list((folder / "outputs" / "out").glob("*.png"))) == 2
    assert image.read_bytes() == original


def test_run_image_reproduces_it_bit_for_bit(rendered):
    folder, image = rendered
    copy = folder / "again.png"
    copy.write_bytes(image.read_bytes())
    code, out, err = cli("run", "again.png", "--quiet", "--no-cache", cwd=folder)
    assert code == 0, err + out
    assert "reproduced" in out
    assert len(list((folder / "outputs" / "out").glob("*.png"))) == 1      # the same bytes: no new file


def test_show_prints_the_embedded_recipe_and_the_infotext(rendered):
    _folder, image = rendered
    code, out, _ = cli("show", str(image))
    assert code == 0 and "red circle" in out and 'type = "sample"' in out
    code, out, _ = cli("show", str(image), "--format", "infotext")
    assert code == 0 and "Sampler: DPM++ 2M" in out and "Seed: 42" in out


def test_a_save_path_outside_the_output_root_is_refused(tmp_path, tiny_model_dir):
    for template in ("../escape.png", "/tmp/abs-escape.png"):
        write(tmp_path, "h.toml", txt2img(tiny_model_dir, steps=2, path=template))
        code, _, err = cli("run", "h.toml", "--quiet", "--no-cache", cwd=tmp_path)
        assert code == 1 and "h.toml:" in err
        assert not (tmp_path / "escape.png").exists()


def test_the_infotext_has_a1111_layout(rendered):
    _, image = rendered
    text = Image.open(image).text["parameters"]
    prompt, negative, params = text.split("\n")
    assert prompt.startswith("a red circle") and negative == "Negative prompt: blurry"
    assert params.startswith("Steps: 6, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.0, Seed: 42, "
                             "Size: 64x64, Model hash: ")
