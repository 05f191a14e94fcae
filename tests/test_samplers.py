"""Samplers on a closed-form denoiser (Gaussian data), the noise sources, and the name registry."""
import math

import pytest
import torch
from sdbake.schemas import names
from sdbake.schemas.names import a1111_sampler_label, parse_sampler, parse_scheduler
from sdbake.stages.samplers import (
    SAMPLER_FUNCTIONS,
    SAMPLERS,
    BrownianNoise,
    ImageNoise,
    get_sampler,
    is_second_order,
    model_sigmas,
    noise_sampler_for,
    sampler_sigmas,
)
from sdbake.stages.samplers.stepping import Guided

DATA_STD = 0.5


def gaussian_denoiser(data_mean):
    """The exact posterior mean E[x0 | x] when x0 ~ N(mean, DATA_STD^2) per element, x = x0 + sigma * n."""
    def denoise(x, sigma):
        s = sigma.view(-1, 1, 1, 1)
        return data_mean + DATA_STD ** 2 / (DATA_STD ** 2 + s ** 2) * (x - data_mean)
    return denoise


def for_sampler(sampler, denoise):
    """`denoise` as `sampler` calls it: a CFG++ sampler (needs_uncond) also gets the unconditional estimate,
    here the same unguided prediction, which makes its run the ordinary sampler's."""
    if not names.SAMPLERS[sampler].needs_uncond:
        return denoise
    return lambda x, sigma: Guided(denoise(x, sigma), denoise(x, sigma))


def exact_ode_solution(x, data_mean, sigma_start):
    """The probability-flow ODE solved from sigma_start to 0: (x - mean) shrinks by std / sqrt(std^2 + s^2)."""
    return data_mean + (x - data_mean) * DATA_STD / math.sqrt(DATA_STD ** 2 + sigma_start ** 2)


def sample_gaussian(sampler, steps, seed=42, shape=(4, 32, 32)):
    data_mean = torch.tensor(0.5, dtype=torch.float64)
    sigmas = sampler_sigmas(sampler, "karras", model_sigmas(), steps, dtype=torch.float64)
    noise = ImageNoise([seed], shape, dtype=torch.float64)
    # start from the exact marginal at sigma_max: N(mean, std^2 + sigma^2)
    x = data_mean + math.sqrt(DATA_STD ** 2 + sigmas[0].item() ** 2) * noise.draw()
    out, _ = SAMPLERS[sampler](for_sampler(sampler, gaussian_denoiser(data_mean)), x, sigmas,
                               noise_sampler=noise_sampler_for(sampler, noise, sigmas), carry=None)
    return out, exact_ode_solution(x, data_mean, sigmas[0].item())


def relative_error(out, exact):
    return ((out - exact).abs().max() / exact.abs().max()).item()


DETERMINISTIC = ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ddim", "uni_pc", "uni_pc_bh2"]


@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_deterministic_samplers_converge_to_the_exact_ode_solution(sampler):
    coarse = relative_error(*sample_gaussian(sampler, 10))
    fine = relative_error(*sample_gaussian(sampler, 40))
    assert fine < 0.04
    # first order (euler, ddim) at least halves the error from 10 to 40 steps, higher orders do far better
    assert fine < coarse / (3 if sampler in ("euler", "ddim") else 10)


# lcm assumes a consistency-distilled model: with the exact denoiser of an ordinary one it keeps
# only the posterior mean's spread (std^4 / (std^2 + sigma^2)) each step, so it ends too narrow
@pytest.mark.parametrize("sampler", [name for name in SAMPLERS if name != "lcm"])
def test_every_sampler_ends_with_the_data_distribution(sampler):
    out, _ = sample_gaussian(sampler, 40)
    assert out.mean().item() == pytest.approx(0.5, abs=0.03)
    assert out.std().item() == pytest.approx(DATA_STD, rel=0.1)


def test_single_steps_match_hand_computed_values():
    # D(x, s) = x / (1 + s^2): data N(0, 1); x = 1 at sigma 2
    denoise = lambda x, s: x / (1 + s.view(-1, 1, 1, 1) ** 2)
    x = torch.ones((1, 1, 1, 1), dtype=torch.float64)
    sigmas = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    # euler: D = 0.2, d = (1 - 0.2) / 2 = 0.4, x = 1 - 0.4 = 0.6
    assert SAMPLERS["euler"](denoise, x, sigmas[:2], noise_sampler=None, carry=None)[0].item() == pytest.approx(0.6)
    # heun: x_euler = 0.6, D(0.6, 1) = 0.3, d2 = 0.3, x = 1 - (0.4 + 0.3) / 2 = 0.65
    assert SAMPLERS["heun"](denoise, x, sigmas[:2], noise_sampler=None, carry=None)[0].item() == pytest.approx(0.65)
    # dpmpp_2m: first step 0.6 (DDIM); second: D = 0.3, r = 1, D' = 1.5 * 0.3 - 0.5 * 0.2 = 0.35,
    # x = 0.5 * 0.6 + 0.5 * 0.35 = 0.475
    assert SAMPLERS["dpmpp_2m"](denoise, x, sigmas, noise_sampler=None, carry=None)[0].item() == pytest.approx(0.475)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_one_step_schedule_gives_the_denoised_estimate(sampler):
    sigmas = sampler_sigmas(sampler, "karras", model_sigmas(), 1)
    noise = ImageNoise([5], (4, 4, 4))
    x = noise.draw() * sigmas[0]
    out, carry = SAMPLERS[sampler](for_sampler(sampler, gaussian_denoiser(0.0)), x, sigmas,
                                   noise_sampler=noise_sampler_for(sampler, noise, sigmas), carry=None)
    assert torch.isfinite(out).all() and carry.sigma.item() == 0.0


def test_callback_sees_every_step_index_of_the_slice():
    seen = []
    sigmas = sampler_sigmas("dpmpp_2m", "karras", model_sigmas(), 8)
    SAMPLERS["dpmpp_2m"](gaussian_denoiser(0.0), torch.zeros((1, 4, 4, 4)), sigmas[3:],
                         noise_sampler=None, carry=None, callback=seen.append)
    assert seen == list(range(5))


def test_noisy_sampler_without_noise_source_is_an_error():
    sigmas = sampler_sigmas("euler_ancestral", "karras", model_sigmas(), 4)
    with pytest.raises(ValueError, match="noise_sampler"):
        SAMPLERS["euler_ancestral"](gaussian_denoiser(0.0), torch.zeros((1, 4, 4, 4)), sigmas,
                                    noise_sampler=None, carry=None)


def test_initial_noise_is_a1111_cpu_rng_per_image():
    noise = ImageNoise([7, 8], (4, 6, 5))
    first = noise.draw()
    generator = torch.Generator("cpu").manual_seed(8)
    assert first.shape == (2, 4, 6, 5) and first.dtype == torch.float32
    assert torch.equal(first[1], torch.randn((4, 6, 5), generator=generator))
    # ancestral draws continue the same generator
    assert torch.equal(noise.draw()[1], torch.randn((4, 6, 5), generator=generator))


def test_generator_state_round_trip_continues_the_stream():
    noise = ImageNoise([3, 4, 5], (4, 8, 8))
    noise.draw()
    state = noise.get_state()
    assert state.dtype == torch.uint8 and state.shape[0] == 3
    expected = noise.draw()
    resumed = ImageNoise([3, 4, 5], (4, 8, 8))
    resumed.set_state(state)
    assert torch.equal(resumed.draw(), expected)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_batch_size_never_changes_an_image(sampler):
    seed, shape = 1000, (4, 8, 8)
    sigmas = sampler_sigmas(sampler, "karras", model_sigmas(), 12)
    means = torch.tensor([0.1, -0.3, 0.7]).view(3, 1, 1, 1)

    def run(seeds, data_mean):
        noise = ImageNoise(seeds, shape)
        initial = noise.draw()
        out, _ = SAMPLERS[sampler](for_sampler(sampler, gaussian_denoiser(data_mean)), initial * sigmas[0], sigmas,
                                   noise_sampler=noise_sampler_for(sampler, noise, sigmas), carry=None)
        return initial, out

    batch_initial, batch_out = run([seed, seed + 1, seed + 2], means)
    single_initial, single_out = run([seed + 2], means[2:])
    assert torch.equal(batch_initial[2], single_initial[0])
    # a per-image denoiser; batched arithmetic may round differently, hence the tolerance
    assert torch.allclose(batch_out[2], single_out[0], rtol=0, atol=1e-5)


SCHEDULE = torch.tensor([14.6, 9.0, 4.0, 3.25, 0.5, 0.03, 0.0])


def test_brownian_increments_are_unit_normal_additive_and_independent():
    brownian = BrownianNoise([11], (4, 32, 32), SCHEDULE, dtype=torch.float64)
    a, inside, b, c = torch.tensor(9.0), torch.tensor(6.0), torch.tensor(4.0), torch.tensor(3.25)
    ab, bc, ac = brownian(a, b), brownian(b, c), brownian(a, c)
    a_inside, inside_b = brownian(a, inside), brownian(inside, b)
    for increment in (ab, bc, ac, a_inside, inside_b, brownian(0.0300001, 0.03), brownian(14.6, 0.03)):
        assert increment.mean().item() == pytest.approx(0.0, abs=0.06)
        assert increment.std().item() == pytest.approx(1.0, rel=0.05)
    # W(c) - W(a) = (W(b) - W(a)) + (W(c) - W(b)), also through a point inside an interval
    assert torch.allclose(ab * math.sqrt(5.0) + bc * math.sqrt(0.75), ac * math.sqrt(5.75), atol=1e-12)
    assert torch.allclose(a_inside * math.sqrt(3.0) + inside_b * math.sqrt(2.0), ab * math.sqrt(5.0), atol=1e-12)
    for first, second in ((ab, bc), (a_inside, inside_b)):
        correlation = torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1].item()
        assert abs(correlation) < 0.06


def test_brownian_noise_is_a_pure_function_of_seed_and_interval():
    query = [(torch.tensor(9.0), torch.tensor(4.0)), (torch.tensor(14.6), torch.tensor(0.5)),
             (torch.tensor(1.0), torch.tensor(0.5)), (torch.tensor(3.25), torch.tensor(2.0))]
    first = BrownianNoise([21, 22], (2, 8, 8), SCHEDULE)
    forward = [first(a, b) for a, b in query]
    second = BrownianNoise([22], (2, 8, 8), SCHEDULE)   # fresh, other batch, reverse order
    backward = [second(a, b) for a, b in reversed(query)][::-1]
    for batched, single in zip(forward, backward):
        assert torch.equal(batched[1:], single)
    with pytest.raises(ValueError, match="outside"):
        first(torch.tensor(20.0), torch.tensor(1.0))


def test_noise_sampler_for_uses_the_whole_schedule_range():
    sigmas = sampler_sigmas("dpmpp_2m_sde", "karras", model_sigmas(), 10)
    noise = ImageNoise([1], (4, 8, 8))
    brownian = noise_sampler_for("dpmpp_2m_sde", noise, sigmas[4:])
    whole = noise_sampler_for("dpmpp_2m_sde", noise, sigmas)
    assert whole.sigma_max == pytest.approx(sigmas[0].item()) and whole.sigma_min == pytest.approx(sigmas[-2].item())
    assert brownian.sigma_max < whole.sigma_max
    assert noise_sampler_for("dpmpp_2m", noise, sigmas) is None
    assert noise_sampler_for("euler_ancestral", noise, sigmas)(sigmas[0], sigmas[1]).shape == (1, 4, 8, 8)


def test_a1111_labels_and_comfyui_ids_parse():
    assert parse_sampler("DPM++ 2M Karras") == ("dpmpp_2m", "karras")
    assert parse_sampler("euler a") == ("euler_ancestral", None)
    assert parse_sampler("DPM++ SDE Exponential") == ("dpmpp_sde", "exponential")
    assert parse_sampler("DPM2 a Karras") == ("dpm_2_ancestral", "karras")
    assert parse_sampler("  Euler ") == ("euler", None)
    assert parse_sampler("dpmpp_3m_sde") == ("dpmpp_3m_sde", None)
    expected = {"Heun": "heun", "DPM2": "dpm_2", "LMS": "lms", "DPM++ 2S a": "dpmpp_2s_ancestral",
                "DPM++ 2M SDE": "dpmpp_2m_sde", "DPM++ 3M SDE": "dpmpp_3m_sde", "DDIM": "ddim",
                "DPM++ 2M SDE Heun": "dpmpp_2m_sde_heun"}
    for label, sampler in expected.items():
        assert parse_sampler(label) == (sampler, None)
        assert parse_sampler(label.upper() + " KARRAS") == (sampler, "karras")
    # A1111's UniPC and LCM labels; DDPM and UniPC BH2 are ours (A1111 has neither)
    for label, sampler in {"UniPC": "uni_pc", "LCM": "lcm", "DDPM": "ddpm", "unipc bh2": "uni_pc_bh2"}.items():
        assert parse_sampler(label) == (sampler, None)
    assert parse_sampler("LCM Karras") == ("lcm", "karras")
    assert parse_scheduler("KL Optimal") == "kl_optimal" == parse_scheduler("kl_optimal")
    # a *_gpu id writes its CPU twin's label, and that label reads back as the twin
    for alias in ("dpmpp_sde_gpu", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde_gpu", "dpmpp_2m_sde_heun_gpu"):
        twin = names.SAMPLERS[alias].alias_of
        assert a1111_sampler_label(alias, "karras") == a1111_sampler_label(twin, "karras")
        assert parse_sampler(a1111_sampler_label(alias, "karras")[0]) == (twin, None)
        assert parse_sampler(alias) == (alias, None)
    assert a1111_sampler_label("uni_pc", "kl_optimal") == ("UniPC", "KL Optimal")
    # "DPM fast" alone is A1111's (eta 1); ComfyUI's eta-0 dpm_fast writes the same label with `Eta: 0`; so adaptive
    assert parse_sampler("DPM fast") == ("dpm_fast_a1111", None) and parse_sampler("k_dpm_fast") == ("dpm_fast_a1111", None)
    assert parse_sampler("DPM adaptive Karras") == ("dpm_adaptive_a1111", "karras") == parse_sampler("k_dpm_ad Karras")
    assert parse_sampler("dpm_fast") == ("dpm_fast", None)
    assert (names.a1111_eta("dpm_fast"), names.a1111_eta("dpm_fast_a1111"), names.a1111_eta("euler")) == (0.0, None, None)
    assert (names.with_eta("dpm_fast_a1111", 0.0), names.with_eta("dpm_fast", 1.0), names.with_eta("dpm_adaptive", 1.0),
            names.with_eta("dpm_adaptive", 0.5), names.with_eta("euler_ancestral", 0.5)) == (
        "dpm_fast", "dpm_fast_a1111", "dpm_adaptive_a1111", None, "euler_ancestral")


def test_unknown_sampler_names_list_the_valid_ones():
    for bad in ("DPM++ 2M Turbo", "res_multistep_cfg_pp", "dpm_faster", "", "Karras"):
        with pytest.raises(ValueError, match="dpmpp_2m.*DPM\\+\\+ 2M"):
            parse_sampler(bad)
    with pytest.raises(ValueError, match="valid"):
        get_sampler("Euler a")


def test_sampler_properties():
    assert [name for name in SAMPLERS if is_second_order(name)] == [
        "heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_sde_gpu", "restart",
        "dpmpp_2s_ancestral_cfg_pp"]
    assert [name for name, info in names.SAMPLERS.items() if info.noise == "ancestral"] == [
        "euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "ddpm", "lcm", "dpm_fast_a1111", "restart",
        "dpm_adaptive_a1111", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp"]
    assert [name for name, info in names.SAMPLERS.items() if info.needs_uncond] == [
        "ddim_cfg_pp", "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "dpmpp_2s_ancestral_cfg_pp"]
    assert [name for name, info in names.SAMPLERS.items() if info.cfg_scale != 1] == ["ddim_cfg_pp"]
    assert [name for name, info in names.SAMPLERS.items() if info.noise == "sde"] == [
        "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde_gpu",
        "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu"]
    # ComfyUI's KSampler drops the second-to-last sigma for these (comfy/samplers.py)
    assert names.DISCARD_PENULTIMATE_SIGMA_SAMPLERS == {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
    # they pick their own steps over the range they are given: splits are refused (tests/test_split_refusal.py)
    assert names.WHOLE_RANGE_SAMPLERS == {"dpm_fast", "dpm_adaptive", "dpm_fast_a1111", "restart", "dpm_adaptive_a1111"}
    with pytest.raises(ValueError):
        is_second_order("nope")


def test_every_sampler_function_is_in_the_table_and_every_table_entry_has_one():
    import inspect

    from sdbake.stages.samplers import (
        cfg_pp_samplers,
        ddpm_samplers,
        dpm_solver_fast,
        dpm_solver_samplers,
        karras_samplers,
        plms_samplers,
        restart_samplers,
        uni_pc_samplers,
    )
    assert list(SAMPLER_FUNCTIONS) == list(names.SAMPLERS) == list(SAMPLERS)
    modules = (karras_samplers, dpm_solver_samplers, ddpm_samplers, uni_pc_samplers, plms_samplers, dpm_solver_fast,
               restart_samplers, cfg_pp_samplers)
    defined = {function for module in modules
               for name, function in inspect.getmembers(module, inspect.isfunction)
               if name.startswith("sample_") and function.__module__ == module.__name__}
    assert defined == set(SAMPLER_FUNCTIONS.values())      # no sampler function left out of the registry


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_each_sampler_names_its_carry_and_refuses_a_missing_noise_source(sampler):
    sigmas = sampler_sigmas(sampler, "karras", model_sigmas(), 4)
    x = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0)) * sigmas[0]
    noise = noise_sampler_for(sampler, ImageNoise([1], (4, 8, 8)), sigmas)
    # restart walks down to sigma 0 only (a slice that stops above it is a split, which it refuses)
    walked = sigmas if sampler == "restart" else sigmas[:3]
    denoise = for_sampler(sampler, gaussian_denoiser(0.0))
    _, carry = get_sampler(sampler)(denoise, x, walked, noise_sampler=noise)
    assert carry.sampler == sampler
    if names.SAMPLERS[sampler].noise is not None:
        with pytest.raises(ValueError, match=f"sampler '{sampler}' adds noise"):
            get_sampler(sampler)(denoise, x, walked, noise_sampler=None)
