"""Sigma schedules: values computed by hand from ComfyUI v0.3.64's definitions (comfy/samplers.py)."""
import math

import pytest
import torch
from sdbake.stages.samplers import (
    SCHEDULERS,
    model_sigmas,
    sampler_sigmas,
    sigma_schedule,
    sigma_to_t,
    t_to_sigma,
)
from sdbake.stages.samplers.beta_distribution import beta_ppf, regularized_incomplete_beta

SD_SIGMA_MIN = 0.029167158151720367   # SD1.x: scaled_linear betas 0.00085..0.012 over 1000 steps
SD_SIGMA_MAX = 14.614641229333639


@pytest.fixture(scope="module")
def sd_sigmas():
    return model_sigmas()


def test_sd_model_sigmas_are_ascending_with_known_ends(sd_sigmas):
    assert sd_sigmas.shape == (1000,) and sd_sigmas.dtype == torch.float64
    assert torch.all(sd_sigmas[1:] > sd_sigmas[:-1])
    assert sd_sigmas[0].item() == pytest.approx(SD_SIGMA_MIN, rel=1e-12)
    assert sd_sigmas[-1].item() == pytest.approx(SD_SIGMA_MAX, rel=1e-12)


def test_linear_betas_give_their_own_sigmas():
    sigmas = model_sigmas(beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    alphas_cumprod_first = 1 - 0.0001
    assert sigmas[0].item() == pytest.approx(math.sqrt((1 - alphas_cumprod_first) / alphas_cumprod_first), rel=1e-12)
    assert sigmas[-1].item() == pytest.approx(157.40728081040757, rel=1e-9)
    with pytest.raises(ValueError, match="beta_schedule"):
        model_sigmas(beta_schedule="cosine")


def _sigma_at_timestep(sigmas, t):
    """ComfyUI's ModelSamplingDiscrete.sigma: interpolate log sigma between the neighbouring integers."""
    low, high = math.floor(t), math.ceil(t)
    w = t - low
    return math.exp((1 - w) * math.log(sigmas[low].item()) + w * math.log(sigmas[high].item()))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_schedule_has_steps_plus_one_sigmas_ending_in_zero(sd_sigmas, scheduler):
    for steps in (1, 2, 5, 20, 37):
        sigmas = sigma_schedule(scheduler, sd_sigmas, steps)
        if not (scheduler == "ddim_uniform" and 1000 % steps) and not (scheduler == "beta" and steps > 20):
            assert sigmas.shape == (steps + 1,), (scheduler, steps)
        assert sigmas.dtype == torch.float32
        assert sigmas[-1].item() == 0.0
        assert torch.all(sigmas[:-1] > sigmas[1:]), (scheduler, steps)


def test_first_and_last_sigmas_of_each_schedule_at_20_steps(sd_sigmas):
    expected = {
        # Karras rho=7 and exponential run from sigma_max to sigma_min
        "karras": (SD_SIGMA_MAX, SD_SIGMA_MIN),
        "exponential": (SD_SIGMA_MAX, SD_SIGMA_MIN),
        # normal: timesteps linspace(999, 0, 20) -> sigma(999), ..., sigma(0)
        "normal": (SD_SIGMA_MAX, SD_SIGMA_MIN),
        # sgm_uniform: linspace(999, 0, 21)[:-1] ends at t = 999 / 20 = 49.95
        "sgm_uniform": (SD_SIGMA_MAX, _sigma_at_timestep(sd_sigmas, 49.95)),
        # simple: sigmas[-(1 + int(i * 50))] for i < 20 -> index 999 ... 49
        "simple": (SD_SIGMA_MAX, sd_sigmas[49].item()),
        # ddim_uniform: indices 1, 51, ..., 951, reversed
        "ddim_uniform": (sd_sigmas[951].item(), sd_sigmas[1].item()),
        # beta(0.6, 0.6): quantile 1 -> t 999; quantile 1/20 -> 0.0125545 * 999 = 12.54 -> t 13
        "beta": (SD_SIGMA_MAX, sd_sigmas[13].item()),
        # kl_optimal: tan of a lerp of the arctangents, ending at sigma_min
        "kl_optimal": (SD_SIGMA_MAX, SD_SIGMA_MIN),
    }
    for scheduler, (first, last) in expected.items():
        sigmas = sigma_schedule(scheduler, sd_sigmas, 20)
        assert sigmas.shape == (21,)
        # float32 output; ComfyUI's Karras power in float32 moves the ends by up to 7e-7
        assert sigmas[0].item() == pytest.approx(first, rel=1e-6), scheduler
        assert sigmas[-2].item() == pytest.approx(last, rel=1e-6), scheduler


def test_normal_schedule_middle_sigma_is_log_interpolated(sd_sigmas):
    sigmas = sigma_schedule("normal", sd_sigmas, 4, dtype=torch.float64)
    # linspace(999, 0, 4) = 999, 666, 333, 0: integer timesteps
    assert sigmas.tolist() == pytest.approx([sd_sigmas[999].item(), sd_sigmas[666].item(),
                                             sd_sigmas[333].item(), sd_sigmas[0].item(), 0.0], rel=1e-12)
    sigmas = sigma_schedule("normal", sd_sigmas, 3, dtype=torch.float64)
    assert sigmas[1].item() == pytest.approx(_sigma_at_timestep(sd_sigmas, 499.5), rel=1e-12)


def _comfyui_kl_optimal(steps, sigma_min, sigma_max):
    """ComfyUI's kl_optimal_scheduler by hand: tan(w_i * atan(sigma_min) + (1 - w_i) * atan(sigma_max)),
    w_i = i / (steps - 1), then 0 (its Python floats are float64; it computes in float32)."""
    return [math.tan(i / (steps - 1) * math.atan(sigma_min) + (1 - i / (steps - 1)) * math.atan(sigma_max))
            for i in range(steps)] + [0.0]


def test_kl_optimal_matches_comfyuis_formula(sd_sigmas):
    for steps in (2, 3, 10, 20, 33):
        expected = _comfyui_kl_optimal(steps, SD_SIGMA_MIN, SD_SIGMA_MAX)
        assert sigma_schedule("kl_optimal", sd_sigmas, steps, dtype=torch.float64).tolist() == pytest.approx(
            expected, rel=1e-12, abs=0)
        # float32, as ComfyUI: from the float32 model sigma ends
        ends = (float(sd_sigmas[0].float()), float(sd_sigmas[-1].float()))
        assert sigma_schedule("kl_optimal", sd_sigmas, steps).tolist() == pytest.approx(
            _comfyui_kl_optimal(steps, *ends), rel=1e-6, abs=0)
    # the middle of 3 steps is tan of the mean angle, by hand
    middle = math.tan((math.atan(SD_SIGMA_MIN) + math.atan(SD_SIGMA_MAX)) / 2)
    assert sigma_schedule("kl_optimal", sd_sigmas, 3, dtype=torch.float64)[1].item() == pytest.approx(middle, rel=1e-12)
    assert middle == pytest.approx(0.9616, abs=1e-4)
    # ComfyUI divides by steps - 1 = 0 for one step (NaN); sdbake starts at sigma_max
    assert sigma_schedule("kl_optimal", sd_sigmas, 1, dtype=torch.float64).tolist() == pytest.approx(
        [SD_SIGMA_MAX, 0.0], rel=1e-12)


def test_uni_pc_drops_the_penultimate_sigma_as_comfyui(sd_sigmas):
    longer = sigma_schedule("kl_optimal", sd_sigmas, 11)
    for sampler in ("uni_pc", "uni_pc_bh2"):
        assert torch.equal(sampler_sigmas(sampler, "kl_optimal", sd_sigmas, 10), torch.cat([longer[:-2], longer[-1:]]))


def test_karras_schedule_is_uniform_in_sigma_to_the_one_seventh(sd_sigmas):
    sigmas = sigma_schedule("karras", sd_sigmas, 10, dtype=torch.float64)[:-1]
    roots = sigmas ** (1 / 7)
    assert torch.allclose(roots[1:] - roots[:-1], (roots[1] - roots[0]).expand(9), rtol=1e-10)
    exponential = sigma_schedule("exponential", sd_sigmas, 10, dtype=torch.float64)[:-1]
    assert torch.allclose(exponential.log().diff(), exponential.log().diff()[0].expand(9), rtol=1e-10)


def test_ddim_uniform_keeps_comfyui_extra_sigmas_when_steps_do_not_divide_1000(sd_sigmas):
    sigmas = sigma_schedule("ddim_uniform", sd_sigmas, 7)
    # stride 1000 // 7 = 142: indices 1, 143, ..., 995 -> 8 sigmas, then 0
    assert sigmas.shape == (9,)
    assert sigmas[0].item() == pytest.approx(sd_sigmas[995].item(), rel=3e-7)


def test_beta_schedule_drops_repeated_timesteps(sd_sigmas):
    sigmas = sigma_schedule("beta", sd_sigmas, 600)
    assert 300 < len(sigmas) < 601
    assert torch.all(sigmas[:-1] > sigmas[1:])


def test_float64_path_agrees_with_float32_schedule(sd_sigmas):
    for scheduler in SCHEDULERS:
        single = sigma_schedule(scheduler, sd_sigmas, 20)
        double = sigma_schedule(scheduler, sd_sigmas, 20, dtype=torch.float64)
        assert double.dtype == torch.float64
        assert torch.allclose(double.float(), single, rtol=2e-6, atol=0), scheduler


def test_dpm_2_drops_the_penultimate_sigma(sd_sigmas):
    longer = sigma_schedule("karras", sd_sigmas, 21)
    for sampler in ("dpm_2", "dpm_2_ancestral"):
        sigmas = sampler_sigmas(sampler, "karras", sd_sigmas, 20)
        assert sigmas.shape == (21,)
        assert torch.equal(sigmas, torch.cat([longer[:-2], longer[-1:]]))
    assert torch.equal(sampler_sigmas("euler", "karras", sd_sigmas, 20), sigma_schedule("karras", sd_sigmas, 20))


def test_unknown_scheduler_lists_the_valid_ones(sd_sigmas):
    with pytest.raises(ValueError, match="karras"):
        sigma_schedule("linear_quadratic", sd_sigmas, 20)


def test_beta_quantiles_match_scipy_values():
    # scipy.stats.beta.ppf(p, 0.6, 0.6), recorded
    assert beta_ppf(0.05, 0.6, 0.6) == pytest.approx(0.012554456873611399, rel=1e-12)
    assert beta_ppf(0.25, 0.6, 0.6) == pytest.approx(0.17568037865269498, rel=1e-12)
    assert beta_ppf(0.9, 0.6, 0.6) == pytest.approx(0.9604155944112192, rel=1e-12)
    assert beta_ppf(0.5, 0.6, 0.6) == 0.5
    assert regularized_incomplete_beta(0.3, 1.0, 1.0) == pytest.approx(0.3, rel=1e-14)   # uniform
    assert regularized_incomplete_beta(0.3, 2.0, 1.0) == pytest.approx(0.09, rel=1e-14)  # x^2


def test_sigma_to_t_inverts_t_to_sigma(sd_sigmas):
    timesteps = torch.tensor([0.0, 1.0, 12.25, 500.5, 998.75, 999.0], dtype=torch.float64)
    sigmas = t_to_sigma(timesteps, sd_sigmas)
    assert torch.allclose(sigma_to_t(sigmas, sd_sigmas), timesteps, rtol=0, atol=1e-9)
    assert torch.equal(sigma_to_t(sd_sigmas[[0, 250, 999]], sd_sigmas, quantize=True),
                       torch.tensor([0.0, 250.0, 999.0], dtype=torch.float64))
    single = sigma_to_t(sigmas.float(), sd_sigmas)
    assert single.dtype == torch.float32 and single.shape == (6,)


def test_karras_schedule_and_timesteps_match_diffusers_euler_scheduler(sd_sigmas):
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       use_karras_sigmas=True)
    scheduler.set_timesteps(20)
    ours = sigma_schedule("karras", sd_sigmas, 20)
    # diffusers derives its model sigmas from float32 betas: its sigma_min is 1.3e-5 relative off
    assert torch.allclose(scheduler.sigmas.float(), ours, rtol=3e-5, atol=0)
    assert torch.allclose(scheduler.timesteps.double(), sigma_to_t(ours[:-1].double(), sd_sigmas), atol=2e-3)
