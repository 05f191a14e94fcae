"""Every VAE pass of every stage honours `--no-half-vae` and the image's tiling choice (one VaeOptions)."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import pytest
from stage_helpers import recipe

torch = pytest.importorskip("torch")


def test_encode_with_fp32_option_computes_in_float32_and_leaves_the_vae_half(tiny_model_dir):
    from sdbake.runner.models.loading import load_model
    from sdbake.stages.vae import VaeOptions, vae_encode
    model = load_model(tiny_model_dir, dtype=torch.bfloat16)
    pixels = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    in_fp32 = vae_encode(model, pixels, VaeOptions(fp32=True))
    in_half = vae_encode(model, pixels, VaeOptions())
    assert next(model.vae.parameters()).dtype == torch.bfloat16
    # the independent computation: the same (bf16-rounded) weights, cast to float32 by hand
    reference = vae_encode(dataclasses.replace(model, vae=model.vae.float()), pixels, VaeOptions())
    assert torch.equal(in_fp32, reference)
    assert not torch.equal(in_half, reference)


def test_no_half_vae_and_hires_tiling_reach_every_vae_pass(tmp_path, tiny_model_dir, monkeypatch):
    from sdbake.runner.api import make_plan
    from sdbake.runner.execute import RunOptions, execute
    from sdbake.schemas.loader import load_recipe
    from sdbake.stages import vae
    passes = []     # (what, tiled, dtype the VAE computes in)
    real_tiling, real_decode = vae.vae_tiling, vae.decode_latents

    @contextmanager
    def tiling(module, tiled, pixels):
        passes.append(["pass", tiled, next(module.parameters()).dtype])
        with real_tiling(module, tiled, pixels):
            yield

    def decode(module, latents, *, force_fp32=False):
        passes[-1][0] = "decode"
        passes[-1][2] = torch.float32 if force_fp32 else next(module.parameters()).dtype
        return real_decode(module, latents, force_fp32=force_fp32)
    monkeypatch.setattr(vae, "vae_tiling", tiling)
    monkeypatch.setattr(vae, "decode_latents", decode)
    stages = '''[[stages]]
type = "sample"
end = 2

[[stages]]
type = "intervene"
ops = [{ op = "fill", color = "red", rect = [0, 0, 16, 16] }]

[[stages]]
type = "sample"
start = 2

[[stages]]
type = "hires"
scale = 1.5
steps = 2
denoise = 0.5
upscaler = "lanczos"
tiled = true

[[stages]]
type = "inpaint"
rects = [[8, 8, 32, 32]]
steps = 2
denoise = 0.5
'''
    (tmp_path / "r.toml").write_text(recipe(tiny_model_dir, stages, steps=4))
    plan = make_plan(load_recipe(tmp_path / "r.toml"), output_root=tmp_path / "out", dtype="bfloat16", threads=1)
    plan = dataclasses.replace(plan, numerics=dataclasses.replace(plan.numerics, vae_fp32=True))
    execute(plan, None, RunOptions(no_cache=True, quiet=True))
    kinds = [what for what, _, _ in passes]
    # intervene: decode + encode; hires: decode + encode; inpaint: decode, encode, decode, final encode
    assert kinds == ["decode", "pass", "decode", "pass", "decode", "pass", "decode", "pass"]
    assert all(dtype == torch.float32 for _, _, dtype in passes), passes
    # hires sets tiling for what follows: the inpaint passes tile too
    assert [tiled for _, tiled, _ in passes[2:]] == [True] * 6
