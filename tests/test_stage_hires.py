"""hires: sizes, every upscaler, A1111's steps/denoise rule, tiled VAE."""
from __future__ import annotations

import pytest
from stage_helpers import count_denoiser_calls, recipe, render_text

torch = pytest.importorskip("torch")

BASE = '[[stages]]\ntype = "sample"\n\n'


def hires(**fields) -> str:
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') if isinstance(v, str) else f"{k} = {str(v).lower()}\n"
                   if isinstance(v, bool) else f"{k} = {v}\n" for k, v in fields.items())
    return f'{BASE}[[stages]]\ntype = "hires"\n{body}\n[[stages]]\ntype = "save"\npath = "h.png"\n'


@pytest.mark.parametrize("fields,size", [({"scale": 2.0}, (128, 128)), ({"scale": 1.5}, (96, 96)),
                                         ({"width": 128, "height": 96}, (128, 96)), ({"width": 96}, (96, 96))])
def test_output_size_follows_scale_or_explicit_size(tmp_path, tiny_model_dir, fields, size):
    from PIL import Image
    result = render_text(tmp_path, recipe(tiny_model_dir, hires(steps=2, denoise=0.5, **fields), steps=4))
    assert Image.open(result.outputs[0]).size == size


@pytest.mark.parametrize("upscaler", ["latent-nearest-exact", "latent-nearest", "latent-bilinear", "latent-bicubic",
                                      "latent-bilinear-antialiased", "latent-bicubic-antialiased", "lanczos",
                                      "nearest"])
def test_every_upscaler_runs(tmp_path, tiny_model_dir, upscaler):
    result = render_text(tmp_path, recipe(tiny_model_dir, hires(steps=2, denoise=0.5, upscaler=upscaler), steps=4))
    assert result.final_state.latent.shape[-1] == 16


@pytest.mark.parametrize("steps,denoise", [(4, 0.5), (3, 0.3), (5, 1.0)])
def test_hires_walks_the_last_steps_sigmas_of_the_longer_schedule(tmp_path, tiny_model_dir, monkeypatch, steps,
                                                                 denoise):
    from sdbake.stages.samplers import model_sigmas, sampler_sigmas
    text = recipe(tiny_model_dir, hires(steps=steps, denoise=denoise), steps=6)
    (tmp_path / "warm.toml").write_text(text)
    seen = count_denoiser_calls(monkeypatch)
    render_text(tmp_path, text)
    hires_calls = seen[6:]                               # the base pass made 6 euler calls first
    total = int(steps / min(denoise, 0.999))             # A1111: total = int(H / min(d, 0.999))
    schedule = sampler_sigmas("euler", "karras", model_sigmas(), total)
    assert len(hires_calls) == steps
    assert hires_calls == pytest.approx([float(s) for s in schedule[total - steps:total]], rel=1e-6)


def test_denoise_zero_is_refused_by_the_schema(tmp_path, tiny_model_dir):
    from sdbake.schemas.errors import RecipeError
    with pytest.raises(RecipeError, match=r"denoise: must be > 0"):
        render_text(tmp_path, recipe(tiny_model_dir, hires(denoise=0.0)))


def test_tiled_decode_matches_untiled_within_tolerance(tiny_model_dir):
    from sdbake.runner.models.loading import load_model
    from sdbake.stages.vae import VaeOptions, vae_decode
    model = load_model(tiny_model_dir)
    latent = torch.randn((1, 4, 48, 48), generator=torch.Generator().manual_seed(0)) * 0.5
    model.vae.tile_sample_min_size, model.vae.tile_latent_min_size = 128, 16   # force several tiles
    plain, _ = vae_decode(model, latent, VaeOptions(tiled=False))
    tiled, _ = vae_decode(model, latent, VaeOptions(tiled=True))
    assert plain.shape == tiled.shape == (1, 3, 384, 384)
    # Tiles are blended over their overlap, so seams differ slightly from one decode of the whole.
    assert (plain - tiled).abs().mean() < 0.05
    assert not torch.equal(plain, tiled)
