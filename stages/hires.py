"""hires: upscale, then re-denoise the last `steps` sigmas of a longer schedule (A1111 "hires fix").

With H steps and denoise d, A1111 builds a schedule of total = int(H / min(d, 0.999)) steps and
walks its last H sigmas, adding fresh noise from each image's seed at the first of them.
"""
from __future__ import annotations

import torch
from sdbake.schemas.errors import StateError
from sdbake.schemas.names import SAMPLERS, SCHEDULERS
from sdbake.schemas.stages import LATENT_UPSCALERS, HiresParams
from sdbake.stages.context import StageContext
from sdbake.stages.images import pil_to_tensor, to_pil
from sdbake.stages.regions import provenance_fields, stage_regions
from sdbake.stages.sampler_run import guidance, run_sampler, sampling_setup, seed_variations, with_memo
from sdbake.stages.state import State
from sdbake.stages.token_merging import token_merging
from sdbake.stages.upscale import A1111_NAMES, upscale_latent, upscale_pil, upscale_with_model
from sdbake.stages.vae import vae_decode, vae_encode, vae_options


def hires_total_steps(steps: int, denoise: float) -> int:
    return int(steps / min(denoise, 0.999))


def upscale(p: HiresParams, state: State, model, width: int, height: int, ctx: StageContext) -> torch.Tensor:
    if p.upscaler in LATENT_UPSCALERS:
        return upscale_latent(state.latent.to(ctx.device), width, height, p.upscaler, model.vae_scale_factor)
    options = vae_options(state, ctx, tiled=p.tiled)
    images = state.image if state.image is not None else vae_decode(
        model, state.latent.to(ctx.device), options, warn=ctx.warn)[0]
    if "upscaler" in ctx.files:
        pictures = upscale_with_model(ctx.upscaler_model(ctx.files["upscaler"]), images, width, height)
    else:
        pictures = [upscale_pil(picture, width, height, p.upscaler) for picture in to_pil(images)]
    pixels = torch.stack([pil_to_tensor(picture) for picture in pictures])
    return vae_encode(model, pixels, options).to(ctx.device)


def run(p: HiresParams, state: State, ctx: StageContext) -> State:
    if state.latent is None or state.position is not None:
        raise StateError("hires needs a finished image: put it after a sample stage that ran to the end",
                         stage=ctx.stage_id)
    model = ctx.model(p.model)
    width, height = p.target_size(state.width, state.height)
    latent = upscale(p, state, model, width, height, ctx)
    total = hires_total_steps(p.steps, p.denoise)
    setup = sampling_setup(model, p.sampler, p.scheduler, total)
    start = total - p.steps
    # as A1111's hires pass: a new ImageRNG at the new size, with the same variation seed and seed resize
    noise = setup.new_noise(state.seeds, latent.shape[1:], ctx.device, seed_variations(state, model.vae_scale_factor))
    x = latent + noise.draw().to(ctx.device) * setup.sigmas[start]
    base_steps = next((r["Steps"] for r in reversed(state.provenance) if r["type"] == "sample"), p.steps)
    g = with_memo(guidance(state, ctx, p.cfg, base_steps, hires_steps=p.steps, micro=p.sdxl,
                           regions=stage_regions(p, ctx, (width, height))), model, p.sampler, ctx)
    with token_merging(model.unet, p.tome_ratio, p.tome_max_downsample, ctx.stage_id):
        x, _, _ = run_sampler(setup, model, x, start, total, g, ctx, noise=noise)
    record = {"stage": ctx.stage_id, "type": "hires", "Hires upscale": p.scale if not (p.width or p.height)
              else None, "Hires resize": f"{width}x{height}" if (p.width or p.height) else None,
              "Hires steps": p.steps, "Hires upscaler": A1111_NAMES.get(p.upscaler, p.upscaler),
              "Denoising strength": p.denoise, "Token merging ratio hr": p.tome_ratio,
              **provenance_fields(p, g.prompts, (width, height), p.steps)}
    # As A1111 writes a hires image: the first pass's size and prompts, and the hires pass's own prompts,
    # sampler, schedule and CFG only where they differ from the first pass's (labels, not ids).
    record["first_pass"] = {"width": state.width, "height": state.height, "prompts": list(state.prompts),
                            "negatives": list(state.negatives)}
    if g.prompts and tuple(g.prompts) != tuple(state.prompts):
        record["Hires prompt"] = g.prompts[0]
    if g.negatives and tuple(g.negatives) != tuple(state.negatives):
        record["Hires negative prompt"] = g.negatives[0]
    base = next((r for r in reversed(state.provenance) if r["type"] == "sample"), {})
    if p.sampler != base.get("sampler", p.sampler):
        record["Hires sampler"] = SAMPLERS[p.sampler].label
    if p.scheduler != base.get("scheduler", p.scheduler):
        record["Hires schedule type"] = SCHEDULERS[p.scheduler]
    if p.cfg != base.get("CFG scale", p.cfg):
        record["Hires CFG Scale"] = p.cfg
    return state.evolve(latent=x.float().cpu(), latent_kind="sampled", position=None, carry=None, noise=None,
                        sampler=None, model_calls=0, image=None, width=width, height=height, model=p.model,
                        vae_tiled=p.tiled,
                        prompts=tuple(g.prompts), negatives=tuple(g.negatives), embeddings=g.embeddings,
                        provenance=state.provenance + ({k: v for k, v in record.items() if v is not None},))
