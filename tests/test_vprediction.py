"""v-prediction models (SD2.x 768-v and v-pred fine-tunes) render as diffusers' pipeline does, with the
zero-terminal-SNR rescale when the model's scheduler config asks for it."""
from __future__ import annotations

import pytest
from recipe_helpers import txt2img, write

torch = pytest.importorskip("torch")


def our_latent(tmp_path, model, name, **kwargs):
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    text = txt2img(model, prompt="a red circle", negative="blurry", seed=42, **kwargs)
    return render(load_recipe(write(tmp_path, name, text)), output_root=tmp_path / "out", threads=1, quiet=True,
                  no_cache=True).final_state.latent


def diffusers_latent(folder, scheduler: str, steps: int):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from sdbake.runner.models.loading import load_model
    from sdbake.stages.sampler_run import sampling_setup
    sigmas = sampling_setup(load_model(folder), "euler", scheduler, steps).sigmas.tolist()
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(sigmas=sigmas)
    init = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(42))
    assert abs(float(pipe.scheduler.sigmas[0]) - sigmas[0]) < 1e-3 * sigmas[0]    # the same model sigmas
    return pipe(prompt="a red circle", negative_prompt="blurry", sigmas=sigmas, guidance_scale=5.0, height=64,
                width=64, latents=init, output_type="latent").images


def test_v_prediction_model_equals_the_diffusers_pipeline(tmp_path, tiny_vpred):
    folder, _ = tiny_vpred
    ours = our_latent(tmp_path, folder, "v.toml", steps=8)
    theirs = diffusers_latent(folder, "karras", 8)
    rel = (ours - theirs).abs().max() / theirs.abs().max()
    assert rel < 1e-4, float(rel)
    # the same weights read as epsilon-prediction give another picture: the v branch is what ran
    from sdbake.runner.models.loading import load_model
    assert load_model(folder).prediction_type == "v_prediction"


def test_v_prediction_single_file_is_detected_by_its_marker_key(tmp_path, tiny_vpred, tiny_model_dir):
    from PIL import Image
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    folder, single = tiny_vpred
    outputs = []
    for name, model in (("a.toml", folder), ("b.toml", single)):
        text = txt2img(model, steps=4, path=f"{name}.png")
        if model == single:        # configs of an epsilon model of the same sizes: only the v_pred key says "v"
            text = text.replace(f'checkpoint = "{single}"', f'checkpoint = "{single}"\nconfig = "{tiny_model_dir}"')
        recipe = write(tmp_path, name, text)
        outputs.append(render(load_recipe(recipe), output_root=tmp_path / "out", threads=1, quiet=True,
                              no_cache=True).outputs[0])
    assert Image.open(outputs[0]).tobytes() == Image.open(outputs[1]).tobytes()


def test_zero_terminal_snr_rescale_follows_the_scheduler_config(tmp_path):
    import tiny_models
    from sdbake.stages.samplers import model_sigmas
    folder = tiny_models.save_tiny_vpred(tmp_path / "zsnr", zero_snr=True)
    plain, rescaled = model_sigmas(), model_sigmas(zero_terminal_snr=True)
    assert float(rescaled[-1]) == pytest.approx((1 - 2 ** -24) ** 0.5 / 2 ** -12, rel=1e-6)   # ~4096: no inf
    assert float(plain[-1]) == pytest.approx(14.6146, rel=1e-4)
    ours = our_latent(tmp_path, folder, "z.toml", steps=8)
    theirs = diffusers_latent(folder, "karras", 8)
    rel = (ours - theirs).abs().max() / theirs.abs().max()
    assert rel < 1e-4, float(rel)
