"""Hostile images for `show`, `run IMAGE` and `diff`: metadata of every wrong shape and size, terminal
escapes, decompression bombs, files that are not images. One line each, nothing written anywhere."""
from __future__ import annotations

import io
import json
import os
import struct
import zlib

import pytest
from hostile_helpers import embedded, plain_recipe_document, png_with_text, sdbake_png


def deep_json(depth: int) -> str:
    return '{"recipe": ' + "[" * depth + "]" * depth + "}"


# Metadata in the `sdbake` chunk: (id, JSON text, message)
SDBAKE_CHUNKS = [
    ("json-list", "[]", "holds no recipe table"),
    ("json-string", '"hello"', "holds no recipe table"),
    ("json-number", "42", "holds no recipe table"),
    ("json-null", "null", "holds no recipe table"),
    ("no-recipe-key", json.dumps({"seed": 1, "prompt": "x"}), "holds no recipe table"),
    ("recipe-is-list", json.dumps({"recipe": [1, 2, 3]}), "holds no recipe table"),
    ("recipe-is-string", json.dumps({"recipe": "version = 1"}), "holds no recipe table"),
    ("invalid-json", "{not json", "not valid JSON"),
    ("json-100k-deep", deep_json(100_000), "nested too deep"),
    ("json-nan-garbage", '{"recipe": NaN', "not valid JSON"),
    ("five-megabytes", json.dumps({"recipe": {"x": "a" * (5 << 20)}}), "refused"),
]


@pytest.mark.parametrize("command", ["show", "run"])
@pytest.mark.parametrize("text, message", [c[1:] for c in SDBAKE_CHUNKS], ids=[c[0] for c in SDBAKE_CHUNKS])
def test_hostile_sdbake_metadata_is_one_error_line(arena, command, text, message):
    arena.write("img.png", sdbake_png(text))
    arena.sdbake(command, "img.png", code=1, expect=message, max_s=15)


def test_seventy_megabyte_metadata_is_refused(arena):
    arena.write("img.png", png_with_text({"sdbake": "x" * (70 << 20)}, itxt=False))
    for command in ("show", "run"):
        arena.sdbake(command, "img.png", code=1, expect="img.png", max_s=20)


ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u202egnp.exe\x9b6n"


def test_show_escapes_terminal_control_characters_from_metadata(arena):
    document = embedded(plain_recipe_document(name="n" + ESCAPES), prompt="a " + ESCAPES)
    arena.write("img.png", png_with_text({"parameters": ESCAPES + "\nSteps: 2, Sampler: Euler, Seed: 1",
                                          "sdbake": json.dumps(document)}))
    for fmt in ("recipe", "infotext", "json"):
        shown = arena.sdbake("show", "img.png", "--format", fmt, code=0)
        assert not any(c in shown.out for c in "\x1b\x07\x9b\u202e"), (fmt, shown.out)
        assert "\\x1b" in shown.out or "\\u001b" in shown.out


def test_show_prints_a_recipe_that_toml_cannot_spell(arena):
    document = embedded(plain_recipe_document(extra=None, mixed=[1, "a", {"b": None}]))
    arena.write("img.png", sdbake_png(document))
    shown = arena.sdbake("show", "img.png", code=0)
    assert '"mixed"' in shown.out


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge size, with a tiny (truncated) body: PIL's bomb check fires first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


NOT_IMAGES = [
    ("decompression-bomb", bomb_png(200_000, 200_000)),
    ("truncated-png", sdbake_png(embedded(plain_recipe_document()))[:60]),
    ("text-file", b"version = 1\n"),
    ("empty-file", b""),
    ("png-magic-only", b"\x89PNG\r\n\x1a\n"),
    ("bad-crc", sdbake_png("[]")[:33] + b"\x00" * 8 + sdbake_png("[]")[41:]),
]


@pytest.mark.parametrize("command", ["show", "run"])
@pytest.mark.parametrize("data", [c[1] for c in NOT_IMAGES], ids=[c[0] for c in NOT_IMAGES])
def test_a_file_that_is_not_a_readable_image_is_one_error_line(arena, command, data):
    arena.write("img.png", data)
    arena.sdbake(command, "img.png", code=1, expect="img.png", max_s=15)


def jpeg_with_exif(value) -> bytes:
    from PIL import Image
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = value
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def webp_with_xmp(xmp: bytes) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "WEBP", xmp=xmp)
    return buffer.getvalue()


LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
          + b"".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9))
          + b']><x:xmpmeta xmlns:x="adobe:ns:meta/">&j;</x:xmpmeta>')

ODD_CONTAINERS = [   # (id, file name, maker, exit code of `show`: 1 = "no metadata", 0 = shown as text)
    ("jpeg-usercomment-number", "img.jpg", lambda: jpeg_with_exif(12345), 1),
    ("jpeg-usercomment-garbage", "img.jpg", lambda: jpeg_with_exif(b"\xff" * 300), 0),
    ("webp-xmp-garbage", "img.webp", lambda: webp_with_xmp(b"<not xml"), 1),
    ("webp-xmp-billion-laughs", "img.webp", lambda: webp_with_xmp(LAUGHS), 1),
]


@pytest.mark.parametrize("name, make, code", [c[1:] for c in ODD_CONTAINERS], ids=[c[0] for c in ODD_CONTAINERS])
def test_odd_exif_and_xmp_never_give_a_traceback(arena, name, make, code):
    arena.write(name, make())
    arena.sdbake("show", name, code=code, expect=None if code == 0 else name, max_s=15)


def test_a_fifo_named_like_an_image_does_not_hang(arena):
    os.mkfifo(arena.work / "img.png")
    for command in ("show", "run"):
        arena.sdbake(command, "img.png", code=1, expect="named pipe", max_s=10)


def test_dev_zero_named_like_an_image_does_not_hang(arena):
    (arena.work / "img.png").symlink_to("/dev/zero")
    arena.sdbake("show", "img.png", code=1, expect="a device", max_s=10)


def test_a_folder_named_like_an_image_is_one_line(arena):
    (arena.work / "img.png").mkdir()
    arena.sdbake("show", "img.png", code=1, expect="a folder", max_s=10)


def image_recipe_with(**changes) -> bytes:
    return sdbake_png(embedded(plain_recipe_document(**changes)))


RUN_IMAGE = [
    ("template-loop-bomb", {"stages": [{"type": "encode", "prompt": "a"}, {"type": "sample"}, {
        "type": "save", "path": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
                                "x.png"}]}, "loop iterations"),
    ("checkpoint-dev-zero", {"models": {"m": {"checkpoint": "/dev/zero"}}}, "/dev/zero"),
    ("checkpoint-missing", {"models": {"m": {"checkpoint": "/nonexistent/model.safetensors"}}}, "not found"),
    ("absolute-save-path", {"stages": [{"type": "encode", "prompt": "a"}, {"type": "sample"},
                                       {"type": "save", "path": "/tmp/owned.png"}]}, "absolute"),
    ("huge-area", {"defaults": {"model": "m", "width": 8192, "height": 8192, "batch_size": 64}},
     "SDBAKE_MAX_IMAGE_PIXELS"),
    ("matrix-bomb", {"matrix": {"seed": "1-1000000000"}}, "img.png"),
]


@pytest.mark.parametrize("changes, message", [c[1:] for c in RUN_IMAGE], ids=[c[0] for c in RUN_IMAGE])
def test_run_image_with_a_hostile_embedded_recipe_is_refused_before_work(arena, changes, message):
    arena.write("img.png", image_recipe_with(**changes))
    arena.sdbake("run", "img.png", code=1, expect=message, max_s=15)


def test_run_image_ignores_the_embedded_output_dir_with_a_warning(arena):
    # The plan already shows where the image would be written: under ./outputs, not the image's choice.
    arena.write("img.png", image_recipe_with(output_dir=str(arena.sentinel / "home")))
    planned = arena.sdbake("plan", "img.png", code=0)
    assert "output_dir is ignored" in planned.err


def test_diff_of_two_hostile_images_is_one_line_with_exit_2(arena):
    arena.write("a.png", sdbake_png("[]"))
    arena.write("b.png", sdbake_png(deep_json(50_000)))
    arena.sdbake("diff", "a.png", "b.png", code=2, expect="a.png", max_s=10)


def test_run_image_writes_under_the_output_root_not_where_the_image_says(arena, baked):
    # The baked render's own PNG, its embedded recipe given an output_dir pointing into the sentinel
    # tree; served from the baked cache (hits, no torch). The arena's snapshot proves the sentinel tree
    # untouched; the image lands under ./outputs.
    from hostile_helpers import bring_baked_cache
    from PIL import Image
    bring_baked_cache(arena, baked)
    with Image.open(io.BytesIO(baked["png"])) as image:
        document = json.loads(image.text["sdbake"])
        parameters = image.text["parameters"]
        pixels = image.convert("RGB")
        pixels.load()
    document["recipe"]["output_dir"] = str(arena.sentinel / "home" / "renders")
    from sdbake.stages.output.metadata import encode_image
    arena.write("downloaded.png", encode_image(pixels, "png", parameters, json.dumps(document)))
    ran = arena.sdbake("run", "downloaded.png", code=0, max_s=30)
    assert "output_dir is ignored" in ran.err and "reproduced" in ran.out
    assert [p.name for p in arena.out.iterdir()] == ["baked.png"]
