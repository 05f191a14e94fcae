"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"), multistep, data prediction, order 3, B(h) variants bh1 (uni_pc) and bh2
(uni_pc_bh2), as ComfyUI runs it (comfy/extra_samplers/uni_pc.py `sample_unipc` at ComfyUI commit
9bffd67f, its sigma form with `SigmaConvert`). That code works in variance-preserving x; with
lambda = -log sigma its update is, in k-diffusion's x, the DPM-Solver++ step plus the UniPC terms,
which is how it is written here. A1111's "UniPC" is another implementation (its own port in
timestep space over the model's discrete schedule); the label is shared, the numbers are ComfyUI's.

ComfyUI's rules, kept: order min(3, steps - 1), lower for the first steps (not enough history) and
for the last two (`lower_order_final`); the model output at the predicted point serves both as the
corrector's input and as the next step's history; no corrector (and no model call) on the last step;
a last sigma of 0 is walked to sigma 0.001 instead, and that latent is the result. Those rules look at
the whole schedule, so the sampler is told how many steps come before and after its slice
(`steps_before`, `steps_after`): a split run takes every step as the whole run does. The carry keeps
the last three model outputs and their sigmas.

One deviation: with a one-step schedule ComfyUI's order is 0 and it returns the scaled input
unchanged; here one step is a first-order step (DPM-Solver++(1)) to sigma 0.001.
"""
from __future__ import annotations

import math

import torch

from .carry import Carry
from .stepping import Denoiser, NoiseSampler, StepCallback, check_sigmas, denoise_at

UNI_PC_ORDER = 3
LAST_SIGMA = 0.001      # ComfyUI replaces a final sigma of 0 with this (log 0 has no lambda)


def uni_pc_weights(ratios: list[float], hh: float, b_h: float, corrector: bool) -> tuple[list[float], list[float]]:
    """(predictor weights, corrector weights) of one UniPC step of order len(ratios) + 1.

    `ratios`: (lambda_k - lambda_0) / h of the older history points; `hh` = -h; `b_h` = B(h). The
    weights solve R rho = b with R[i][k] = r_k^i (r = ratios + [1]) and b[i] = (i+1)! h phi_{i+2}(hh) / B(h)
    (UniPC eq. 8); order 2 predicts with 1/2 and order 1 corrects with 1/2, as UniPC's simplified forms.
    """
    order = len(ratios) + 1
    nodes = [*ratios, 1.0]
    system = [[node ** power for node in nodes] for power in range(order)]
    targets, h_phi, factorial = [], math.expm1(hh) / hh - 1, 1
    for k in range(1, order + 1):
        targets.append(h_phi * factorial / b_h)
        factorial *= k + 1
        h_phi = h_phi / hh - 1 / factorial
    predictor = [0.5] if order == 2 else _solve([row[:-1] for row in system[:-1]], targets[:-1])
    if not corrector:
        return predictor, []
    return predictor, [0.5] if order == 1 else _solve(system, targets)


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    if not rhs:
        return []
    return torch.linalg.solve(torch.tensor(matrix, dtype=torch.float64),
                              torch.tensor(rhs, dtype=torch.float64)).tolist()


def _uni_pc(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, carry: Carry | None, callback: StepCallback,
            steps_before: int, steps_after: int, variant: str) -> tuple[torch.Tensor, Carry]:
    sigma_values = check_sigmas(sigmas)
    steps = len(sigmas) - 1
    total = steps_before + steps + steps_after
    max_order = max(1, min(UNI_PC_ORDER, total - 1))
    outputs = list(carry.denoised) if carry else []          # model outputs, newest first
    output_sigmas = list(carry.sigmas) if carry else []      # where they were taken
    if not outputs and steps:
        outputs, output_sigmas = [denoise_at(denoise, x, sigmas[0])], [sigmas[0]]
    for i in range(steps):
        target = steps_before + i + 1                         # index of sigmas[i + 1] in the whole schedule
        order = min(len(outputs), max_order, total + 1 - target)
        sigma_s, sigma_t = sigma_values[i], sigma_values[i + 1] or LAST_SIGMA
        h = math.log(sigma_s) - math.log(sigma_t)             # lambda_t - lambda_s, lambda = -log sigma
        hh = -h
        b_h = hh if variant == "bh1" else math.expm1(hh)
        ratios = [(math.log(sigma_s) - math.log(float(output_sigmas[k]))) / h for k in range(1, order)]
        differences = [(outputs[k] - outputs[0]) / ratio for k, ratio in zip(range(1, order), ratios)]
        predictor, corrector = uni_pc_weights(ratios, hh, b_h, corrector=target < total)
        x_first = (sigma_t / sigma_s) * x - math.expm1(hh) * outputs[0]    # DPM-Solver++(1)
        x = x_first - b_h * _weighted(predictor, differences) if differences else x_first
        if corrector:
            output = denoise_at(denoise, x, sigmas[i + 1])
            x = x_first - b_h * (_weighted(corrector[:-1], differences) + corrector[-1] * (output - outputs[0]))
            outputs, output_sigmas = [output, *outputs[:UNI_PC_ORDER - 1]], [sigmas[i + 1], *output_sigmas[:2]]
        if callback is not None:
            callback(i)
    return x, Carry(sigmas[-1], denoised=tuple(outputs), sigmas=tuple(output_sigmas))


def _weighted(weights: list[float], tensors: list[torch.Tensor]) -> torch.Tensor | float:
    return sum((w * t for w, t in zip(weights, tensors)), 0.0)


def sample_uni_pc(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                  noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                  callback: StepCallback = None, steps_before: int = 0, steps_after: int = 0) -> tuple[torch.Tensor, Carry]:
    """UniPC with B(h) = h (bh1, ComfyUI's default `uni_pc`)."""
    return _uni_pc(denoise, x, sigmas, carry, callback, steps_before, steps_after, "bh1")


def sample_uni_pc_bh2(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                      noise_sampler: NoiseSampler | None = None, carry: Carry | None = None,
                      callback: StepCallback = None, steps_before: int = 0,
                      steps_after: int = 0) -> tuple[torch.Tensor, Carry]:
    """UniPC with B(h) = e^h - 1 (bh2), recommended by its authors for guided sampling."""
    return _uni_pc(denoise, x, sigmas, carry, callback, steps_before, steps_after, "bh2")
