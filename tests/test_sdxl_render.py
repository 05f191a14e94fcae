"""SDXL end to end on the tiny models: parity with diffusers' SDXL pipelines (base, and base -> refiner on
one schedule), exact splits for every sampler, single file == folder, micro-conditioning."""
from __future__ import annotations

import pytest
from recipe_helpers import txt2img, write

torch = pytest.importorskip("torch")

SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "lms", "dpmpp_2m", "dpmpp_sde", "dpmpp_2m_sde",
            "dpmpp_3m_sde", "ddim", "dpm_2_ancestral", "dpmpp_2s_ancestral"]


def render(tmp_path, text, name="r.toml", **kwargs):
    from sdbake.runner.api import render as run
    from sdbake.schemas.loader import load_recipe
    return run(load_recipe(write(tmp_path, name, text)), output_root=tmp_path / "out", threads=1, quiet=True,
               no_cache=True, **kwargs)


def latent_of(tmp_path, text, name="r.toml", **kwargs):
    return render(tmp_path, text, name, **kwargs).final_state.latent


def base_refiner_recipe(base, refiner, switch: int = 16, *, refiner_stage: str = "", steps: int = 20) -> str:
    return f'''version = 1
name = "xl"
[models.base]
checkpoint = "{base}"
[models.refiner]
checkpoint = "{refiner}"
[defaults]
model = "base"
seed = 42
width = 64
height = 64
steps = {steps}
sampler = "euler"
scheduler = "normal"
cfg = 5.0
[[stages]]
type = "encode"
prompt = "a red circle"
negative = "blurry"
[[stages]]
type = "sample"
end = {switch}
[[stages]]
type = "sample"
model = "refiner"
{refiner_stage}
[[stages]]
type = "save"
path = "xl.png"
'''


def diffusers_pipe(cls, folder):
    from diffusers import EulerDiscreteScheduler
    pipe = cls.from_pretrained(folder, local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def our_sigmas(folder, scheduler: str, steps: int) -> list[float]:
    from sdbake.runner.models.loading import load_model
    from sdbake.stages.sampler_run import sampling_setup
    return sampling_setup(load_model(folder), "euler", scheduler, steps).sigmas.tolist()


def test_tiny_sdxl_equals_the_diffusers_sdxl_pipeline(tmp_path, tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline
    folder, _ = tiny_sdxl
    ours = latent_of(tmp_path, txt2img(folder, steps=10, seed=42, prompt="a red circle", negative="blurry"))
    pipe = diffusers_pipe(StableDiffusionXLPipeline, folder)
    init = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(42))
    theirs = pipe(prompt="a red circle", negative_prompt="blurry", sigmas=our_sigmas(folder, "karras", 10),
                  guidance_scale=5.0, height=64, width=64, latents=init, output_type="latent").images
    rel = (ours - theirs).abs().max() / theirs.abs().max()
    assert rel < 1e-4, float(rel)


def test_base_then_refiner_equals_diffusers_denoising_end_then_start(tmp_path, tiny_sdxl, tiny_sdxl_refiner):
    """Steps 0-16 on the base and 16-20 on the refiner = diffusers' base with denoising_end=0.8, then
    StableDiffusionXLImg2ImgPipeline (refiner) with denoising_start=0.8, on the same 20 sigmas."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    base, refiner = tiny_sdxl[0], tiny_sdxl_refiner[0]
    ours = latent_of(tmp_path, base_refiner_recipe(base, refiner))
    sigmas = our_sigmas(base, "normal", 20)
    init = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(42))
    pipe = diffusers_pipe(StableDiffusionXLPipeline, base)
    pipe.scheduler.set_timesteps(sigmas=sigmas)
    assert int((pipe.scheduler.timesteps >= 200).sum()) == 16      # denoising_end=0.8 cuts at step 16
    handed_over = pipe(prompt="a red circle", negative_prompt="blurry", sigmas=sigmas, guidance_scale=5.0,
                       height=64, width=64, latents=init, denoising_end=0.8, output_type="latent").images
    refine = diffusers_pipe(StableDiffusionXLImg2ImgPipeline, refiner)
    theirs = refine(prompt="a red circle", negative_prompt="blurry", sigmas=sigmas, guidance_scale=5.0,
                    image=handed_over, denoising_start=0.8, output_type="latent").images
    rel = (ours - theirs).abs().max() / theirs.abs().max()
    assert rel < 1e-4, float(rel)
    base_alone = latent_of(tmp_path, txt2img(base, steps=20, seed=42, scheduler="normal", prompt="a red circle",
                                             negative="blurry"), "alone.toml")
    assert (base_alone - ours).abs().max() > 1e-2          # the refiner did change the picture


def test_refiner_aesthetic_scores_are_settable(tmp_path, tiny_sdxl, tiny_sdxl_refiner):
    base, refiner = tiny_sdxl[0], tiny_sdxl_refiner[0]
    default = latent_of(tmp_path, base_refiner_recipe(base, refiner, 3, steps=5), "a.toml")
    explicit = latent_of(tmp_path, base_refiner_recipe(
        base, refiner, 3, steps=5, refiner_stage="sdxl = { aesthetic_score = 6.0, negative_aesthetic_score = 2.5 }"),
        "b.toml")
    other = latent_of(tmp_path, base_refiner_recipe(base, refiner, 3, steps=5,
                                                    refiner_stage="sdxl = { aesthetic_score = 9.0 }"), "c.toml")
    assert torch.equal(default, explicit)
    assert not torch.equal(default, other)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sdxl_split_run_equals_one_run_bit_for_bit(tmp_path, tiny_sdxl, sampler):
    folder = tiny_sdxl[0]
    whole = latent_of(tmp_path, txt2img(folder, sampler=sampler, steps=6), "one.toml")
    split = latent_of(tmp_path, txt2img(folder, sampler=sampler, steps=6, split=2), "two.toml")
    assert torch.equal(whole, split)


def test_sdxl_single_file_renders_the_same_pixels_as_its_folder(tmp_path, tiny_sdxl):
    from PIL import Image
    folder, single = tiny_sdxl
    from_folder = render(tmp_path, txt2img(folder, steps=4, path="folder.png"), "a.toml").outputs[0]
    text = txt2img(single, steps=4, path="single.png").replace(
        f'checkpoint = "{single}"', f'checkpoint = "{single}"\nconfig = "{folder}"')
    from_file = render(tmp_path, text, "b.toml").outputs[0]
    assert Image.open(from_folder).tobytes() == Image.open(from_file).tobytes()


def test_empty_negative_prompt_is_zeros_on_sdxl_as_a1111_and_diffusers(tmp_path, tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline
    folder = tiny_sdxl[0]
    ours = latent_of(tmp_path, txt2img(folder, steps=4, seed=42, prompt="a red circle", negative=""))
    pipe = diffusers_pipe(StableDiffusionXLPipeline, folder)       # force_zeros_for_empty_prompt
    init = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(42))
    theirs = pipe(prompt="a red circle", sigmas=our_sigmas(folder, "karras", 4), guidance_scale=5.0, height=64,
                  width=64, latents=init, output_type="latent").images
    assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-4


def test_micro_conditioning_defaults_are_the_sampled_size_and_can_be_set(tmp_path, tiny_sdxl):
    folder = tiny_sdxl[0]

    def with_table(table: str, name: str):
        text = txt2img(folder, steps=3).replace('batch_size = 1\n', f'batch_size = 1\n{table}\n')
        return latent_of(tmp_path, text, name)
    unset = with_table("", "a.toml")
    explicit = with_table("sdxl = { original_size = [64, 64], crop = [0, 0], target_size = [64, 64] }", "b.toml")
    larger = with_table("sdxl = { original_size = [1024, 1024] }", "c.toml")
    cropped = with_table("sdxl = { crop = [16, 8] }", "d.toml")
    assert torch.equal(unset, explicit)
    assert not torch.equal(unset, larger) and not torch.equal(unset, cropped)
