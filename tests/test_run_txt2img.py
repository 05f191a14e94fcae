"""txt2img end to end on the tiny model: splits are exact, renders are deterministic, batches independent."""
from __future__ import annotations

import pytest
from recipe_helpers import txt2img, write

pytest.importorskip("torch")


def render(tmp_path, text, name="r.toml", **kwargs):
    from sdbake.runner.api import render as run
    from sdbake.schemas.loader import load_recipe
    recipe = write(tmp_path, name, text)
    return run(load_recipe(recipe), output_root=tmp_path / "out", threads=1, quiet=True, **kwargs)


def final_latent(tmp_path, text, name):
    result = render(tmp_path, text, name=name, no_cache=True)
    return result.final_state.latent


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "heun", "dpm_2", "lms", "dpmpp_2m",
                                     "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "dpm_2_ancestral",
                                     "dpmpp_2s_ancestral", "uni_pc", "uni_pc_bh2", "ddpm", "lcm"])
def test_split_run_equals_one_run_bit_for_bit(tmp_path, tiny_model_dir, sampler):
    import torch
    whole = final_latent(tmp_path, txt2img(tiny_model_dir, sampler=sampler, steps=8), "one.toml")
    split = final_latent(tmp_path, txt2img(tiny_model_dir, sampler=sampler, steps=8, split=3), "two.toml")
    assert torch.equal(whole, split)


def test_uni_pc_kl_optimal_split_before_the_last_steps_and_its_infotext(tmp_path, tiny_model_dir):
    # uni_pc lowers its order on the schedule's last two steps: a split at step 7 of 8 must know that
    import torch
    from PIL import Image
    recipe = txt2img(tiny_model_dir, sampler="UniPC", scheduler="KL Optimal", steps=8, path="u.png")
    whole = render(tmp_path, recipe, name="one.toml", no_cache=True)
    split_recipe = recipe.replace('[[stages]]\ntype = "sample"\n',
                                  '[[stages]]\ntype = "sample"\nend = 7\n\n[[stages]]\ntype = "sample"\nstart = 7\n')
    assert "start = 7" in split_recipe
    assert torch.equal(whole.final_state.latent, final_latent(tmp_path, split_recipe, "two.toml"))
    parameters = Image.open(whole.outputs[0]).info["parameters"]
    assert "Sampler: UniPC, Schedule type: KL Optimal," in parameters


def test_two_renders_write_identical_bytes(tmp_path, tiny_model_dir):
    first = render(tmp_path, txt2img(tiny_model_dir, path="a.png", steps=6), no_cache=True)
    second = render(tmp_path, txt2img(tiny_model_dir, path="b.png", steps=6), name="s.toml", no_cache=True)
    a, b = first.outputs[0], second.outputs[0]
    from PIL import Image
    assert Image.open(a).tobytes() == Image.open(b).tobytes()
    assert a.read_bytes() != b"" and a.stat().st_size > 100


def test_image_of_a_batch_equals_a_single_render_of_its_seed(tmp_path, tiny_model_dir):
    batch = final_latent(tmp_path, txt2img(tiny_model_dir, steps=6, seed=10, batch_size=3,
                                           path="b-{{ batch_index }}.png"), "batch.toml")
    single = final_latent(tmp_path, txt2img(tiny_model_dir, steps=6, seed=12), "single.toml")
    # batched kernels may round differently: 1e-5 relative to the latent's scale
    assert float((batch[2] - single[0]).abs().max() / single[0].abs().max()) < 1e-5


def test_initial_noise_is_a1111_cpu_rng_per_image():
    import torch
    from sdbake.stages.samplers import ImageNoise
    noise = ImageNoise([5, 6, 7], (4, 8, 8)).draw()
    for i, seed in enumerate([5, 6, 7]):
        expected = torch.randn((4, 8, 8), generator=torch.Generator("cpu").manual_seed(seed))
        assert torch.equal(noise[i], expected)


def test_euler_karras_matches_the_diffusers_pipeline(tmp_path, tiny_model_dir):
    """Parity oracle for the denoiser wrapper: same initial latent, euler + karras, cfg 5."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    steps, seed = 10, 42
    ours = final_latent(tmp_path, txt2img(tiny_model_dir, steps=steps, seed=seed, prompt="a red circle",
                                          negative="blurry"), "ours.toml")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None, local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    init = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(seed))
    pipe.scheduler.set_timesteps(steps)
    assert abs(pipe.scheduler.init_noise_sigma - 14.614641) < 1e-3    # both start from noise * sigma_max
    theirs = pipe(prompt="a red circle", negative_prompt="blurry", num_inference_steps=steps,
                  guidance_scale=5.0, height=64, width=64, latents=init, output_type="latent").images
    rel = (ours - theirs).abs().max() / theirs.abs().max()
    assert rel < 1e-4, float(rel)
