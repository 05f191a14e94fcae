"""SDXL's fp16 VAE overflows to NaN/inf at many sizes (A1111's NansException): the decode of each image
that overflows is redone in float32, recorded in its infotext, and the batch is never aborted. Here a
tiny SDXL VAE really overflows in float16 (its first decoder convolution is scaled past fp16's range)."""
from __future__ import annotations

import pytest
from recipe_helpers import txt2img, write

torch = pytest.importorskip("torch")

OVERFLOW_SCALE = 1e5          # decoder.conv_in outputs beyond 65504 in fp16; GroupNorm then makes NaN


def overflowing(vae):
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(OVERFLOW_SCALE)
    return vae


@pytest.fixture(scope="module")
def overflowing_sdxl(tmp_path_factory):
    import tiny_models
    pipe = tiny_models.build_tiny_sdxl_pipeline(seed=0)
    overflowing(pipe.vae)
    folder = tmp_path_factory.mktemp("overflow") / "tiny-sdxl-overflow"
    pipe.save_pretrained(str(folder))
    return folder


def test_the_tiny_vae_really_overflows_in_fp16_and_not_in_fp32(overflowing_sdxl):
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(overflowing_sdxl / "vae")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 5
    with torch.no_grad():
        assert torch.isfinite(vae.decode(z).sample).all()
        assert not torch.isfinite(vae.half().decode(z.half()).sample).all()


def test_fp16_decode_that_overflows_is_redone_in_fp32_per_image(overflowing_sdxl):
    from diffusers import AutoencoderKL
    from sdbake.stages.vae import VaeNanWarning, decode_latents
    vae16 = AutoencoderKL.from_pretrained(overflowing_sdxl / "vae").half()
    vae32 = AutoencoderKL.from_pretrained(overflowing_sdxl / "vae").half().float()   # the same rounded weights
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(VaeNanWarning) as caught:
        images, retried = decode_latents(vae16, z)
    assert sorted(str(w.message).split(" image ")[1][0] for w in caught) == ["0", "1"]
    expected, _ = decode_latents(vae32, z)
    assert retried and torch.isfinite(images).all()
    assert torch.equal(images, expected)           # the retry is the float32 decode, image for image
    assert next(vae16.parameters()).dtype == torch.float16      # the VAE itself stays half


def test_fp16_sdxl_render_survives_the_overflow_and_records_the_retry(tmp_path, overflowing_sdxl):
    from PIL import Image
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    recipe = write(tmp_path, "r.toml", txt2img(overflowing_sdxl, steps=3, batch_size=2,
                                               path="{{ batch_index }}.png"))
    result = render(load_recipe(recipe), output_root=tmp_path / "out", threads=1, quiet=True, no_cache=True,
                    dtype="float16")
    assert len(result.outputs) == 2                # the batch was not aborted
    for path in result.outputs:
        image = Image.open(path)
        assert "VAE fp32 retry: True" in image.text["parameters"]
        assert len(set(image.convert("RGB").getdata())) > 1       # a real picture, not a blank fallback


def test_a_named_fp16_fixed_vae_needs_no_retry(tmp_path, overflowing_sdxl):
    """The other way out, as with madebyollin/sdxl-vae-fp16-fix: the recipe names a VAE that stays in range."""
    import tiny_models
    from PIL import Image
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    fixed = tiny_models.save_tiny_vae_file(tmp_path / "vae-fp16-fix.safetensors", seed=5)
    text = txt2img(overflowing_sdxl, steps=3, path="fixed.png").replace(
        f'checkpoint = "{overflowing_sdxl}"', f'checkpoint = "{overflowing_sdxl}"\nvae = "{fixed}"')
    result = render(load_recipe(write(tmp_path, "r.toml", text)), output_root=tmp_path / "out", threads=1,
                    quiet=True, no_cache=True, dtype="float16")
    infotext = Image.open(result.outputs[0]).text["parameters"]
    assert "VAE: vae-fp16-fix" in infotext and "VAE fp32 retry" not in infotext
