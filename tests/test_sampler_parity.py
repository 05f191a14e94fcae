"""ComfyUI parity of ddpm, lcm, uni_pc, uni_pc_bh2 and the *_gpu aliases on a closed-form denoiser.

Each reference below is a plain re-implementation of ComfyUI's algorithm as its code computes it
(comfy/k_diffusion/sampling.py at commit 02159d81: `generic_step_sampler` + `DDPMSampler_step`,
`sample_lcm`; comfy/extra_samplers/uni_pc.py at commit 9bffd67f: `sample_unipc` with `SigmaConvert`,
in variance-preserving x, with its list shifting and its coefficient tensors), fed the same noise
draws, in float64. Everything agrees to 1e-9 relative (uni_pc's promise is 1e-5: ComfyUI builds its
coefficients in the sigmas' dtype, float32 in a real run, where ours are float64; here both are float64).
"""
import math

import pytest
import torch
from sdbake.stages.samplers import SAMPLERS, ImageNoise, model_sigmas, noise_sampler_for, sampler_sigmas
from test_samplers import DATA_STD, gaussian_denoiser


def fixed_noise(count, shape, seed=7):
    """A noise sampler that hands out the same pre-drawn sequence to both implementations."""
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(seed + n), dtype=torch.float64)
             for n in range(count)]
    return lambda sigma, sigma_next: draws.pop(0)


def setup(sampler, steps, scheduler="karras", batch=2):
    sigmas = sampler_sigmas(sampler, scheduler, model_sigmas(), steps, dtype=torch.float64)
    data_mean = torch.tensor([0.3, -0.4][:batch], dtype=torch.float64).view(-1, 1, 1, 1)
    x = data_mean + math.sqrt(DATA_STD ** 2 + sigmas[0].item() ** 2) * torch.randn(
        (batch, 4, 8, 8), generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    return sigmas, gaussian_denoiser(data_mean), x


def relative_error(ours, reference):
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def comfy_ddpm(model, x, sigmas, noise_sampler):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        x_in = x / torch.sqrt(1.0 + sigma ** 2.0)
        noise = (x - denoised) / sigma
        alpha_cumprod = 1 / ((sigma * sigma) + 1)
        alpha_cumprod_prev = 1 / ((sigma_prev * sigma_prev) + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        mu = (1.0 / alpha).sqrt() * (x_in - (1 - alpha) * noise / (1 - alpha_cumprod).sqrt())
        if sigma_prev > 0:
            mu = mu + ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt() * noise_sampler(
                sigma, sigma_prev)
        x = mu
        if sigmas[i + 1] != 0:
            x = x * torch.sqrt(1.0 + sigmas[i + 1] ** 2.0)
    return x


def comfy_lcm(model, x, sigmas, noise_sampler):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] > 0:
            x = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x   # EPS noise_scaling
    return x


class ComfySigmaConvert:
    """ComfyUI's SigmaConvert: the variance-preserving view of a sigma."""
    @staticmethod
    def log_alpha(sigma):
        return 0.5 * torch.log(1 / (sigma * sigma + 1))

    def alpha(self, sigma):
        return torch.exp(self.log_alpha(sigma))

    def std(self, sigma):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(sigma)))

    def lambda_(self, sigma):
        log_alpha = self.log_alpha(sigma)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def comfy_uni_pc(model, x, sigmas, variant):
    ns = ComfySigmaConvert()
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    steps = len(timesteps) - 1
    order = min(3, len(timesteps) - 2)

    def data_prediction(x_vp, t):          # predict_eps_sigma, then x0 from eps as UniPC's model_fn does
        x_ve = x_vp * (t ** 2 + 1.0) ** 0.5
        eps = (x_ve - model(x_ve, t.expand(x.shape[0]))) / t
        return (x_vp - ns.std(t) * eps) / ns.alpha(t)

    def update(x_vp, model_prev, t_prev, t, step_order, use_corrector):
        lambda_prev_0, lambda_t = ns.lambda_(t_prev[-1]), ns.lambda_(t)
        model_prev_0 = model_prev[-1]
        h = lambda_t - lambda_prev_0
        rks, d1s = [], []
        for i in range(1, step_order):
            rk = (ns.lambda_(t_prev[-(i + 1)]) - lambda_prev_0) / h
            rks.append(rk)
            d1s.append((model_prev[-(i + 1)] - model_prev_0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks)                                  # the sigmas' dtype, as ComfyUI
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        b_h = hh if variant == "bh1" else torch.expm1(hh)
        rows, b = [], []
        for i in range(1, step_order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        rows, b = torch.stack(rows), torch.tensor(b)
        if d1s:
            d1s = torch.stack(d1s, dim=1)
            rhos_p = torch.tensor([0.5]) if step_order == 2 else torch.linalg.solve(rows[:-1, :-1], b[:-1])
        rhos_c = (torch.tensor([0.5]) if step_order == 1 else torch.linalg.solve(rows, b)) if use_corrector else None
        x_t_ = ns.std(t) / ns.std(t_prev[-1]) * x_vp - ns.alpha(t) * h_phi_1 * model_prev_0
        pred_res = torch.einsum("k,bkchw->bchw", rhos_p.double(), d1s) if len(d1s) else 0
        x_t = x_t_ - ns.alpha(t) * b_h * pred_res
        model_t = None
        if use_corrector:
            model_t = data_prediction(x_t, t)
            corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1].double(), d1s) if len(d1s) else 0
            x_t = x_t_ - ns.alpha(t) * b_h * (corr_res + rhos_c[-1].double() * (model_t - model_prev_0))
        return x_t, model_t

    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    for step_index in range(steps):
        if step_index == 0:
            model_prev, t_prev = [data_prediction(x, timesteps[0])], [timesteps[0]]
        elif step_index < order:
            x, model_x = update(x, model_prev, t_prev, timesteps[step_index], step_index, True)
            model_prev.append(model_x)
            t_prev.append(timesteps[step_index])
        else:
            for step in range(step_index, step_index + 1 + (step_index == steps - 1)):
                step_order = min(order, steps + 1 - step)
                x, model_x = update(x, model_prev, t_prev, timesteps[step], step_order, step != steps)
                for i in range(order - 1):
                    t_prev[i], model_prev[i] = t_prev[i + 1], model_prev[i + 1]
                t_prev[-1] = timesteps[step]
                if step < steps:
                    model_prev[-1] = model_x
    return x / ns.alpha(timesteps[-1])


def ours(sampler, denoise, x, sigmas, noise_sampler=None):
    return SAMPLERS[sampler](denoise, x, sigmas, noise_sampler=noise_sampler, carry=None)[0]


@pytest.mark.parametrize("scheduler", ["karras", "normal", "kl_optimal"])
@pytest.mark.parametrize("sampler,reference", [("ddpm", comfy_ddpm), ("lcm", comfy_lcm)])
def test_ddpm_and_lcm_match_comfyui(sampler, reference, scheduler):
    for steps in (1, 4, 20):
        sigmas, denoise, x = setup(sampler, steps, scheduler)
        error = relative_error(ours(sampler, denoise, x, sigmas, fixed_noise(steps, x.shape)),
                               reference(denoise, x, sigmas, fixed_noise(steps, x.shape)))
        print(f"{sampler} {scheduler} {steps} steps: max relative error {error:.2e}")
        assert error < 1e-9, (steps, error)


@pytest.mark.parametrize("scheduler", ["karras", "normal", "kl_optimal"])
@pytest.mark.parametrize("sampler,variant", [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
def test_uni_pc_matches_comfyui(sampler, variant, scheduler):
    for steps in (2, 3, 4, 5, 10, 25):
        sigmas, denoise, x = setup(sampler, steps, scheduler)
        error = relative_error(ours(sampler, denoise, x, sigmas), comfy_uni_pc(denoise, x, sigmas, variant))
        print(f"{sampler} {scheduler} {steps} steps: max relative error {error:.2e}")
        assert error < 1e-9, (steps, error)


@pytest.mark.parametrize("sampler", ["uni_pc", "uni_pc_bh2"])
def test_uni_pc_converges_to_the_ode_solution_at_comfyuis_last_sigma(sampler):
    def error(steps):
        sigmas, denoise, x = setup(sampler, steps)
        data_mean = torch.tensor([0.3, -0.4], dtype=torch.float64).view(-1, 1, 1, 1)
        # the exact probability-flow ODE solution at sigma 0.001, where ComfyUI's uni_pc stops
        shrink = math.sqrt((DATA_STD ** 2 + 0.001 ** 2) / (DATA_STD ** 2 + sigmas[0].item() ** 2))
        return relative_error(ours(sampler, denoise, x, sigmas), data_mean + (x - data_mean) * shrink)
    coarse, fine = error(8), error(40)
    # the floor is the last, first-order step from sigma_min to 0.001 (ComfyUI's lower_order_final)
    assert fine < 3e-3 and fine < coarse / 10, (coarse, fine)


def test_one_step_uni_pc_is_a_first_order_step_to_the_last_sigma():
    sigmas, denoise, x = setup("uni_pc", 1)
    assert sigmas.shape == (2,)
    denoised = denoise(x, sigmas[:1].expand(2))
    first_order = 0.001 / sigmas[0] * x + (1 - 0.001 / sigmas[0]) * denoised
    assert torch.allclose(ours("uni_pc", denoise, x, sigmas), first_order, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alias,twin", [("dpmpp_sde_gpu", "dpmpp_sde"), ("dpmpp_2m_sde_gpu", "dpmpp_2m_sde"),
                                        ("dpmpp_3m_sde_gpu", "dpmpp_3m_sde")])
def test_gpu_aliases_are_their_cpu_twin(alias, twin):
    sigmas = sampler_sigmas(alias, "karras", model_sigmas(), 12)
    assert torch.equal(sigmas, sampler_sigmas(twin, "karras", model_sigmas(), 12))

    def run(sampler):
        noise = ImageNoise([3, 4], (4, 8, 8))
        x = noise.draw() * sigmas[0]
        return ours(sampler, gaussian_denoiser(0.2), x, sigmas, noise_sampler_for(sampler, noise, sigmas))
    assert torch.equal(run(alias), run(twin))
