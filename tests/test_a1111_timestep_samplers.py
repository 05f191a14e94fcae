"""A1111's timestep samplers (PLMS, DDIM CFG++) against independent re-implementations of A1111's loops.

The references below are written from A1111 v1.10's modules/sd_samplers_timesteps_impl.py `plms` and
`ddim_cfgpp`, sd_samplers_timesteps.py `CompVisSampler.get_timesteps` (read in the Forge repository,
which carries them unchanged: lllyasviel/stable-diffusion-webui-forge, sd_samplers_timesteps_impl.py at
commit 08637651, sd_samplers_timesteps.py at 7a2aca6f) and sd_samplers_cfg_denoiser.py `forward` /
`combine_denoised` (A1111's own, whose `cond_scale_miltiplier` and `last_noise_uncond` Forge's copy
lacks): they step the variance-preserving latent over A1111's DDPM timesteps with the model's eps, in
float64. Ours walks k-diffusion's x = x0 + sigma * eps over the
sigmas of the same timesteps; the two latents agree after dividing by sqrt(1 + sigma^2).
"""
import math

import pytest
import torch
from sdbake.schemas.names import automatic_scheduler, parse_sampler
from sdbake.stages.samplers import SAMPLERS, model_sigmas, sampler_sigmas

MEANS = (0.3, -0.4)
DATA_STD = 0.5


def eps_model(x_vp, sigma, means=MEANS):
    """A closed-form, per-image, nonlinear eps(x_t): the Gaussian-data posterior mean of the noise in the
    variance-preserving latent at noise level sigma, plus a small tanh term."""
    mean = torch.tensor(means, dtype=x_vp.dtype).view(-1, 1, 1, 1)
    a = 1 / (1 + sigma ** 2)                                   # alpha_cumprod of that sigma
    posterior = (1 - a) ** 0.5 * (x_vp - a ** 0.5 * mean) / (a * DATA_STD ** 2 + 1 - a)
    return posterior + 0.05 * torch.tanh(x_vp) * sigma / (1 + sigma)


def denoiser(x, sigma, means=MEANS):
    """The same model as k-diffusion sees it: D(x, sigma) = x - sigma * eps(x / sqrt(1 + sigma^2))."""
    s = sigma.view(-1, 1, 1, 1)
    return x - s * eps_model(x / (1 + s ** 2) ** 0.5, s, means)


def a1111_timesteps(steps):
    """get_timesteps without discard_next_to_last_sigma: every (1000 // steps)-th timestep from 0, plus 1."""
    return [min(t + 1, 999) for t in range(0, 1000, 1000 // steps)]


def a1111_plms(x, timesteps, alphas_cumprod, counter):
    """A1111's loop: len(timesteps) - 1 steps from the last timestep down to the first."""
    def eps(x, t):
        counter.append(t)
        return eps_model(x, ((1 - alphas_cumprod[t]) / alphas_cumprod[t]) ** 0.5)

    def step(x, e_t, a_t, a_prev):
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e_t

    old_eps = []
    for index in range(len(timesteps) - 1, 0, -1):
        a_t, a_prev = alphas_cumprod[timesteps[index]], alphas_cumprod[timesteps[index - 1]]
        e_t = eps(x, timesteps[index])
        if not old_eps:
            e_prime = (e_t + eps(step(x, e_t, a_t, a_prev), timesteps[index - 1])) / 2
        elif len(old_eps) == 1:
            e_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x = step(x, e_prime, a_t, a_prev)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
    return x


def relative_error(ours, reference):
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def counting(denoise, calls):
    def counted(x, sigma):
        calls.append(sigma)
        return denoise(x, sigma)
    return counted


@pytest.mark.parametrize("steps", [2, 4, 5, 7, 20, 30, 3, 9, 27, 37, 111, 251])
def test_automatic_schedule_of_plms_is_a1111s_timesteps_then_sigma_0(steps):
    """ddim_uniform walks A1111's timesteps and then the step to sigma 0 that A1111 leaves out. When
    1000 // steps divides 999 (3, 9, 27, 37, 111 and over 250 steps) A1111's range reaches 999, whose
    + 1 it clips back to 999: one more timestep at the top than ComfyUI's ddim_uniform (docs/design.md)."""
    sigmas = model_sigmas()
    assert parse_sampler("PLMS") == ("plms", None) and automatic_scheduler("plms") == "ddim_uniform"
    schedule = sampler_sigmas("plms", "ddim_uniform", sigmas, steps, dtype=torch.float64).tolist()
    a1111 = [sigmas[t].item() for t in reversed(a1111_timesteps(steps))]
    if 999 % (1000 // steps) == 0:
        assert a1111[0] == sigmas[999].item() and schedule == a1111[1:] + [0.0]
    else:
        assert schedule == a1111 + [0.0]


@pytest.mark.parametrize("steps", [2, 3, 4, 5, 7, 20, 30])
def test_plms_matches_a1111_on_its_timesteps(steps):
    sigmas = model_sigmas()
    alphas_cumprod = 1 / (1 + sigmas ** 2)
    timesteps = a1111_timesteps(steps)
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    reference_calls, our_calls = [], []
    # A1111's txt2img hands the sampler the noise itself as the latent at the last timestep
    reference = a1111_plms(noise, timesteps, alphas_cumprod, reference_calls)
    walk = torch.stack([sigmas[t] for t in reversed(timesteps)])
    ours, carry = SAMPLERS["plms"](counting(denoiser, our_calls), noise * (1 + walk[0] ** 2) ** 0.5, walk,
                                   noise_sampler=None, carry=None)
    error = relative_error(ours / (1 + walk[-1] ** 2) ** 0.5, reference)
    print(f"plms {steps} steps: max relative error {error:.2e} ({len(our_calls)} model calls)")
    assert error < 1e-9
    assert len(our_calls) == len(reference_calls) == len(timesteps)     # one extra call, on the first step
    assert len(carry.derivatives) == min(len(timesteps) - 1, 3)


def test_plms_takes_the_last_step_to_sigma_0_and_converges():
    """On the whole ddim_uniform schedule (one step more than A1111, to sigma 0), PLMS solves the
    probability-flow ODE: Gaussian data (no tanh term) and an exact solution to compare with."""
    mean = torch.tensor(MEANS, dtype=torch.float64).view(-1, 1, 1, 1)

    def gaussian(x, sigma):
        s = sigma.view(-1, 1, 1, 1)
        return mean + DATA_STD ** 2 / (DATA_STD ** 2 + s ** 2) * (x - mean)

    def error(steps):
        walk = sampler_sigmas("plms", "ddim_uniform", model_sigmas(), steps, dtype=torch.float64)
        x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * walk[0]
        calls = []
        out, _ = SAMPLERS["plms"](counting(gaussian, calls), x, walk, noise_sampler=None, carry=None)
        assert len(calls) == steps + 1
        exact = mean + (x - mean) * DATA_STD / math.sqrt(DATA_STD ** 2 + walk[0].item() ** 2)
        return relative_error(out, exact)
    coarse, fine = error(10), error(40)
    print(f"plms vs the exact ODE solution: 10 steps {coarse:.2e}, 40 steps {fine:.2e}")
    # A1111's Adams-Bashforth weights assume equal steps; in sigma these are not, so the order is low
    assert fine < 5e-3 and fine < coarse / 4


def run_cli(tmp_path, model, sampler: str, scheduler: str, name: str) -> tuple[int, dict]:
    """`sdbake run` of a 4-step txt2img on the tiny model; (exit code, the image's infotext fields)."""
    from PIL import Image
    from recipe_helpers import write
    from sdbake.runner.cli import main
    from sdbake.stages.output.infotext import parse_infotext
    from stage_helpers import recipe
    text = recipe(model, f'[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "{name}.png"\n',
                  steps=4, sampler=sampler).replace('scheduler = "karras"', f'scheduler = "{scheduler}"')
    code = main(["run", str(write(tmp_path, f"{name}.toml", text)), "--out", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    image = tmp_path / "out" / f"{name}.png"
    return code, parse_infotext(Image.open(image).info["parameters"])[2] if image.exists() else {}


def test_a_cli_render_with_the_plms_label_writes_it_to_the_infotext(tmp_path, tiny_model_dir, monkeypatch):
    from stage_helpers import count_denoiser_calls
    calls = count_denoiser_calls(monkeypatch)
    code, fields = run_cli(tmp_path, tiny_model_dir, "PLMS", "Automatic", "plms")
    assert code == 0
    assert (fields["Sampler"], fields["Schedule type"], fields["Steps"]) == ("PLMS", "DDIM", "4")
    # A1111's 4 timesteps (3 steps, the first with two model calls), then the step to sigma 0
    sigmas = model_sigmas()
    assert calls == pytest.approx([sigmas[t].item() for t in (751, 501, 501, 251, 1)], rel=1e-5)


def test_plms_txt2img_starts_from_unit_noise_in_the_variance_preserving_latent(tiny_model_dir):
    """A1111 hands its timestep samplers the noise itself as x_T; in k-diffusion's x that is noise *
    sqrt(1 + sigma^2), where the k-diffusion samplers start from noise * sigma. img2img is the same for both."""
    from sdbake.stages.sampler_run import SamplingSetup
    sigmas = model_sigmas()
    walk = sampler_sigmas("plms", "ddim_uniform", sigmas, 4)
    plms, ddim = (SamplingSetup(name, "ddim_uniform", 4, sigmas, walk) for name in ("plms", "ddim"))
    assert plms.noise_scale(0, True).item() == pytest.approx((1 + walk[0].item() ** 2) ** 0.5, rel=1e-7)
    assert plms.noise_scale(2, False).item() == walk[2].item() and plms.noise_scale(0, False).item() == walk[0].item()
    assert ddim.noise_scale(0, True).item() == walk[0].item()


UNCOND_MEANS = (-0.1, 0.25)


def a1111_ddim_cfgpp(x, timesteps, alphas_cumprod, cond_scale, counter):
    """A1111's DDIM CFG++ at its default eta 0: the eps the CFG denoiser combines with cond_scale / 12.5
    (cond_scale_miltiplier) gives pred_x0, the unconditional eps (last_noise_uncond) the direction."""
    for index in range(len(timesteps) - 1, 0, -1):
        t = timesteps[index]
        a_t, a_prev = alphas_cumprod[t], alphas_cumprod[timesteps[index - 1]]
        sigma = ((1 - a_t) / a_t) ** 0.5
        counter.append(t)
        e_cond, e_uncond = eps_model(x, sigma), eps_model(x, sigma, UNCOND_MEANS)
        e_t = e_uncond.clone() + (e_cond - e_uncond) * (1.0 * (cond_scale * (1 / 12.5)))
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        x = a_prev.sqrt() * pred_x0 + (1 - a_prev - 0.0 ** 2).sqrt() * e_uncond
    return x


@pytest.mark.parametrize("steps", [2, 4, 7, 20, 30])
@pytest.mark.parametrize("cfg", [1.0, 7.0])
def test_ddim_cfg_pp_matches_a1111_on_its_timesteps(steps, cfg):
    from sdbake.stages.sampler_run import sampler_cfg
    from sdbake.stages.samplers.stepping import Guided
    sigmas = model_sigmas()
    alphas_cumprod = 1 / (1 + sigmas ** 2)
    timesteps = a1111_timesteps(steps)
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    reference_calls, our_calls = [], []
    reference = a1111_ddim_cfgpp(noise, timesteps, alphas_cumprod, cfg, reference_calls)
    scale = sampler_cfg("ddim_cfg_pp", cfg)         # what the guided denoiser applies: cfg / 12.5

    def guided(x, sigma):
        our_calls.append(sigma)
        cond, uncond = denoiser(x, sigma), denoiser(x, sigma, UNCOND_MEANS)
        return Guided(uncond + (cond - uncond) * scale, uncond)
    walk = torch.stack([sigmas[t] for t in reversed(timesteps)])
    ours, _ = SAMPLERS["ddim_cfg_pp"](guided, noise * (1 + walk[0] ** 2) ** 0.5, walk, noise_sampler=None,
                                      carry=None)
    error = relative_error(ours / (1 + walk[-1] ** 2) ** 0.5, reference)
    print(f"ddim_cfg_pp cfg {cfg} {steps} steps: max relative error {error:.2e}")
    assert error < 1e-9
    assert scale == cfg / 12.5 and len(our_calls) == len(reference_calls) == len(timesteps) - 1
    assert parse_sampler("DDIM CFG++") == parse_sampler("ddim_cfgpp") == ("ddim_cfg_pp", None)
    assert automatic_scheduler("ddim_cfg_pp") == "ddim_uniform"
