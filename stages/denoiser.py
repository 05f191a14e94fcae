"""D(x, sigma): the k-diffusion view of a discrete-time UNet, with classifier-free guidance.

The UNet predicts eps (or v) at timestep t; k-diffusion works with the clean estimate
D(x, sigma) = x - sigma * eps(x / sqrt(sigma^2 + 1), t(sigma)) (v: c_skip * x + c_out * v). CFG runs the
unconditional and conditional inputs in one batch; AND sub-prompts add weighted terms:
D = uncond + sum_i w_i * cfg * (cond_i - uncond) (A1111's composable diffusion).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class GuidedInputs:
    """Per model call: which embeddings each image's uncond and weighted conds use."""
    uncond: list[torch.Tensor]                              # one (tokens, dim) per image
    conds: list[list[tuple[torch.Tensor, float]]]           # per image: [(embedding, weight), ...]


def sigma_to_timestep(sigma: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """Fractional timestep by interpolating log sigma between the model's discrete sigmas (k-diffusion)."""
    log_sigma = sigma.log()
    dists = log_sigma - log_sigmas[:, None]
    low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = ((low - log_sigma) / (low - high)).clamp(0, 1)
    t = (1 - w) * low_idx + w * high_idx
    return t.view(sigma.shape)


class Denoiser:
    """Callable D(x, sigma) for the samplers; counts its calls for A1111's prompt scheduling."""

    def __init__(self, unet, model_sigmas: torch.Tensor, prediction_type: str, cfg: float,
                 inputs_for_call: Callable[[int], GuidedInputs], model_calls: int = 0,
                 concat: torch.Tensor | None = None):
        self.unet = unet
        self.unet_dtype = unet.dtype          # diffusers computes .dtype by walking every submodule
        self.log_sigmas = model_sigmas.double().log().to(unet.device)
        self.prediction_type = prediction_type
        self.cfg = cfg
        self.inputs_for_call = inputs_for_call
        self.model_calls = model_calls
        self.concat = concat                  # 9-channel inpainting UNets: (B, 5, h, w) mask + masked image

    def _model(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
               concat: torch.Tensor | None) -> torch.Tensor:
        sigma_b = sigma.to(torch.float32).view(-1, 1, 1, 1)
        c_in = 1.0 / (sigma_b ** 2 + 1.0) ** 0.5
        t = sigma_to_timestep(sigma.double(), self.log_sigmas).to(torch.float32)
        dtype = self.unet_dtype
        model_in = x * c_in if concat is None else torch.cat([x * c_in, concat.to(x)], dim=1)
        out = self.unet(model_in.to(dtype), t.to(dtype), encoder_hidden_states=context.to(dtype),
                        return_dict=False)[0].to(x.dtype)
        if self.prediction_type == "v_prediction":
            c_skip = 1.0 / (sigma_b ** 2 + 1.0)
            c_out = -sigma_b / (sigma_b ** 2 + 1.0) ** 0.5
            return x * c_skip + out * c_out
        return x - out * sigma_b

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        inputs = self.inputs_for_call(self.model_calls)
        self.model_calls += 1
        batch = x.shape[0]
        sigma = sigma.reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(batch)
        rows_x, rows_sigma, rows_context, rows_image, layout = [], [], [], [], []
        for i in range(batch):
            entry = {"uncond": None, "conds": []}
            # At cfg 1 the guided result is the cond itself (when the AND weights sum to 1): skip uncond.
            if self.cfg != 1.0 or sum(weight for _, weight in inputs.conds[i]) != 1.0:
                entry["uncond"] = len(rows_x)
                rows_x.append(x[i]); rows_sigma.append(sigma[i]); rows_context.append(inputs.uncond[i])
                rows_image.append(i)
            for embedding, weight in inputs.conds[i]:
                entry["conds"].append((len(rows_x), weight))
                rows_x.append(x[i]); rows_sigma.append(sigma[i]); rows_context.append(embedding)
                rows_image.append(i)
            layout.append(entry)
        concat = self.concat[rows_image] if self.concat is not None else None
        outputs = self._run_rows(torch.stack(rows_x), torch.stack(rows_sigma), rows_context, concat)
        results = []
        for entry in layout:
            if entry["uncond"] is None:
                (row, _), = entry["conds"] if len(entry["conds"]) == 1 else [(None, None)]
                results.append(outputs[row] if row is not None else
                               sum(outputs[r] * w for r, w in entry["conds"]))
                continue
            uncond = outputs[entry["uncond"]]
            guided = uncond.clone()
            for row, weight in entry["conds"]:
                guided = guided + (outputs[row] - uncond) * (weight * self.cfg)
            results.append(guided)
        return torch.stack(results)

    def _run_rows(self, xs: torch.Tensor, sigmas: torch.Tensor, contexts: list[torch.Tensor],
                  concat: torch.Tensor | None) -> list[torch.Tensor]:
        # One batch when every context has the same token length (the usual case); prompts of
        # different chunk counts run as one batch per length.
        lengths = sorted({c.shape[0] for c in contexts})
        outputs: list[torch.Tensor | None] = [None] * len(contexts)
        for length in lengths:
            rows = [i for i, c in enumerate(contexts) if c.shape[0] == length]
            context = torch.stack([contexts[i] for i in rows])
            out = self._model(xs[rows], sigmas[rows], context, concat[rows] if concat is not None else None)
            for j, row in enumerate(rows):
                outputs[row] = out[j]
        return outputs
