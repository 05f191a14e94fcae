"""What the sampling stages share: the schedule, the noise source, and one sampler run over a slice.

Used by sample, hires, inpaint (and intervene for the clean estimate D(x_k)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from sdbake.stages import samplers
from sdbake.stages.conditioning import (
    encode_texts,
    guided_inputs,
    negative_schedule,
    prompt_schedules,
    unpack_memo,
)
from sdbake.stages.context import StageContext
from sdbake.stages.denoiser import Denoiser
from sdbake.stages.state import Packed


@dataclass
class SamplingSetup:
    sampler: str
    scheduler: str
    steps: int
    model_sigmas: torch.Tensor          # the model's discrete sigmas (ascending)
    sigmas: torch.Tensor                # the schedule: steps + 1 values, last 0

    def new_noise(self, seeds, shape_chw, device) -> samplers.ImageNoise:
        """Fresh per-image generators; the first draw is the initial noise."""
        return samplers.ImageNoise(list(seeds), tuple(shape_chw), device=device)

    def restore_noise(self, packed: Packed, device) -> samplers.ImageNoise:
        tensors, meta = packed
        noise = samplers.ImageNoise(meta["seeds"], meta["shape"], device=device)
        noise.set_state(tensors["generators"])
        return noise

    def pack_noise(self, noise) -> Packed:
        return {"generators": noise.get_state()}, {"seeds": noise.seeds, "shape": list(noise.shape_chw)}


def model_sigmas_of(model) -> torch.Tensor:
    config = model.scheduler_config
    return samplers.model_sigmas(beta_start=config.get("beta_start", 0.00085),
                                 beta_end=config.get("beta_end", 0.012),
                                 beta_schedule=config.get("beta_schedule", "scaled_linear"),
                                 num_train_timesteps=config.get("num_train_timesteps", 1000))


def sampling_setup(model, sampler: str, scheduler: str, steps: int) -> SamplingSetup:
    msigmas = model_sigmas_of(model)
    return SamplingSetup(sampler, scheduler, steps, msigmas,
                         samplers.sampler_sigmas(sampler, scheduler, msigmas, steps))


def schedule_length(sampler: str, steps: int) -> int:
    # A1111 schedules prompts over model calls: second-order samplers make two per step.
    return steps * 2 if samplers.is_second_order(sampler) else steps


def prepare_embeddings(model, prompts, negatives, embeddings, clip_skip, steps, hires_steps,
                       embedding_files: dict | None = None):
    memo = unpack_memo(embeddings, clip_skip)
    texts = set()
    for prompt in prompts:
        for _, entries in prompt_schedules(prompt, steps, hires_steps):
            texts.update(text for _, text in entries)
    for negative in negatives:
        texts.update(text for _, text in negative_schedule(negative, steps, hires_steps))
    return encode_texts(model, sorted(texts), clip_skip, memo, embedding_files)


def whole_image_conditioning(model, x: torch.Tensor) -> torch.Tensor:
    """What an inpainting UNet sees outside inpainting, as A1111's txt2img: the whole image masked
    (a mask of ones) over a uniformly gray masked image."""
    from sdbake.stages.images import vae_encode
    factor = model.vae_scale_factor
    gray = torch.full((x.shape[0], 3, x.shape[-2] * factor, x.shape[-1] * factor), 0.5)
    masked = vae_encode(model.vae, gray).to(x)
    return torch.cat([torch.ones_like(masked[:, :1]), masked], dim=1)


def run_sampler(setup: SamplingSetup, model, x: torch.Tensor, start: int, end: int, *, cfg: float,
                prompts: list[str], negatives: list[str], embeddings: Packed | None, clip_skip: int,
                noise, carry: Packed | None, model_calls: int, schedule_steps: int, hires_steps: int | None,
                ctx: StageContext, sigmas: torch.Tensor | None = None, wrap=None, concat=None):
    """Walk sigmas[start:end+1] (of `sigmas`, default the setup's schedule); returns (x, carry, calls)."""
    sigmas = setup.sigmas if sigmas is None else sigmas
    if concat is None and getattr(model, "in_channels", 4) == 9:
        concat = whole_image_conditioning(model, x)
    call_steps = schedule_length(setup.sampler, schedule_steps)
    call_hires = schedule_length(setup.sampler, hires_steps) if hires_steps else None
    memo = prepare_embeddings(model, prompts, negatives, embeddings, clip_skip, call_steps, call_hires,
                              ctx.extra.get("embedding_files"))
    dtype = model.unet.dtype
    denoiser = Denoiser(model.unet, setup.model_sigmas, model.prediction_type, cfg,
                        guided_inputs(prompts, negatives, call_steps, call_hires, memo, x.device, dtype),
                        model_calls=model_calls, concat=concat)
    sampler = samplers.get_sampler(setup.sampler)
    noise_sampler = samplers.noise_sampler_for(setup.sampler, noise, sigmas)
    carry_obj = samplers.carry_from_tensors(*carry) if carry is not None else None
    total = end - start
    model_fn = wrap(denoiser) if wrap is not None else denoiser
    x, carry_obj = sampler(model_fn, x, sigmas[start:end + 1].to(x.device), noise_sampler=noise_sampler,
                           carry=carry_obj, callback=lambda i: ctx.progress(i + 1, total))
    packed = samplers.carry_to_tensors(carry_obj) if carry_obj is not None else None
    return x, packed, denoiser.model_calls
