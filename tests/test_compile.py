"""[performance] compile / channels_last: the prepared UNet gives the eager results, and the cache key knows."""
from __future__ import annotations

import shutil

import pytest
from recipe_helpers import txt2img, write

torch = pytest.importorskip("torch")

# A one-level UNet: the smallest with cross-attention down, mid and up blocks. Inductor's cold compile
# time grows with the number of ops, and this one compiles in about half the time of the tiny model's.
SMALL_UNET = {"block_out_channels": (32,), "layers_per_block": 1, "cross_attention_dim": 32,
              "attention_head_dim": 4, "sample_size": 8, "norm_num_groups": 8,
              "down_block_types": ("CrossAttnDownBlock2D",), "up_block_types": ("CrossAttnUpBlock2D",)}


def small_unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(**SMALL_UNET).eval()


def guided_denoiser(unet, cfg: float = 5.0):
    """D(x, sigma) with CFG over fixed embeddings, as the sample stage builds it."""
    from sdbake.stages.denoiser import Cond, Denoiser, GuidedInputs
    from sdbake.stages.samplers import model_sigmas
    generator = torch.Generator().manual_seed(1)
    uncond, cond = torch.randn(2, 77, 32, generator=generator)
    inputs = GuidedInputs(uncond=[Cond(uncond)], conds=[[(Cond(cond), 1.0)]])
    sigmas = model_sigmas(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    return Denoiser(unet, sigmas, "epsilon", cfg, lambda call: inputs)


def denoise_once(unet) -> torch.Tensor:
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 3.0
    with torch.inference_mode():             # the runtime runs every stage under inference mode
        return guided_denoiser(unet)(x, torch.tensor([3.0]))


def test_compile_enters_the_numerics_fingerprint():
    from sdbake.runner.numerics import Numerics
    eager = Numerics.choose("cpu", "float32", 1, compile=False).fingerprint()
    compiled = Numerics.choose("cpu", "float32", 1, compile=True).fingerprint()
    assert eager["compile"] is False and compiled["compile"] is True
    assert {k: v for k, v in eager.items() if k != "compile"} == {k: v for k, v in compiled.items() if k != "compile"}


def test_compile_changes_the_sample_stage_key(tmp_path, tiny_model_dir):
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    text = txt2img(tiny_model_dir, steps=4)
    eager = make_plan(load_recipe(write(tmp_path, "eager.toml", text)), output_root=tmp_path, threads=1)
    compiled = make_plan(load_recipe(write(tmp_path, "compiled.toml", text + "\n[performance]\ncompile = true\n")),
                         output_root=tmp_path, threads=1)
    eager_keys = {inv.id: inv.key for inv in eager.invocations}
    compiled_keys = {inv.id: inv.key for inv in compiled.invocations}
    assert compiled.numerics.compile and not eager.numerics.compile
    assert eager_keys["sample"] != compiled_keys["sample"]


def test_prepared_unet_answers_what_the_denoiser_reads_and_is_made_once(monkeypatch):
    from sdbake.runner.compile import prepare_unet
    compiles = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiles.append(module) or real_compile(module, **kw))
    unet = small_unet()
    assert prepare_unet(unet, compile=False, channels_last=False) is unet
    prepared = prepare_unet(unet, compile=True, channels_last=False)     # torch.compile is lazy: no compile yet
    assert prepared is not unet
    assert prepare_unet(unet, compile=True, channels_last=False) is prepared     # stages share it
    assert prepared.dtype == torch.float32 and prepared.device == unet.device
    assert prepared.config.in_channels == 4
    assert compiles == [unet]
    other = small_unet()
    assert prepare_unet(other, compile=True, channels_last=False) is not prepared     # kept per UNet object
    assert compiles == [unet, other]


def test_channels_last_is_set_and_undone_on_the_shared_unet():
    """channels_last changes conv kernels: results agree to float32 rounding (about 1e-6), not bit for bit."""
    from sdbake.runner.compile import prepare_unet
    unet = small_unet()
    expected = denoise_once(unet)
    prepared = prepare_unet(unet, compile=False, channels_last=True)
    assert prepared is unet and unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(denoise_once(prepared), expected, rtol=1e-4, atol=1e-5)
    prepare_unet(unet, compile=False, channels_last=False)     # a later run without it gets the eager layout back
    assert unet.conv_in.weight.is_contiguous()
    assert torch.equal(denoise_once(unet), expected)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler; none on PATH")
def test_compiled_unet_denoises_like_the_eager_one(monkeypatch):
    """Inductor fuses and reorders float32 reductions: agreement to 1e-4 relative, not bit for bit.

    Cold, inductor compiles this UNet in about a minute on a busy 2-core machine (seconds once its
    on-disk cache is warm).
    """
    import torch._inductor.config as inductor_config
    from sdbake.runner.compile import prepare_unet
    monkeypatch.setattr(inductor_config, "compile_threads", 1)        # the CPUs are shared
    unet = small_unet()
    expected = denoise_once(unet)
    compiled = prepare_unet(unet, compile=True, channels_last=True)
    got = denoise_once(compiled)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
