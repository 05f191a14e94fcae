"""One sampler run over a slice of the schedule, and what it needs: the schedule, the noise source,
the guidance (prompts, cfg) and the guided denoiser. Shared by the sampling stages sample, hires and
inpaint (and intervene, for the clean estimate D(x_k)); the sampler functions are in samplers/.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from sdbake.schemas.names import SAMPLERS as SAMPLER_TABLE
from sdbake.stages import samplers
from sdbake.stages.conditioning import (
    added_time_ids,
    encode_texts,
    guided_inputs,
    negative_schedule,
    pack_memo,
    prompt_schedules,
    unpack_memo,
)
from sdbake.stages.context import StageContext
from sdbake.stages.denoiser import Denoiser
from sdbake.stages.preview import StepPreviews
from sdbake.stages.state import Packed, State
from sdbake.stages.vae import VaeOptions, vae_encode


@dataclass
class SamplingSetup:
    sampler: str
    scheduler: str
    steps: int
    model_sigmas: torch.Tensor          # the model's discrete sigmas (ascending)
    sigmas: torch.Tensor                # the schedule: steps + 1 values, last 0

    def noise_scale(self, start: int, empty_latent: bool) -> torch.Tensor:
        """What the initial noise is multiplied by: sigmas[start] (k-diffusion, and A1111's img2img with any
        sampler), but sqrt(1 + sigma^2) for a txt2img start of A1111's timestep samplers (SamplerInfo
        vp_initial_noise): they start from unit noise in the variance-preserving latent."""
        sigma = self.sigmas[start]
        if empty_latent and SAMPLER_TABLE[self.sampler].vp_initial_noise:
            return (sigma.double() ** 2 + 1).sqrt().to(sigma.dtype)
        return sigma

    def new_noise(self, seeds, shape_chw, device, variations=None) -> samplers.ImageNoise:
        """Fresh per-image generators; the first draw is the initial noise (with each image's A1111
        variation seed / seed resize when `variations` has one: see seed_variations)."""
        return samplers.ImageNoise(list(seeds), tuple(shape_chw), device=device, variations=variations)

    def restore_noise(self, packed: Packed, device) -> samplers.ImageNoise:
        tensors, meta = packed
        noise = samplers.ImageNoise(meta["seeds"], meta["shape"], device=device)
        noise.set_state(tensors["generators"])
        return noise

    def pack_noise(self, noise) -> Packed:
        return {"generators": noise.get_state()}, {"seeds": noise.seeds, "shape": list(noise.shape_chw)}


def seed_variations(state: State, vae_scale_factor: int) -> list[samplers.SeedVariation] | None:
    """Each image's A1111 variation seed and seed resize (noise size in latent cells), or None."""
    if not state.subseeds and not state.seed_resize_from:
        return None
    resize = None
    if state.seed_resize_from:
        width, height = state.seed_resize_from
        resize = (height // vae_scale_factor, width // vae_scale_factor)
    subseeds = state.subseeds or (None,) * len(state.seeds)
    return [samplers.SeedVariation(subseed, state.subseed_strength if subseed is not None else 0.0, resize)
            for subseed in subseeds]


@dataclass(frozen=True)
class Guidance:
    """What steers the denoiser: each image's prompts, the encode stage's memo, cfg, and the
    prompt schedule's length (A1111 schedules prompts over the base steps; hires adds its own)."""
    prompts: list[str]
    negatives: list[str]
    embeddings: Packed | None
    clip_skip: int
    cfg: float | list[float]              # one scale, or one per image (points batched together)
    schedule_steps: int
    hires_steps: int | None = None
    micro: object = None                 # the stage's SDXL micro-conditioning table (None: A1111's defaults)
    points: list[int] | None = None       # batched points: the point of each image (rows round as alone)
    regions: tuple = ()                   # regional prompts (stages/regions.py RegionCond)


def guidance(state: State, ctx: StageContext, cfg: float, schedule_steps: int,
             hires_steps: int | None = None, micro=None, regions: tuple = ()) -> Guidance:
    """The stage's own prompts when it sets them (resolved by the runner), else the input state's."""
    return Guidance(list(ctx.prompts or state.prompts), list(ctx.negatives or state.negatives),
                    state.embeddings, state.clip_skip, cfg, schedule_steps, hires_steps, micro, regions=regions)


def model_sigmas_of(model) -> torch.Tensor:
    config = model.scheduler_config
    return samplers.model_sigmas(beta_start=config.get("beta_start", 0.00085),
                                 beta_end=config.get("beta_end", 0.012),
                                 beta_schedule=config.get("beta_schedule", "scaled_linear"),
                                 num_train_timesteps=config.get("num_train_timesteps", 1000),
                                 zero_terminal_snr=bool(config.get("rescale_betas_zero_snr", False)))


def sampling_setup(model, sampler: str, scheduler: str, steps: int) -> SamplingSetup:
    """The stage's schedule from its model's sigmas (and family: align_your_steps has levels per family)."""
    msigmas = model_sigmas_of(model)
    return SamplingSetup(sampler, scheduler, steps, msigmas,
                         samplers.sampler_sigmas(sampler, scheduler, msigmas, steps, family=model.family))


def schedule_length(sampler: str, steps: int) -> int:
    # A1111 schedules prompts over model calls: second-order samplers make two per step.
    return steps * 2 if samplers.is_second_order(sampler) else steps


def prepare_embeddings(model, prompts, negatives, embeddings, clip_skip, steps, hires_steps,
                       embedding_files: dict | None = None):
    memo = unpack_memo(embeddings, model, clip_skip)
    texts = set()
    for prompt in prompts:
        for _, entries in prompt_schedules(prompt, steps, hires_steps):
            texts.update(text for _, text in entries)
    for negative in negatives:
        texts.update(text for _, text in negative_schedule(negative, steps, hires_steps))
    return encode_texts(model, sorted(texts), clip_skip, memo, embedding_files)


def _all_prompts(g: Guidance) -> list[str]:
    return list(g.prompts) + [region.prompt for region in g.regions]


def with_memo(g: Guidance, model, sampler: str, ctx: StageContext) -> Guidance:
    """`g` with every text its prompt schedules use in this model's memo: encode knows only the texts
    it can see without a step count, and only its own model's encoders (a refiner stage after an SDXL
    base encodes with its own), so a sampling stage encodes the rest and its output state keeps them."""
    memo = prepare_embeddings(model, _all_prompts(g), g.negatives, g.embeddings, g.clip_skip,
                              schedule_length(sampler, g.schedule_steps),
                              schedule_length(sampler, g.hires_steps) if g.hires_steps else None,
                              ctx.extra.get("embedding_files"))
    return dataclasses.replace(g, embeddings=pack_memo(memo, model, g.clip_skip, g.embeddings))


def whole_image_conditioning(model, x: torch.Tensor, options: VaeOptions) -> torch.Tensor:
    """What an inpainting UNet sees outside inpainting, as A1111's txt2img: the whole image masked
    (a mask of ones) over a uniformly gray masked image."""
    factor = model.vae_scale_factor
    gray = torch.full((x.shape[0], 3, x.shape[-2] * factor, x.shape[-1] * factor), 0.5)
    masked = vae_encode(model, gray, options).to(x)
    return torch.cat([torch.ones_like(masked[:, :1]), masked], dim=1)


def guided_denoiser(model, sampler: str, g: Guidance, x: torch.Tensor, ctx: StageContext, *,
                    model_calls: int = 0, concat: torch.Tensor | None = None, with_uncond: bool = False) -> Denoiser:
    """D(x, sigma) with cfg and the conditioning A1111 picks per model call (second-order samplers
    make two calls per step); the scheduled texts the memo lacks (for this model's encoders) are
    encoded here. SDXL UNets also get the pooled text and the micro-conditioning numbers. The cfg is
    the sampler's (A1111's DDIM CFG++ divides it by 12.5); `with_uncond`: the denoiser returns
    Guided(denoised, uncond), for the CFG++ samplers."""
    if concat is None and getattr(model, "in_channels", 4) == 9:
        concat = whole_image_conditioning(model, x, VaeOptions(fp32=ctx.vae_fp32))
    call_steps = schedule_length(sampler, g.schedule_steps)
    call_hires = schedule_length(sampler, g.hires_steps) if g.hires_steps else None
    memo = prepare_embeddings(model, _all_prompts(g), g.negatives, g.embeddings, g.clip_skip, call_steps,
                              call_hires, ctx.extra.get("embedding_files"))
    regions = [(r.prompt, r.weight, r.latent_area(x.shape[-2], x.shape[-1], x.device)) for r in g.regions]
    inputs = guided_inputs(g.prompts, g.negatives, call_steps, call_hires, memo, x.device, model.unet.dtype,
                           zero_empty_negative=model.family == "sdxl", regions=regions)
    factor = model.vae_scale_factor
    time_ids = added_time_ids(model, x.shape[-1] * factor, x.shape[-2] * factor, g.micro)
    return Denoiser(model.unet, model_sigmas_of(model), model.prediction_type, sampler_cfg(sampler, g.cfg), inputs,
                    model_calls=model_calls, concat=concat, time_ids=time_ids, points=g.points,
                    with_uncond=with_uncond)


def sampler_cfg(sampler: str, cfg: float | list[float]) -> float | list[float]:
    """The guidance scale the sampler's denoiser applies: the recipe's, times A1111's multiplier for it
    (1 but for DDIM CFG++: 1 / 12.5, so its usual CFG 5-12 means CFG++'s 0.4-1)."""
    scale = SAMPLER_TABLE[sampler].cfg_scale
    if scale == 1.0:
        return cfg
    return [value * scale for value in cfg] if isinstance(cfg, (list, tuple)) else cfg * scale


def run_sampler(setup: SamplingSetup, model, x: torch.Tensor, start: int, end: int, g: Guidance, ctx: StageContext,
                *, noise, carry: Packed | None = None, model_calls: int = 0, wrap=None, concat=None, walk=None):
    """Walk sigmas[start:end+1] of the setup's schedule; returns (x, carry, model calls so far).
    `walk(sampler, denoiser, x, sigmas, **kwargs)` replaces the one sampler call (keep_outside steps)."""
    denoiser = guided_denoiser(model, setup.sampler, g, x, ctx, model_calls=model_calls, concat=concat,
                               with_uncond=SAMPLER_TABLE[setup.sampler].needs_uncond)
    sigmas = setup.sigmas
    sampler = samplers.get_sampler(setup.sampler)
    noise_sampler = samplers.noise_sampler_for(setup.sampler, noise, sigmas)
    carry_obj = samplers.carry_from_tensors(*carry) if carry is not None else None
    total = end - start
    previews = StepPreviews.for_run(ctx, model, start)
    model_fn = previews.watch(wrap(denoiser) if wrap is not None else denoiser)
    walk = walk or (lambda function, *args, **kwargs: function(*args, **kwargs))
    x, carry_obj = walk(sampler, model_fn, x, sigmas[start:end + 1].to(x.device), noise_sampler=noise_sampler,
                        carry=carry_obj, callback=lambda i: (ctx.progress(i + 1, total), previews.after_step(i)),
                        steps_before=start, steps_after=len(sigmas) - 1 - end)
    packed = samplers.carry_to_tensors(carry_obj) if carry_obj is not None else None
    return x, packed, denoiser.model_calls
