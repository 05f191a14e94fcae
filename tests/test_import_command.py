"""`sdbake import`: the command, the recipe writer it shares with every importer, its refusals."""
from __future__ import annotations

from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:         # Python 3.10
    import tomli as tomllib
from PIL import Image
from sdbake.runner.cli import main
from sdbake.runner.interop.recipe_text import recipe_toml

REPO = Path(__file__).resolve().parent.parent
DEMO = (REPO / "models" / "demo").as_posix()
HIRES_INFOTEXT = (
    "masterpiece, best quality, 1girl, (red dress:1.2), <lora:add_detail:0.6>\n"
    "Negative prompt: lowres, bad anatomy, (worst quality:1.4)\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3456789012, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, "
    "Hires upscale: 2, Hires steps: 12, Hires upscaler: Latent (nearest-exact), Hires sampler: Euler a, "
    'Hires prompt: "masterpiece, 1girl, detailed face", Lora hashes: "add_detail: 7c6bad76eb54", '
    "ADetailer model: face_yolov8n.pt, Version: v1.10.1")


def test_import_writes_a_recipe_that_validates_with_the_settings_and_the_unmapped_keys(tmp_path, capsys):
    source = tmp_path / "infotext.txt"
    source.write_text(HIRES_INFOTEXT, encoding="utf-8")
    target = tmp_path / "again.toml"
    lora = tmp_path / "detail.safetensors"         # validate finds the file; its weights are not read
    lora.write_bytes(b'\x02\x00\x00\x00\x00\x00\x00\x00{}')
    assert main(["import", str(source), "-o", str(target), "--model", f"v1-5-pruned-emaonly={DEMO}",
                 "--model", f"add_detail={lora}"]) == 0
    text = target.read_text(encoding="utf-8")
    recipe = tomllib.loads(text)
    assert Path(target.parent, recipe["models"]["base"]["checkpoint"]).resolve() == Path(DEMO).resolve()
    assert recipe["defaults"] == {"model": "base", "seed": 3456789012, "width": 512, "height": 768, "steps": 28,
                                  "sampler": "dpmpp_2m", "scheduler": "karras", "cfg": 7.0, "clip_skip": 2}
    encode, sample, hires, save = recipe["stages"]
    assert encode["prompt"].endswith("<lora:detail.safetensors:0.6>") and encode["negative"].startswith("lowres")
    assert sample == {"type": "sample"} and save["type"] == "save"
    assert hires == {"type": "hires", "scale": 2.0, "upscaler": "latent-nearest-exact", "steps": 12,
                     "denoise": 0.45, "sampler": "euler_ancestral", "prompt": "masterpiece, 1girl, detailed face"}
    assert "# unmapped: ADetailer model: face_yolov8n.pt\n" in text
    assert main(["validate", str(target)]) == 0


def test_import_never_overwrites_without_force(tmp_path, capsys):
    source = tmp_path / "infotext.txt"
    source.write_text(HIRES_INFOTEXT, encoding="utf-8")
    target = tmp_path / "mine.toml"
    target.write_text("keep me", encoding="utf-8")
    assert main(["import", str(source), "-o", str(target)]) == 1
    assert "already exists" in capsys.readouterr().err and target.read_text() == "keep me"
    assert main(["import", str(source), "-o", str(target), "--force"]) == 0
    assert tomllib.loads(target.read_text())["defaults"]["seed"] == 3456789012


def test_import_without_output_prints_the_recipe_and_names_what_is_unresolved(tmp_path, capsys):
    source = tmp_path / "infotext.txt"
    source.write_text(HIRES_INFOTEXT, encoding="utf-8")
    assert main(["import", str(source)]) == 0
    out, err = capsys.readouterr()
    assert tomllib.loads(out)["models"]["base"]["checkpoint"] == "v1-5-pruned-emaonly"
    unresolved = [line for line in err.splitlines() if "unresolved" in line]
    assert len(unresolved) == 1 and "checkpoint 'v1-5-pruned-emaonly' (6ce0161689)" in unresolved[0]


def test_import_reads_the_png_parameters_chunk_and_show_points_to_import(tmp_path, capsys):
    from PIL import PngImagePlugin
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("parameters", HIRES_INFOTEXT)
    image = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(image, pnginfo=chunks)
    assert main(["show", str(image), "--format", "recipe"]) == 1
    assert "sdbake import IMAGE" in capsys.readouterr().err
    assert main(["import", str(image), "-o", str(tmp_path / "r.toml")]) == 0
    assert tomllib.loads((tmp_path / "r.toml").read_text())["stages"][2]["steps"] == 12


def test_import_of_a_workflow_or_a_file_without_infotext_is_one_clear_line(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert main(["import", str(plain)]) == 1
    assert capsys.readouterr().err.strip() == (f"{plain}: no A1111 infotext in this image (no PNG `parameters` "
                                               "chunk, no EXIF UserComment)")
    note = tmp_path / "note.txt"
    note.write_text("just a prompt, nothing else\n", encoding="utf-8")
    assert main(["import", str(note)]) == 1
    assert "no A1111 parameters found" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "missing.json")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_recipe_text_escapes_comments_so_a_value_cannot_become_toml():
    text = recipe_toml({"version": 1, "name": "x"}, ["Evil: a\nname = \"pwned\""], ["two\nlines"])
    assert tomllib.loads(text) == {"version": 1, "name": "x"}
    assert "# unmapped: Evil: a\\nname = \"pwned\"" in text


@pytest.mark.parametrize("pair", ["noequals", "=path", "name="])
def test_model_map_wants_name_equals_path(pair, tmp_path, capsys):
    source = tmp_path / "infotext.txt"
    source.write_text(HIRES_INFOTEXT, encoding="utf-8")
    assert main(["import", str(source), "--model", pair]) == 1
    assert "--model wants NAME=PATH" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_import_reads_the_exif_user_comment_of_jpeg_and_webp(fmt, tmp_path, capsys):
    from sdbake.stages.output.metadata import encode_image
    image = tmp_path / f"a1111.{fmt}"
    # A1111 writes the infotext as EXIF UserComment in piexif's UNICODE encoding, as sdbake's writer does.
    image.write_bytes(encode_image(Image.new("RGB", (16, 16)), fmt, HIRES_INFOTEXT, None))
    assert main(["import", str(image), "-o", str(tmp_path / "r.toml")]) == 0
    recipe = tomllib.loads((tmp_path / "r.toml").read_text())
    assert recipe["defaults"]["seed"] == 3456789012 and recipe["stages"][2]["sampler"] == "euler_ancestral"


def _folders_config(tmp_path, monkeypatch, **folders) -> None:
    config = tmp_path / "sdbake-config.toml"
    config.write_text("[folders]\n" + "".join(f'{kind} = ["{Path(path).as_posix()}"]\n'
                                              for kind, path in folders.items()))
    monkeypatch.setenv("SDBAKE_CONFIG", str(config))


def test_a_model_is_found_by_name_then_by_a1111_hash_in_the_model_folders(tmp_path, monkeypatch, capsys):
    from sdbake.runner.modelfiles import path_sha256
    _folders_config(tmp_path, monkeypatch, checkpoints=REPO / "models")
    short = path_sha256(Path(DEMO))[:10]
    by_name = tmp_path / "by_name.txt"
    by_name.write_text("a cat\nSteps: 4, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 64x64, Model: demo")
    assert main(["import", str(by_name), "-o", str(tmp_path / "a.toml")]) == 0
    assert tomllib.loads((tmp_path / "a.toml").read_text())["models"]["base"]["checkpoint"] == "demo"
    assert "unresolved" not in capsys.readouterr().err
    renamed = tmp_path / "renamed.txt"
    renamed.write_text(f"a cat\nSteps: 4, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 64x64, Model hash: {short}, "
                       "Model: my-demo-v2")
    assert main(["import", str(renamed), "-o", str(tmp_path / "b.toml")]) == 0
    assert tomllib.loads((tmp_path / "b.toml").read_text())["models"]["base"]["checkpoint"] == "demo"
    assert "found checkpoint 'my-demo-v2' -> demo" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "b.toml")]) == 0


def test_model_map_rewrites_a_lora_tag_to_the_local_file(tmp_path, capsys):
    lora = tmp_path / "loras" / "detail-tweaker.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(b"not read by import")
    source = tmp_path / "infotext.txt"
    source.write_text("a knight, <lora:add_detail:0.6>, <lora:other:1>\nNegative prompt: <lora:add_detail:1>\n"
                      "Steps: 4, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 64x64, Model: demo, "
                      'Lora hashes: "add_detail: 7c6bad76eb54, other: 0123456789ab"')
    assert main(["import", str(source), "-o", str(tmp_path / "r.toml"), "--model", f"add_detail={lora}",
                 "--model", f"demo={DEMO}"]) == 0
    encode = tomllib.loads((tmp_path / "r.toml").read_text())["stages"][0]
    # A1111 reads tags in the prompt only; the negative's tag is text for CLIP and stays as written.
    assert encode == {"type": "encode", "prompt": "a knight, <lora:loras/detail-tweaker.safetensors:0.6>, "
                                                  "<lora:other:1>", "negative": "<lora:add_detail:1>"}
    assert "LoRA 'other' (0123456789ab)" in capsys.readouterr().err
