"""ComfyUI parity of dpmpp_2m_sde_heun (and its _gpu alias) on a closed-form denoiser.

The reference is a plain re-implementation of ComfyUI's `sample_dpmpp_2m_sde` as its code computes it
(comfy/k_diffusion/sampling.py at commit 02159d81; `sample_dpmpp_2m_sde_heun` calls it with
solver_type='heun', as k-diffusion's own function does for A1111's "DPM++ 2M SDE Heun"), with
eta = 1 and s_noise = 1 for an eps/v model (lambda = -log sigma), fed the same noise draws, in float64.
"""
import pytest
import torch
from sdbake.stages.samplers import ImageNoise, model_sigmas, noise_sampler_for, sampler_sigmas
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
