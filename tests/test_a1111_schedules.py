"""A1111's schedule types that ComfyUI's KSampler lacks: "Polyexponential" and "Align Your Steps".

The references below are written from A1111 v1.10's modules/sd_schedulers.py (read at commit
5bbbda473fc87c161ec7f5351d78b8c43799d436 of AUTOMATIC1111/stable-diffusion-webui; Forge's copy at
086376517336db966d1f803af3d8426160138998 has the same two functions) and k-diffusion's
get_sigmas_polyexponential, in numpy float64 as A1111's align-your-steps code runs. A1111's get_sigmas
passes n = steps (steps + 1 for the samplers that drop the penultimate sigma), the model's sigma_min and
sigma_max, and no rho unless its "rho" setting is changed from 0 (k-diffusion's default rho is 1).
"""
from __future__ import annotations

import types

import numpy as np
import pytest
from stage_helpers import recipe, render_text

torch = pytest.importorskip("torch")

from sdbake.stages.samplers import model_sigmas, sampler_sigmas, sigma_schedule

STEP_COUNTS = (1, 2, 3, 5, 9, 10, 11, 12, 20, 37)
SD1_LEVELS = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
SDXL_LEVELS = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]


def a1111_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> np.ndarray:
    ramp = np.linspace(1, 0, n) ** rho
    sigmas = np.exp(ramp * (np.log(sigma_max) - np.log(sigma_min)) + np.log(sigma_min))
    return np.concatenate([sigmas, [0.0]])


def a1111_align_your_steps(n: int, sdxl: bool) -> np.ndarray:
    levels = list(SDXL_LEVELS if sdxl else SD1_LEVELS)
    if n == len(levels):                       # A1111 compares n, not n + 1, with the 11 levels
        return np.array(levels + [0.0])
    positions = np.linspace(0, 1, len(levels))
    log_ascending = np.log(levels[::-1])
    interpolated = np.exp(np.interp(np.linspace(0, 1, n), positions, log_ascending))[::-1]
    return np.concatenate([interpolated, [0.0]])


def relative_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    assert ours.shape == reference.shape
    return float(np.max(np.abs(ours.numpy() - reference) / np.maximum(np.abs(reference), 1e-300)))


def test_polyexponential_is_k_diffusions_with_a1111s_arguments():
    sd_sigmas = model_sigmas()
    sigma_min, sigma_max = float(sd_sigmas[0]), float(sd_sigmas[-1])
    worst = 0.0
    for steps in STEP_COUNTS:
        ours = sigma_schedule("polyexponential", sd_sigmas, steps, dtype=torch.float64)
        worst = max(worst, relative_error(ours, a1111_polyexponential(steps, sigma_min, sigma_max)))
        # float32: the same formula in float32 arithmetic, within float32 rounding of the float64 one
        single = sigma_schedule("polyexponential", sd_sigmas, steps)
        assert single.dtype == torch.float32
        assert torch.allclose(single.double(), ours, rtol=2e-6, atol=0)
    print(f"polyexponential vs A1111 (float64), steps {STEP_COUNTS}: max relative error {worst:.3g}")
    assert worst <= 1e-12
    # one step is sigma_max, then 0; rho 1 is uniform in log sigma, the exponential schedule
    assert sigma_schedule("polyexponential", sd_sigmas, 1, dtype=torch.float64).tolist() == \
        pytest.approx([sigma_max, 0.0], rel=1e-15)
    exponential = sigma_schedule("exponential", sd_sigmas, 20, dtype=torch.float64)
    assert torch.allclose(sigma_schedule("polyexponential", sd_sigmas, 20, dtype=torch.float64), exponential,
                          rtol=1e-12, atol=0)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_align_your_steps_is_a1111s_levels_and_interpolation(family):
    sd_sigmas = model_sigmas()
    worst = 0.0
    for steps in STEP_COUNTS:
        reference = a1111_align_your_steps(steps, sdxl=family == "sdxl")
        ours = sigma_schedule("align_your_steps", sd_sigmas, steps, dtype=torch.float64, family=family)
        worst = max(worst, relative_error(ours, reference))
        # A1111 returns torch.FloatTensor(the float64 values): the float32 schedule is that, bit for bit
        single = sigma_schedule("align_your_steps", sd_sigmas, steps, family=family)
        assert torch.equal(single, torch.FloatTensor(reference)), steps
    print(f"align_your_steps {family} vs A1111 (float64), steps {STEP_COUNTS}: max relative error {worst:.3g}")
    assert worst <= 1e-12
    levels = SDXL_LEVELS if family == "sdxl" else SD1_LEVELS
    # the 10/11-step edge: 11 steps walk the levels as published; 10 steps are interpolated and still
    # end at 0.029 (ComfyUI's node walks the levels at 10 steps and ends at the 10th, 0.152 / 0.113)
    eleven = sigma_schedule("align_your_steps", sd_sigmas, 11, dtype=torch.float64, family=family)
    assert eleven.tolist() == levels + [0.0]
    ten = sigma_schedule("align_your_steps", sd_sigmas, 10, dtype=torch.float64, family=family)
    assert ten[0].item() == pytest.approx(14.615, rel=1e-15) and ten[-2].item() == pytest.approx(0.029, rel=1e-15)
    assert ten[1].item() != pytest.approx(levels[1], rel=1e-3)
    # one step: numpy's linspace(0, 1, 1) is [0], the low end of the levels
    assert sigma_schedule("align_your_steps", sd_sigmas, 1, dtype=torch.float64, family=family).tolist() == \
        pytest.approx([0.029, 0.0], rel=1e-15)


def test_align_your_steps_takes_the_stage_models_family():
    from sdbake.stages.sampler_run import sampling_setup
    sdxl = types.SimpleNamespace(scheduler_config={}, family="sdxl")
    sd1 = types.SimpleNamespace(scheduler_config={}, family="sd1")
    assert sampling_setup(sdxl, "euler", "align_your_steps", 5).sigmas.tolist() == \
        torch.FloatTensor(a1111_align_your_steps(5, sdxl=True)).tolist()
    assert sampling_setup(sd1, "euler", "align_your_steps", 5).sigmas.tolist() == \
        torch.FloatTensor(a1111_align_your_steps(5, sdxl=False)).tolist()
    # as A1111's get_sigmas, a sampler that drops the penultimate sigma asks for steps + 1 first
    longer = a1111_align_your_steps(6, sdxl=False)
    assert sampling_setup(sd1, "dpm_2", "align_your_steps", 5).sigmas.tolist() == \
        torch.FloatTensor(np.concatenate([longer[:-2], longer[-1:]])).tolist()
    assert torch.equal(sampler_sigmas("euler", "align_your_steps", model_sigmas(), 7, family="sdxl"),
                       torch.FloatTensor(a1111_align_your_steps(7, sdxl=True)))


def infotext_params(path) -> dict[str, str]:
    from PIL import Image
    from sdbake.stages.output.infotext import parse_infotext
    return parse_infotext(Image.open(path).info["parameters"])[2]


def test_a1111_schedule_labels_render_and_are_written_to_the_infotext(tmp_path, tiny_model_dir):
    from PIL import Image
    stages = '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "{{ scheduler }}.png"\n'
    pixels = {}
    for scheduler in ("Align Your Steps", "Polyexponential", "karras", "exponential"):
        text = recipe(tiny_model_dir, stages, steps=6).replace('scheduler = "karras"', f'scheduler = "{scheduler}"')
        (tmp_path / scheduler).mkdir()
        (path,) = render_text(tmp_path / scheduler, text).outputs
        image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        assert image.std() > 1.0        # a picture, not a flat field
        pixels[scheduler] = image
        if scheduler[0].isupper():
            assert infotext_params(path)["Schedule type"] == scheduler
    # the schedule is used: align_your_steps differs from karras; polyexponential at rho 1 is the
    # exponential schedule up to float rounding, so its image is (nearly) the exponential one
    assert np.abs(pixels["Align Your Steps"] - pixels["karras"]).mean() > 1.0
    assert np.abs(pixels["Polyexponential"] - pixels["exponential"]).max() <= 1.0
