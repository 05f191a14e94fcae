"""Image metadata: sd-parsers (a reader nobody here wrote) reads our PNG, WebP and JPEG right."""
from __future__ import annotations

import io
import json
import struct

import pytest
from PIL import Image, PngImagePlugin
from sd_parsers import ParserManager
from sdbake.schemas.errors import InputFileError, OutputError
from sdbake.schemas.names import a1111_sampler_label
from sdbake.stages.output.infotext import format_infotext, parse_infotext
from sdbake.stages.output.metadata import encode_image, read_metadata

PROMPT = "a red circle, (masterpiece:1.2), [city:forest:0.4]"
NEGATIVE = "blurry, lowres"
SDBAKE = json.dumps({"recipe": {"name": "tiny", "stages": [{"type": "save"}]}, "seed": 42,
                     "prompt": PROMPT, "note": "<xml & ü>"}, sort_keys=True)


def infotext(prompt: str = PROMPT) -> str:
    sampler, schedule = a1111_sampler_label("dpmpp_2m", "karras")
    return format_infotext(prompt, NEGATIVE, {
        "Steps": 20, "Sampler": sampler, "Schedule type": schedule, "CFG scale": 5.0, "Seed": 42,
        "Size": "64x48", "Model hash": "0123456789", "Model": "tiny", "Version": "sdbake 0.1.0"})


def gradient_image() -> Image.Image:
    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 4, y * 5, (x + y) % 256) for y in range(48) for x in range(64)])
    return image


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append((kind, data[offset + 8:offset + 8 + length]))
        offset += 12 + length
    return chunks


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_sd_parsers_reads_prompt_negative_seed_steps_sampler_cfg_and_size(tmp_path, fmt):
    path = tmp_path / f"image.{fmt}"
    path.write_bytes(encode_image(gradient_image(), fmt, infotext(), SDBAKE))
    info = ParserManager().parse(path)
    assert info is not None, "sd-parsers did not recognise the image"
    assert info.generator.name == "AUTOMATIC1111"
    assert info.full_prompt == PROMPT and info.full_negative_prompt == NEGATIVE
    sampler = next(iter(info.samplers))
    assert sampler.name == "DPM++ 2M"
    assert sampler.parameters["seed"] == "42" and sampler.parameters["steps"] == "20"
    assert float(sampler.parameters["cfg_scale"]) == 5.0
    assert sampler.parameters["scheduler"] == "Karras"
    assert info.metadata["Size"] == "64x48"


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_read_metadata_returns_infotext_and_sdbake_json(tmp_path, fmt):
    path = tmp_path / f"image.{fmt}"
    path.write_bytes(encode_image(gradient_image(), fmt, infotext("émoji 🙂 prompt"), SDBAKE))
    text, sdbake_json = read_metadata(path)
    assert text == infotext("émoji 🙂 prompt") and sdbake_json == SDBAKE
    prompt, negative, params = parse_infotext(text)
    assert (prompt, negative, params["Seed"]) == ("émoji 🙂 prompt", NEGATIVE, "42")


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_same_pixels_and_metadata_give_the_same_bytes(fmt):
    first = encode_image(gradient_image(), fmt, infotext(), SDBAKE)
    assert encode_image(gradient_image(), fmt, infotext(), SDBAKE) == first
    assert encode_image(gradient_image(), fmt, infotext("another"), SDBAKE) != first


def test_png_uses_text_for_latin1_and_itxt_otherwise_and_no_timestamp():
    kinds = {kind for kind, _ in png_chunks(encode_image(gradient_image(), "png", infotext(), None))}
    assert b"tEXt" in kinds and b"iTXt" not in kinds and b"tIME" not in kinds
    chunks = png_chunks(encode_image(gradient_image(), "png", infotext("猫 prompt"), SDBAKE))
    itxt_keys = [body.split(b"\0", 1)[0] for kind, body in chunks if kind == b"iTXt"]
    assert itxt_keys == [b"parameters", b"sdbake"]


def test_png_pixels_survive_exactly():
    decoded = Image.open(io.BytesIO(encode_image(gradient_image(), "png", infotext(), SDBAKE)))
    assert decoded.tobytes() == gradient_image().tobytes()


def test_source_image_metadata_is_not_carried_over(tmp_path):
    source = gradient_image()
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("parameters", "stale text from another tool")
    path = tmp_path / "source.png"
    source.save(path, pnginfo=chunks)
    with Image.open(path) as loaded:
        loaded.load()
        assert encode_image(loaded, "png", infotext(), None) == encode_image(source, "png", infotext(), None)


def test_jpeg_drops_alpha_and_png_keeps_it(tmp_path):
    rgba = gradient_image().convert("RGBA")
    assert Image.open(io.BytesIO(encode_image(rgba, "jpeg", infotext(), None))).mode == "RGB"
    assert Image.open(io.BytesIO(encode_image(rgba, "png", infotext(), None))).mode == "RGBA"


def test_a_recipe_too_large_for_a_jpeg_segment_is_a_clear_error():
    with pytest.raises(OutputError, match="JPEG holds at most"):
        encode_image(gradient_image(), "jpeg", infotext(), json.dumps({"x": "y" * 70000}))


def test_image_without_metadata_reads_as_none(tmp_path):
    for fmt in ("PNG", "WEBP", "JPEG"):
        path = tmp_path / f"plain.{fmt.lower()}"
        gradient_image().save(path, fmt)
        assert read_metadata(path) == (None, None)


def test_unreadable_file_is_an_input_file_error(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")
    with pytest.raises(InputFileError, match="broken.png"):
        read_metadata(path)
