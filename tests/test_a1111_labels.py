"""A1111's names carry over: every hires upscaler label, its Real-ESRGAN upscalers by label or file stem,
every v1.10 sampler label and alias (old "DPM++ 2M Karras"-style labels set the schedule too) and every
"Schedule type" label."""
from __future__ import annotations

import pytest
from recipe_helpers import write
from sdbake.schemas.loader import load_recipe
from stage_helpers import recipe, render_text

torch = pytest.importorskip("torch")


def hires(upscaler: str) -> str:
    return ('[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "hires"\nscale = 2.0\nsteps = 2\ndenoise = 0.5\n'
            f'upscaler = "{upscaler}"\n\n[[stages]]\ntype = "save"\npath = "h.png"\n')


def infotext_params(path) -> dict[str, str]:
    from PIL import Image
    from sdbake.stages.output.infotext import parse_infotext
    return parse_infotext(Image.open(path).info["parameters"])[2]


A1111_UPSCALERS = ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                   "Latent (nearest)", "Latent (nearest-exact)", "None", "Lanczos", "Nearest"]


@pytest.mark.parametrize("label", A1111_UPSCALERS)
def test_every_a1111_upscaler_label_renders_and_is_written_back_as_is(tmp_path, tiny_model_dir, label):
    from PIL import Image
    result = render_text(tmp_path, recipe(tiny_model_dir, hires(label), steps=4))
    assert Image.open(result.outputs[0]).size == (128, 128)
    assert infotext_params(result.outputs[0])["Hires upscaler"] == label


def test_none_resizes_the_decoded_image_with_lanczos_as_a1111(tmp_path, tiny_model_dir):
    # A1111's images.resize_image: upscaler "None" is one Lanczos resize of the decoded image, which is
    # what our "Lanczos" does too: the same pixels, only the infotext label differs.
    import numpy as np
    from PIL import Image
    for name in "abc":
        (tmp_path / name).mkdir()
    none = render_text(tmp_path / "a", recipe(tiny_model_dir, hires("None"), steps=4)).outputs[0]
    lanczos = render_text(tmp_path / "b", recipe(tiny_model_dir, hires("lanczos"), steps=4)).outputs[0]
    bilinear = render_text(tmp_path / "c", recipe(tiny_model_dir, hires("Latent"), steps=4)).outputs[0]
    assert np.array_equal(np.asarray(Image.open(none)), np.asarray(Image.open(lanczos)))
    assert not np.array_equal(np.asarray(Image.open(none)), np.asarray(Image.open(bilinear)))


def upscaler_folder(tmp_path, monkeypatch, *names: str):
    from test_upscaler_model import basicsr_weights, save_safetensors
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    for name in names:
        save_safetensors(folder / name, basicsr_weights())
    config = tmp_path / "config.toml"
    config.write_text(f'[folders]\nupscalers = ["{folder}"]\n')
    monkeypatch.setenv("SDBAKE_CONFIG", str(config))
    return folder


@pytest.mark.parametrize("label,file", [("R-ESRGAN 4x+", "RealESRGAN_x4plus.safetensors"),
                                        ("4x-UltraSharp", "4x-UltraSharp.safetensors")])
def test_model_upscalers_are_found_by_a1111_label_or_file_stem(tmp_path, tiny_model_dir, monkeypatch, label, file):
    from PIL import Image
    upscaler_folder(tmp_path, monkeypatch, file)
    result = render_text(tmp_path, recipe(tiny_model_dir, hires(label), steps=4))
    assert Image.open(result.outputs[0]).size == (128, 128)
    assert infotext_params(result.outputs[0])["Hires upscaler"] == label


def test_a_real_esrgan_label_without_its_file_names_the_file_to_add(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from sdbake.runner.cli import main
    upscaler_folder(tmp_path, monkeypatch)
    path = write(tmp_path, "r.toml", recipe(tiny_model_dir, hires("R-ESRGAN 4x+ Anime6B"), steps=4))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "r.toml:" in err and "A1111 upscaler 'R-ESRGAN 4x+ Anime6B' needs its model file: put " \
                                "RealESRGAN_x4plus_anime_6B.pth" in err


# A1111 v1.10 (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py, sd_schedulers.py): label or
# alias -> (sampler, schedule with "Automatic", which is the sampler table's `scheduler` option).
A1111_SAMPLERS = {
    "Euler a": ("euler_ancestral", "normal"), "k_euler_a": ("euler_ancestral", "normal"),
    "k_euler_ancestral": ("euler_ancestral", "normal"), "Euler": ("euler", "normal"), "k_euler": ("euler", "normal"),
    "LMS": ("lms", "normal"), "k_lms": ("lms", "normal"), "Heun": ("heun", "normal"), "k_heun": ("heun", "normal"),
    "DPM2": ("dpm_2", "karras"), "k_dpm_2": ("dpm_2", "karras"), "DPM2 a": ("dpm_2_ancestral", "karras"),
    "k_dpm_2_a": ("dpm_2_ancestral", "karras"), "DPM++ 2S a": ("dpmpp_2s_ancestral", "karras"),
    "k_dpmpp_2s_a": ("dpmpp_2s_ancestral", "karras"), "DPM++ 2M": ("dpmpp_2m", "karras"),
    "k_dpmpp_2m": ("dpmpp_2m", "karras"), "DPM++ SDE": ("dpmpp_sde", "karras"), "k_dpmpp_sde": ("dpmpp_sde", "karras"),
    "DPM++ 2M SDE": ("dpmpp_2m_sde", "exponential"), "k_dpmpp_2m_sde": ("dpmpp_2m_sde", "exponential"),
    "DPM++ 3M SDE": ("dpmpp_3m_sde", "exponential"), "k_dpmpp_3m_sde": ("dpmpp_3m_sde", "exponential"),
    "DDIM": ("ddim", "ddim_uniform"), "PLMS": ("plms", "ddim_uniform"), "plms": ("plms", "ddim_uniform"),
    "DPM++ 2M SDE Heun": ("dpmpp_2m_sde_heun", "exponential"),
    "k_dpmpp_2m_sde_heun": ("dpmpp_2m_sde_heun", "exponential"),
    "DPM fast": ("dpm_fast_a1111", "normal"), "k_dpm_fast": ("dpm_fast_a1111", "normal"),
    "DPM adaptive": ("dpm_adaptive_a1111", "normal"), "k_dpm_ad": ("dpm_adaptive_a1111", "normal"),
    "DDIM CFG++": ("ddim_cfg_pp", "ddim_uniform"), "ddim_cfgpp": ("ddim_cfg_pp", "ddim_uniform"),
    "Restart": ("restart", "karras"),
}
A1111_SCHEDULES = {"Uniform": "normal", "Karras": "karras", "Exponential": "exponential",
                   "SGM Uniform": "sgm_uniform", "SGMUniform": "sgm_uniform", "Simple": "simple", "Normal": "normal",
                   "DDIM": "ddim_uniform", "Beta": "beta", "KL Optimal": "kl_optimal",
                   "Polyexponential": "polyexponential", "Align Your Steps": "align_your_steps"}


def resolved(tmp_path, tiny_model_dir, sampler: str, scheduler: str | None = None) -> tuple[str, str]:
    text = recipe(tiny_model_dir, '[[stages]]\ntype = "sample"\n', sampler=sampler)
    if scheduler is not None:
        text = text.replace('scheduler = "karras"', f'scheduler = "{scheduler}"')
    else:
        text = text.replace('scheduler = "karras"\n', "")
    stage = load_recipe(write(tmp_path, "s.toml", text)).recipe.stages[1]
    return stage.sampler, stage.scheduler


@pytest.mark.parametrize("label", A1111_SAMPLERS)
def test_every_a1111_sampler_label_and_alias_is_accepted(tmp_path, tiny_model_dir, label):
    sampler, automatic = A1111_SAMPLERS[label]
    assert resolved(tmp_path, tiny_model_dir, label, "Automatic") == (sampler, automatic)
    assert resolved(tmp_path, tiny_model_dir, label, "exponential") == (sampler, "exponential")
    if not label.startswith("k_"):
        for schedule, scheduler in A1111_SCHEDULES.items():      # the pre-1.9 combined labels
            assert resolved(tmp_path, tiny_model_dir, f"{label} {schedule}") == (sampler, scheduler)
        assert resolved(tmp_path, tiny_model_dir, f"{label} Automatic") == (sampler, automatic)


@pytest.mark.parametrize("label", A1111_SCHEDULES)
def test_every_a1111_schedule_type_label_is_accepted(tmp_path, tiny_model_dir, label):
    assert resolved(tmp_path, tiny_model_dir, "Euler", label) == ("euler", A1111_SCHEDULES[label])


def test_a_combined_label_schedule_yields_to_an_explicit_scheduler(tmp_path, tiny_model_dir):
    assert resolved(tmp_path, tiny_model_dir, "DPM++ 2M Karras", "exponential") == ("dpmpp_2m", "exponential")



