"""ComfyUI parity of dpmpp_2m_sde_heun (and its _gpu alias) on a closed-form denoiser.

The reference is a plain re-implementation of ComfyUI's `sample_dpmpp_2m_sde` as its code computes it
(comfy/k_diffusion/sampling.py at commit 02159d81; `sample_dpmpp_2m_sde_heun` calls it with
solver_type='heun', as k-diffusion's own function does for A1111's "DPM++ 2M SDE Heun"), with
eta = 1 and s_noise = 1 for an eps/v model (lambda = -log sigma), fed the same noise draws, in float64.
"""
import math

import pytest
import torch
from sdbake.stages.samplers import SAMPLERS, ImageNoise, model_sigmas, noise_sampler_for, sampler_sigmas
from test_sampler_parity import fixed_noise, ours, relative_error, setup


def comfy_dpmpp_2m_sde(model, x, sigmas, noise_sampler, solver_type, eta=1.0):
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = -sigmas[i].log(), -sigmas[i + 1].log()
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
        old_denoised = denoised
        h_last = h
    return x


@pytest.mark.parametrize("scheduler", ["karras", "exponential", "normal"])
@pytest.mark.parametrize("sampler,solver_type", [("dpmpp_2m_sde", "midpoint"), ("dpmpp_2m_sde_heun", "heun"),
                                                 ("dpmpp_2m_sde_heun_gpu", "heun")])
def test_dpmpp_2m_sde_heun_and_midpoint_match_comfyui(sampler, solver_type, scheduler):
    for steps in (1, 2, 5, 20):
        sigmas, denoise, x = setup(sampler, steps, scheduler)
        error = relative_error(ours(sampler, denoise, x, sigmas, fixed_noise(steps, x.shape)),
                               comfy_dpmpp_2m_sde(denoise, x, sigmas, fixed_noise(steps, x.shape), solver_type))
        print(f"{sampler} {scheduler} {steps} steps: max relative error {error:.2e}")
        assert error < 1e-9, (steps, error)


def test_heun_differs_from_midpoint_only_by_its_correction():
    # same first step (no history yet), different from the second on: the two are not one sampler twice
    sigmas, denoise, x = setup("dpmpp_2m_sde", 6, "exponential")
    runs = {}
    for sampler in ("dpmpp_2m_sde", "dpmpp_2m_sde_heun"):
        noise = ImageNoise([3, 4], (4, 8, 8), dtype=torch.float64)
        runs[sampler] = [ours(sampler, denoise, x, sigmas[:end + 1], noise_sampler_for(sampler, noise, sigmas))
                         for end in (1, 2)]
    assert torch.equal(runs["dpmpp_2m_sde"][0], runs["dpmpp_2m_sde_heun"][0])
    assert relative_error(runs["dpmpp_2m_sde_heun"][1], runs["dpmpp_2m_sde"][1]) > 1e-4


def test_heun_gpu_alias_is_its_cpu_twin():
    sigmas = sampler_sigmas("dpmpp_2m_sde_heun_gpu", "karras", model_sigmas(), 12)

    def run(sampler):
        noise = ImageNoise([3, 4], (4, 8, 8))
        x = noise.draw() * sigmas[0]
        return ours(sampler, setup(sampler, 1)[1], x, sigmas, noise_sampler_for(sampler, noise, sigmas))
    assert torch.equal(run("dpmpp_2m_sde_heun_gpu"), run("dpmpp_2m_sde_heun"))


# --- dpm_fast / dpm_adaptive: ComfyUI's ksampler() wrapper (comfy/samplers.py at 02159d81: sigma_max =
# sigmas[0], sigma_min = the last non-zero sigma, n = len(sigmas) - 1, no eta) around k-diffusion's
# DPMSolver (comfy/k_diffusion/sampling.py at 02159d81, the same as crowsonkb/k-diffusion at 4601bf08).
# eta 1 with noise from the image generators is A1111's (modules/sd_samplers_kdiffusion.py: its eta
# option, default 1, and randn_like drawn from the per-image generators).

class ReferenceDPMSolver:
    def __init__(self, model):
        self.model, self.calls = model, 0

    @staticmethod
    def t(sigma):
        return -sigma.log()

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    def eps(self, cache, key, x, t):
        if key not in cache:
            cache[key] = (x - self.model(x, self.sigma(t) * x.new_ones([x.shape[0]]))) / self.sigma(t)
            self.calls += 1
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        return x - self.sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        eps_r1 = self.eps(cache, "eps_r1", x - self.sigma(s1) * (r1 * h).expm1() * eps, s1)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        eps_r1 = self.eps(cache, "eps_r1", x - self.sigma(s1) * (r1 * h).expm1() * eps, s1)
        u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
              - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def fast(self, x, t_start, t_end, nfe, eta, noise_sampler):
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            cache = {}
            t, t_next = ts[i], ts[i + 1]
            t_next_, su = self.ancestral(t, t_next, t_end, eta)
            self.eps(cache, "eps", x, t)
            x = [None, self.step_1, self.step_2, self.step_3][order](x, t, t_next_, cache)
            if eta:
                x = x + su * noise_sampler(self.sigma(t), self.sigma(t_next))
        return x

    def ancestral(self, t, t_next, t_end, eta):
        if not eta:
            return t_next, 0.0
        sigma_from, sigma_to = self.sigma(t), self.sigma(t_next)
        su = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
        sd = (sigma_to ** 2 - su ** 2) ** 0.5
        t_next_ = torch.minimum(t_end, self.t(sd))
        return t_next_, (self.sigma(t_next) ** 2 - self.sigma(t_next_) ** 2) ** 0.5

    def adaptive(self, x, t_start, t_end, eta, noise_sampler, rtol=0.05, atol=0.0078, h=0.05, accept_safety=0.81):
        atol, rtol = torch.tensor(atol), torch.tensor(rtol)
        s, x_prev, errs = t_start, x, []
        b1 = 1.0 / (1.5 if eta else 3)      # (pcoeff + icoeff + dcoeff) / order with 0, 1, 0; order 1.5 with eta
        while s < t_end - 1e-5:
            cache = {}
            t = torch.minimum(t_end, s + h)
            t_, su = self.ancestral(s, t, t_end, eta)
            self.eps(cache, "eps", x, s)
            x_low = self.step_2(x, s, t_, cache, r1=1 / 3)
            x_high = self.step_3(x, s, t_, cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            inv = 1 / (float(error) + 1e-8)
            errs = errs or [inv, inv, inv]
            errs[0] = inv
            factor = 1 + math.atan(errs[0] ** b1 * errs[1] ** -0.0 * errs[2] ** 0.0 - 1)
            if factor >= accept_safety:
                errs[2], errs[1] = errs[1], errs[0]
                x_prev, s = x_low, t
                x = x_high + su * noise_sampler(None, None) if eta else x_high
            h *= factor
        return x


def comfy_whole_range(kind, model, x, sigmas, eta=0.0, noise_sampler=None):
    solver = ReferenceDPMSolver(model)
    sigma_min = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
    t_start, t_end = solver.t(sigmas[0].clone()), solver.t(sigma_min.clone())
    if kind == "dpm_fast":
        return solver.fast(x, t_start, t_end, len(sigmas) - 1, eta, noise_sampler), solver.calls
    return solver.adaptive(x, t_start, t_end, eta, noise_sampler), solver.calls


@pytest.mark.parametrize("scheduler", ["karras", "normal", "exponential"])
def test_dpm_fast_matches_comfyui_and_makes_one_model_call_per_step(scheduler):
    for steps in (1, 2, 3, 4, 5, 9, 20):
        sigmas, denoise, x = setup("dpm_fast", steps, scheduler)
        calls = []
        ours_x = SAMPLERS["dpm_fast"](denoise, x, sigmas, carry=None, callback=calls.append)[0]
        reference, reference_calls = comfy_whole_range("dpm_fast", denoise, x, sigmas)
        error = relative_error(ours_x, reference)
        print(f"dpm_fast {scheduler} {steps} steps: max relative error {error:.2e}")
        assert error < 1e-9, (steps, error)
        assert calls == list(range(steps)) and reference_calls == steps


@pytest.mark.parametrize("scheduler", ["karras", "exponential"])
def test_dpm_fast_a1111_is_a1111s_eta_1_with_fresh_noise_each_step(scheduler):
    for steps in (2, 7, 20):
        sigmas, denoise, x = setup("dpm_fast_a1111", steps, scheduler)
        draws = steps // 3 + 1          # one draw per solver step (floor(n / 3) + 1), the last too
        error = relative_error(ours("dpm_fast_a1111", denoise, x, sigmas, fixed_noise(draws, x.shape)),
                               comfy_whole_range("dpm_fast", denoise, x, sigmas, 1.0, fixed_noise(draws, x.shape))[0])
        print(f"dpm_fast_a1111 {scheduler} {steps} steps: max relative error {error:.2e}")
        assert error < 1e-9, (steps, error)
    deterministic = ours("dpm_fast", denoise, x, sigmas)
    assert relative_error(ours("dpm_fast_a1111", denoise, x, sigmas, fixed_noise(draws, x.shape)), deterministic) > 1e-3


@pytest.mark.parametrize("scheduler", ["karras", "normal"])
def test_dpm_adaptive_matches_comfyui_at_batch_size_1(scheduler):
    for steps in (2, 10, 30):
        sigmas, denoise, x = setup("dpm_adaptive", steps, scheduler, batch=1)
        reference, reference_calls = comfy_whole_range("dpm_adaptive", denoise, x, sigmas)
        calls = []
        ours_x = SAMPLERS["dpm_adaptive"](denoise, x, sigmas, carry=None, callback=calls.append)[0]
        error = relative_error(ours_x, reference)
        print(f"dpm_adaptive {scheduler} {steps} steps: {reference_calls} model calls, max relative error {error:.2e}")
        assert error < 1e-9, (steps, error)
        assert calls == list(range(steps))      # progress in the slice's steps, whatever the calls


@pytest.mark.parametrize("scheduler", ["karras", "exponential"])
def test_dpm_adaptive_a1111_is_a1111s_eta_1_with_noise_on_accepted_steps(scheduler):
    for steps in (2, 20):
        sigmas, denoise, x = setup("dpm_adaptive_a1111", steps, scheduler, batch=1)
        draws = 60                           # more than it accepts; both take them in the same order
        ours_x = SAMPLERS["dpm_adaptive_a1111"](denoise, x, sigmas, carry=None,
                                                noise_sampler=rows_ignored(fixed_noise(draws, x.shape)))[0]
        reference, calls = comfy_whole_range("dpm_adaptive", denoise, x, sigmas, 1.0, fixed_noise(draws, x.shape))
        error = relative_error(ours_x, reference)
        print(f"dpm_adaptive_a1111 {scheduler} {steps} steps: {calls} model calls, max relative error {error:.2e}")
        assert error < 1e-9, (steps, error)
    assert relative_error(ours_x, ours("dpm_adaptive", denoise, x, sigmas)) > 1e-3


def rows_ignored(noise_sampler):
    """A noise sampler for one image: dpm_adaptive names the images that draw (here always image 0)."""
    return lambda sigma, sigma_next, rows=None: noise_sampler(sigma, sigma_next)


def test_dpm_adaptive_steps_each_image_on_its_own():
    sigmas, denoise, x = setup("dpm_adaptive", 10, "karras", batch=2)
    x = x * torch.tensor([1.0, 0.1], dtype=x.dtype).view(-1, 1, 1, 1)     # the second image arrives first
    calls = []

    def watched(x_, sigma):
        calls.append(sigma.tolist())
        assert torch.isfinite(x_).all()         # an image that arrived first is evaluated, never with NaN
        return denoise(x_, sigma)
    together = ours("dpm_adaptive", watched, x, sigmas)
    # the two images stood at other sigmas, and the second was evaluated past its end once it arrived
    assert any(a != b for a, b in calls) and any(b < sigmas[-2] * 0.999 for _, b in calls)
    for row in range(2):
        alone = ours("dpm_adaptive", lambda x_, s, row=row: denoise(x_.expand(2, -1, -1, -1), s.expand(2))[row:row + 1],
                     x[row:row + 1], sigmas)
        assert relative_error(together[row:row + 1], alone) < 1e-12


def test_dpm_adaptive_a1111_images_step_and_draw_on_their_own():
    # per-image step control with per-image noise: an image's accepted steps draw from its own generator
    # only, so it is the same in a batch as alone, though the two images accept different steps
    from test_samplers import gaussian_denoiser
    sigmas = sampler_sigmas("dpm_adaptive_a1111", "karras", model_sigmas(), 10, dtype=torch.float64)
    scales = torch.tensor([1.0, 10.0], dtype=torch.float64).view(-1, 1, 1, 1)

    def run(seeds, scale):
        noise = ImageNoise(seeds, (4, 8, 8), dtype=torch.float64)
        x = noise.draw() * sigmas[0] * scale
        return ours("dpm_adaptive_a1111", gaussian_denoiser(0.2), x, sigmas,
                    noise_sampler_for("dpm_adaptive_a1111", noise, sigmas))
    together = run([3, 4], scales)
    for row, seed in enumerate((3, 4)):
        assert torch.equal(together[row:row + 1], run([seed], scales[row:row + 1]))
