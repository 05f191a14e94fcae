"""D(x, sigma): the k-diffusion view of a discrete-time UNet, with classifier-free guidance.

The UNet predicts eps (or v) at timestep t; k-diffusion works with the clean estimate
D(x, sigma) = x - sigma * eps(x / sqrt(sigma^2 + 1), t(sigma)) (v: c_skip * x + c_out * v). CFG runs the
unconditional and conditional inputs in one batch; AND sub-prompts add weighted terms:
D = uncond + sum_i w_i * cfg * (cond_i - uncond) (A1111's composable diffusion). SDXL UNets also take
the pooled text embedding and the micro-conditioning numbers (diffusers' added_cond_kwargs).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from sdbake.stages.point_rows import rows_per_point
from sdbake.stages.samplers.stepping import Guided


class Cond(NamedTuple):
    """One encoded text: token embeddings (tokens, dim), and SDXL's pooled embedding (dim,) or None."""
    context: torch.Tensor
    pooled: torch.Tensor | None = None


@dataclass
class GuidedInputs:
    """Per model call: which embeddings each image's uncond and weighted conds use."""
    uncond: list[Cond]                                      # one per image
    conds: list[list[tuple[Cond, float]]]                   # per image: [(embedding, weight), ...]
    # regional prompts: per image, per cond, the (1, h, w) latent cells its term applies to (None: all)
    areas: list[list[torch.Tensor | None]] | None = None


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


def _run_lengths(values: list) -> list[int]:
    sizes: list[int] = []
    for n, value in enumerate(values):
        if n and value == values[n - 1]:
            sizes[-1] += 1
        else:
            sizes.append(1)
    return sizes


class Denoiser:
    """Callable D(x, sigma) for the samplers; counts its calls for A1111's prompt scheduling."""

    def __init__(self, unet, model_sigmas: torch.Tensor, prediction_type: str, cfg: float | list[float],
                 inputs_for_call: Callable[[int], GuidedInputs], model_calls: int = 0,
                 concat: torch.Tensor | None = None,
                 time_ids: tuple[torch.Tensor, torch.Tensor] | None = None,
                 points: list[int] | None = None, with_uncond: bool = False):
        self.unet = unet
        self.unet_dtype = unet.dtype          # diffusers computes .dtype by walking every submodule
        self.log_sigmas = model_sigmas.double().log().to(unet.device)
        self.prediction_type = prediction_type
        self.cfg = cfg                        # one scale, or one per image (points batched together)
        self.points = points                  # batched points: which point each image belongs to
        self.inputs_for_call = inputs_for_call
        self.model_calls = model_calls
        self.concat = concat                  # 9-channel inpainting UNets: (B, 5, h, w) mask + masked image
        self.time_ids = time_ids              # SDXL: micro-conditioning of the (cond, uncond) rows
        # CFG++ samplers step along the unconditional prediction: return Guided(guided, uncond), and
        # compute the uncond rows at cfg 1 too (ComfyUI's disable_cfg1_optimization)
        self.with_uncond = with_uncond

    def _model(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
               concat: torch.Tensor | None, added: dict | None = None) -> torch.Tensor:
        sigma_b = sigma.to(torch.float32).view(-1, 1, 1, 1)
        c_in = 1.0 / (sigma_b ** 2 + 1.0) ** 0.5
        t = sigma_to_timestep(sigma.double(), self.log_sigmas).to(torch.float32)
        dtype = self.unet_dtype
        model_in = x * c_in if concat is None else torch.cat([x * c_in, concat.to(x)], dim=1)
        if added is not None:
            added = {name: value.to(device=x.device, dtype=dtype) for name, value in added.items()}
        out = self.unet(model_in.to(dtype), t.to(dtype), encoder_hidden_states=context.to(dtype),
                        added_cond_kwargs=added, return_dict=False)[0].to(x.dtype)
        if self.prediction_type == "v_prediction":
            c_skip = 1.0 / (sigma_b ** 2 + 1.0)
            c_out = -sigma_b / (sigma_b ** 2 + 1.0) ** 0.5
            return x * c_skip + out * c_out
        return x - out * sigma_b

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor | Guided:
        inputs = self.inputs_for_call(self.model_calls)
        self.model_calls += 1
        batch = x.shape[0]
        sigma = sigma.reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(batch)
        rows_x, rows_sigma, rows_context, rows_image, rows_uncond, layout = [], [], [], [], [], []
        cfgs = self.cfg if isinstance(self.cfg, (list, tuple)) else [self.cfg] * batch
        for i in range(batch):
            areas = inputs.areas[i] if inputs.areas is not None else [None] * len(inputs.conds[i])
            entry = {"uncond": None, "conds": [], "cfg": cfgs[i], "areas": areas}
            # At cfg 1 the guided result is the cond itself (when the AND weights sum to 1 and no term is
            # regional): skip uncond.
            if self.with_uncond or cfgs[i] != 1.0 or sum(weight for _, weight in inputs.conds[i]) != 1.0 or any(
                    area is not None for area in areas):
                entry["uncond"] = len(rows_x)
                rows_x.append(x[i]); rows_sigma.append(sigma[i]); rows_context.append(inputs.uncond[i])
                rows_image.append(i); rows_uncond.append(True)
            for embedding, weight in inputs.conds[i]:
                entry["conds"].append((len(rows_x), weight))
                rows_x.append(x[i]); rows_sigma.append(sigma[i]); rows_context.append(embedding)
                rows_image.append(i); rows_uncond.append(False)
            layout.append(entry)
        concat = self.concat[rows_image] if self.concat is not None else None
        outputs = self._run_rows(torch.stack(rows_x), torch.stack(rows_sigma), rows_context, concat, rows_uncond,
                                 [self.points[i] for i in rows_image] if self.points else None)
        results = []
        for entry in layout:
            if entry["uncond"] is None:
                (row, _), = entry["conds"] if len(entry["conds"]) == 1 else [(None, None)]
                results.append(outputs[row] if row is not None else
                               sum(outputs[r] * w for r, w in entry["conds"]))
                continue
            uncond = outputs[entry["uncond"]]
            guided = uncond.clone()
            for (row, weight), area in zip(entry["conds"], entry["areas"]):
                term = (outputs[row] - uncond) * (weight * entry["cfg"])
                guided = guided + (term if area is None else term * area)
            results.append(guided)
        if self.with_uncond:
            return Guided(torch.stack(results), torch.stack([outputs[entry["uncond"]] for entry in layout]))
        return torch.stack(results)

    def _added(self, conds: list[Cond], uncond_flags: list[bool]) -> dict | None:
        if conds[0].pooled is None:
            return None
        if self.time_ids is None:
            raise ValueError("an SDXL conditioning needs the micro-conditioning time ids")
        time_ids = torch.stack([self.time_ids[1] if flag else self.time_ids[0] for flag in uncond_flags])
        return {"text_embeds": torch.stack([c.pooled for c in conds]), "time_ids": time_ids}

    def _run_rows(self, xs: torch.Tensor, sigmas: torch.Tensor, conds: list[Cond],
                  concat: torch.Tensor | None, uncond_flags: list[bool],
                  row_points: list[int] | None = None) -> list[torch.Tensor]:
        # One batch when every context has the same token length (the usual case); prompts of
        # different chunk counts run as one batch per length.
        lengths = sorted({c.context.shape[0] for c in conds})
        outputs: list[torch.Tensor | None] = [None] * len(conds)
        for length in lengths:
            rows = [i for i, c in enumerate(conds) if c.context.shape[0] == length]
            context = torch.stack([conds[i].context for i in rows])
            added = self._added([conds[i] for i in rows], [uncond_flags[i] for i in rows])
            sizes = _run_lengths([row_points[i] for i in rows]) if row_points else [len(rows)]
            with rows_per_point(self.unet, sizes):
                out = self._model(xs[rows], sigmas[rows], context, concat[rows] if concat is not None else None,
                                  added)
            for j, row in enumerate(rows):
                outputs[row] = out[j]
        return outputs
