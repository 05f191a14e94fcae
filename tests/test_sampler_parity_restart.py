"""A1111 parity of `restart` on a closed-form denoiser.

The reference is a plain re-implementation of A1111 v1.10's `restart_sampler` (modules/sd_samplers_extra.py,
read at commit 255da37da1871a90c352bcc4ee3617fd8ceed610 of AUTOMATIC1111/stable-diffusion-webui; Forge
carries the same function) with k-diffusion's get_sigmas_karras, fed the same pre-drawn noise sequence
(A1111 draws it with torch.randn_like, which it routes to each image's generator), in float64. A1111's
sampler table gives Restart the `karras` schedule ("Automatic") and second_order.
"""
import math
from itertools import pairwise

import pytest
import torch
from sdbake.stages.samplers import SAMPLERS, ImageNoise, model_sigmas, noise_sampler_for, sampler_sigmas
from test_sampler_parity import fixed_noise, relative_error, setup


def kdiffusion_karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    top, bottom = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return torch.cat([(top + ramp * (bottom - top)) ** rho, torch.zeros(1, dtype=torch.float64)])


def a1111_restart(model, x, sigmas, noise, callback=None):
    """A1111's restart_sampler with restart_list None (its automatic list), s_noise 1."""
    ones = x.new_ones([x.shape[0]])
    steps = sigmas.shape[0] - 1
    restart_list = {}
    if steps >= 20:
        restart_steps, restart_times = 9, 1
        if steps >= 36:
            restart_steps, restart_times = steps // 4, 2
        sigmas = kdiffusion_karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
        restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    restart_list = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_list:
            count, times, top = restart_list[i + 1]
            min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - top), dim=0))
            if max_idx < min_idx:
                restart_sigmas = kdiffusion_karras(count, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                for _ in range(times):
                    step_list.extend(pairwise(restart_sigmas))
    last = None
    for step_id, (old, new) in enumerate(step_list):
        if last is None:
            last = old
        elif last < old:
            x = x + noise(last, old) * (old ** 2 - last ** 2) ** 0.5
        denoised = model(x, old * ones)
        d = (x - denoised) / old
        if callback is not None:
            callback(step_id)
        dt = new - old
        if new == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, new * ones)) / new
            x = x + (d + d_2) / 2 * dt
        last = new
    return x


def counting(denoise, calls):
    def counted(x, sigma):
        calls.append(float(sigma[0]))
        return denoise(x, sigma)
    return counted


@pytest.mark.parametrize("scheduler", ["karras", "normal"])
def test_restart_matches_a1111(scheduler):
    for steps, draws in ((10, 0), (20, 1), (40, 2)):
        sigmas, denoise, x = setup("restart", steps, scheduler)
        our_calls, their_calls, our_steps, their_steps = [], [], [], []
        ours = SAMPLERS["restart"](counting(denoise, our_calls), x, sigmas, noise_sampler=fixed_noise(draws, x.shape),
                                   callback=our_steps.append)[0]
        # the same sequence with one draw to spare: afterwards exactly one must be left
        spare = [torch.randn(x.shape, generator=torch.Generator().manual_seed(7 + n), dtype=torch.float64)
                 for n in range(draws + 1)]
        theirs = a1111_restart(counting(denoise, their_calls), x, sigmas, lambda sigma, sigma_next, spare=spare: spare.pop(0),
                               callback=their_steps.append)
        error = relative_error(ours, theirs)
        print(f"restart {scheduler} {steps} steps: max relative error {error:.2e}, {len(our_calls)} model calls, "
              f"{len(our_steps)} callbacks, {draws} restart noise draws")
        assert error <= 1e-9, (steps, error)
        assert our_calls == their_calls
        # A1111 counts one callback per Heun step: `steps` in all, restarts included; every step but
        # the last (to sigma 0) calls the model twice, which is why its table says second_order
        assert our_steps == their_steps == list(range(steps))
        assert len(our_calls) == 2 * steps - 1
        assert len(spare) == 1


def test_restart_below_20_steps_is_heun():
    sigmas, denoise, x = setup("restart", 12)
    heun = SAMPLERS["heun"](denoise, x, sigmas, carry=None)[0]
    assert torch.equal(SAMPLERS["restart"](denoise, x, sigmas, noise_sampler=fixed_noise(0, x.shape))[0], heun)


def test_restart_runs_a_slice_as_its_own_whole_range():
    # an img2img slice: A1111 hands the sampler sigmas[steps - t_enc - 1:] and it restarts within them
    sigmas, denoise, x = setup("restart", 30)
    for start in (5, 15):
        part = sigmas[start:]
        ours = SAMPLERS["restart"](denoise, x, part, noise_sampler=fixed_noise(1, x.shape))[0]
        error = relative_error(ours, a1111_restart(denoise, x, part, fixed_noise(1, x.shape)))
        print(f"restart slice sigmas[{start}:] of 30 steps: max relative error {error:.2e}")
        assert error <= 1e-9


def test_restart_refuses_sigmas_that_stop_before_zero():
    sigmas, denoise, x = setup("restart", 20)
    with pytest.raises(ValueError, match="restart walks down to sigma 0"):
        SAMPLERS["restart"](denoise, x, sigmas[:10], noise_sampler=fixed_noise(1, x.shape))


def test_restart_noise_comes_from_each_images_generator():
    # the draws to go back up are each image's next draws after its initial noise: batch size never
    # changes an image
    sigmas = sampler_sigmas("restart", "karras", model_sigmas(), 24)

    def run(seeds):
        noise = ImageNoise(seeds, (4, 8, 8))
        x = noise.draw() * sigmas[0]
        return SAMPLERS["restart"](lambda x, s: 0.2 + x / (1 + s.view(-1, 1, 1, 1) ** 2), x, sigmas,
                                   noise_sampler=noise_sampler_for("restart", noise, sigmas))[0]
    pair = run([3, 4])
    assert torch.equal(pair[1:], run([4]))
    assert not torch.equal(pair[:1], run([5]))
    assert math.isfinite(pair.abs().max().item())
