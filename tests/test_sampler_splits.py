"""Exact splits: sigmas[0:k+1] then sigmas[k:] with the carry equals one run, bit for bit on CPU."""
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from sdbake.schemas.names import SAMPLERS as SAMPLER_TABLE
from sdbake.schemas.names import WHOLE_RANGE_SAMPLERS
from sdbake.stages.samplers import (
    SAMPLERS,
    SCHEDULERS,
    ImageNoise,
    carry_from_tensors,
    carry_to_tensors,
    model_sigmas,
    noise_sampler_for,
    sampler_sigmas,
)
from sdbake.stages.samplers.stepping import Guided

SEEDS = [1234, 1235]
SHAPE = (4, 8, 8)
STEPS = 20


def denoiser(x, sigma):
    """A per-image, nonlinear stand-in for a model: Gaussian-data posterior mean plus a tanh term."""
    s = sigma.view(-1, 1, 1, 1)
    mean = torch.arange(x.shape[0], dtype=x.dtype).view(-1, 1, 1, 1) * 0.3 - 0.2
    return mean + 0.25 / (0.25 + s ** 2) * (x - mean) + 0.05 * torch.tanh(x) * s / (1 + s)


def uncond_denoiser(x, sigma):
    """The same stand-in without its prompt: another data mean, for the CFG++ samplers' Guided pair."""
    s = sigma.view(-1, 1, 1, 1)
    return 0.1 + 0.25 / (0.25 + s ** 2) * (x - 0.1) + 0.03 * torch.sin(x) * s / (1 + s)


def denoiser_for(sampler):
    if not SAMPLER_TABLE[sampler].needs_uncond:
        return denoiser
    return lambda x, sigma: Guided(denoiser(x, sigma), uncond_denoiser(x, sigma))


def run_whole(sampler, sigmas):
    noise = ImageNoise(SEEDS, SHAPE)
    x = noise.draw() * sigmas[0]
    out, _ = SAMPLERS[sampler](denoiser_for(sampler), x, sigmas,
                               noise_sampler=noise_sampler_for(sampler, noise, sigmas), carry=None)
    return out


def run_split(sampler, sigmas, k, tmp_path):
    """First part in one noise source; the second resumes from a safetensors round trip of the latent,
    carry and generator state with fresh objects, as the cache would between processes."""
    noise = ImageNoise(SEEDS, SHAPE)
    x = noise.draw() * sigmas[0]
    x, carry = SAMPLERS[sampler](denoiser_for(sampler), x, sigmas[:k + 1],
                                 noise_sampler=noise_sampler_for(sampler, noise, sigmas), carry=None,
                                 steps_after=len(sigmas) - 1 - k)
    tensors, meta = carry_to_tensors(carry)
    save_file({**{f"carry.{name}": t for name, t in tensors.items()}, "latent": x,
               "rng": noise.get_state()}, str(tmp_path / "state.safetensors"))

    stored = load_file(str(tmp_path / "state.safetensors"))
    carry = carry_from_tensors({name[len("carry."):]: t for name, t in stored.items() if name.startswith("carry.")},
                               meta)
    resumed = ImageNoise(SEEDS, SHAPE)
    resumed.set_state(stored["rng"])
    out, _ = SAMPLERS[sampler](denoiser_for(sampler), stored["latent"], sigmas[k:],
                               noise_sampler=noise_sampler_for(sampler, resumed, sigmas), carry=carry, steps_before=k)
    return out


@pytest.fixture(scope="module")
def schedules():
    sd_sigmas = model_sigmas()
    return {(sampler, scheduler): sampler_sigmas(sampler, scheduler, sd_sigmas, STEPS)
            for sampler in SAMPLERS for scheduler in SCHEDULERS}


# samplers that choose their own steps over the range they are given refuse splits instead (below)
SPLITTABLE = [name for name in SAMPLERS if name not in WHOLE_RANGE_SAMPLERS]


@pytest.mark.parametrize("scheduler", ["karras", "normal"])
@pytest.mark.parametrize("sampler", SPLITTABLE)
def test_split_at_any_step_equals_one_run(schedules, sampler, scheduler, tmp_path):
    sigmas = schedules[sampler, scheduler]
    whole = run_whole(sampler, sigmas)
    for k in (1, 7, 10, 19):
        assert torch.equal(run_split(sampler, sigmas, k, tmp_path), whole), (sampler, scheduler, k)


@pytest.mark.parametrize("scheduler", ["exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"])
def test_split_is_exact_for_every_scheduler(schedules, scheduler, tmp_path):
    for sampler in ("lms", "dpmpp_2m", "dpmpp_3m_sde", "euler_ancestral", "dpmpp_sde", "uni_pc", "ddpm", "plms",
                    "dpmpp_2m_cfg_pp"):
        sigmas = schedules[sampler, scheduler]
        assert torch.equal(run_split(sampler, sigmas, 13, tmp_path), run_whole(sampler, sigmas)), (sampler, scheduler)


@pytest.mark.parametrize("sampler", ["dpmpp_3m_sde", "uni_pc_bh2"])
def test_three_way_split_in_float64_equals_one_run(schedules, sampler):
    sigmas = schedules[sampler, "karras"].double()
    noise = ImageNoise(SEEDS, SHAPE, dtype=torch.float64)
    noise_sampler = noise_sampler_for(sampler, noise, sigmas)
    x0 = noise.draw() * sigmas[0]
    whole, _ = SAMPLERS[sampler](denoiser, x0, sigmas, noise_sampler=noise_sampler, carry=None)
    x, carry = x0, None
    for start, end in ((0, 3), (3, 4), (4, 20)):
        x, carry = SAMPLERS[sampler](denoiser, x, sigmas[start:end + 1], noise_sampler=noise_sampler, carry=carry,
                                     steps_before=start, steps_after=20 - end)
    assert torch.equal(x, whole)


@pytest.mark.parametrize("sampler", sorted(WHOLE_RANGE_SAMPLERS))
def test_a_whole_range_sampler_split_is_not_one_run_which_is_why_validate_refuses_it(schedules, sampler, tmp_path):
    # dpm_fast spreads its calls uniformly in log sigma over the range it gets, dpm_adaptive sizes its
    # steps from the error: two parts take other steps than one run (tests/test_split_refusal.py)
    sigmas = schedules[sampler, "karras"]
    if sampler == "restart":
        # restart rebuilds its schedule down to sigma 0 from 20 steps on: it refuses a part that stops above 0
        with pytest.raises(ValueError, match="restart walks down to sigma 0"):
            run_split(sampler, sigmas, 10, tmp_path)
        return
    whole, split = run_whole(sampler, sigmas), run_split(sampler, sigmas, 10, tmp_path)
    difference = ((split - whole).abs().max() / whole.abs().max()).item()
    print(f"{sampler}: split at 10 of 20 differs from one run by {difference:.2e} (max, relative)")
    assert difference > 1e-3


def test_uni_pc_split_without_its_position_is_not_the_whole_run(schedules):
    # uni_pc lowers its order on the last two steps of the whole schedule: a slice that is not told
    # what follows it takes its own end for the schedule's (what ComfyUI does with every slice)
    sigmas = schedules["uni_pc", "karras"]
    x0 = ImageNoise(SEEDS, SHAPE).draw() * sigmas[0]
    whole, _ = SAMPLERS["uni_pc"](denoiser, x0, sigmas, carry=None)
    x, carry = SAMPLERS["uni_pc"](denoiser, x0, sigmas[:11], carry=None)
    unplaced, _ = SAMPLERS["uni_pc"](denoiser, x, sigmas[10:], carry=carry)
    assert not torch.equal(unplaced, whole)


def test_continuation_that_does_not_line_up_is_an_error(schedules):
    sigmas = schedules["dpmpp_2m", "karras"]
    x = torch.zeros((1, *SHAPE))
    x, carry = SAMPLERS["dpmpp_2m"](denoiser, x, sigmas[:6], noise_sampler=None, carry=None)
    with pytest.raises(ValueError, match="does not line up"):
        SAMPLERS["dpmpp_2m"](denoiser, x, sigmas[6:], noise_sampler=None, carry=carry)


def test_a_carry_from_another_sampler_starts_fresh_history(schedules):
    sigmas = schedules["dpmpp_2m", "karras"]
    x = torch.ones((1, *SHAPE))
    x, euler_carry = SAMPLERS["euler"](denoiser, x, sigmas[:6], noise_sampler=None, carry=None)
    with_carry, _ = SAMPLERS["dpmpp_2m"](denoiser, x, sigmas[5:], noise_sampler=None, carry=euler_carry)
    without, _ = SAMPLERS["dpmpp_2m"](denoiser, x, sigmas[5:], noise_sampler=None, carry=None)
    assert torch.equal(with_carry, without)


_CONTINUE_IN_FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import torch
    from safetensors.torch import load_file, save_file
    sys.path.insert(0, {test_dir!r})
    from test_sampler_splits import SEEDS, SHAPE, denoiser
    from sdbake.stages.samplers import SAMPLERS, ImageNoise, carry_from_tensors, noise_sampler_for
    stored = load_file({path!r})
    meta = json.loads({meta!r})
    carry = carry_from_tensors({{k[6:]: t for k, t in stored.items() if k.startswith("carry.")}}, meta)
    noise = ImageNoise(SEEDS, SHAPE)
    noise.set_state(stored["rng"])
    sigmas = stored["sigmas"]
    out, _ = SAMPLERS[{sampler!r}](denoiser, stored["latent"], sigmas[{k}:], steps_before={k},
                                   noise_sampler=noise_sampler_for({sampler!r}, noise, sigmas), carry=carry)
    save_file({{"out": out}}, {out_path!r})
""")


@pytest.mark.parametrize("sampler", ["dpmpp_2m_sde", "euler_ancestral", "uni_pc"])
def test_split_resumed_in_a_fresh_process_equals_one_run(schedules, sampler, tmp_path):
    import json
    from pathlib import Path

    sigmas, k = schedules[sampler, "karras"], 8
    noise = ImageNoise(SEEDS, SHAPE)
    x = noise.draw() * sigmas[0]
    x, carry = SAMPLERS[sampler](denoiser, x, sigmas[:k + 1], noise_sampler=noise_sampler_for(sampler, noise, sigmas),
                                 carry=None, steps_after=len(sigmas) - 1 - k)
    tensors, meta = carry_to_tensors(carry)
    save_file({**{f"carry.{n}": t for n, t in tensors.items()}, "latent": x, "rng": noise.get_state(),
               "sigmas": sigmas}, str(tmp_path / "state.safetensors"))
    script = _CONTINUE_IN_FRESH_PROCESS.format(test_dir=str(Path(__file__).parent), path=str(tmp_path / "state.safetensors"),
                                               meta=json.dumps(meta), sampler=sampler, k=k,
                                               out_path=str(tmp_path / "out.safetensors"))
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parent.parent)
    assert torch.equal(load_file(str(tmp_path / "out.safetensors"))["out"], run_whole(sampler, sigmas))
