"""sample: walk steps start..end of the schedule; a split continues exactly where the last one ended."""
from __future__ import annotations

import torch
from sdbake.schemas.errors import StateError
from sdbake.schemas.stages import SampleParams
from sdbake.stages.conditioning import pack_memo, unpack_memo
from sdbake.stages.context import StageContext
from sdbake.stages.keep_outside import finished_image, sample_beside_twin
from sdbake.stages.regions import provenance_fields, stage_regions
from sdbake.stages.sampler_run import (
    Guidance,
    guidance,
    run_sampler,
    sampling_setup,
    seed_variations,
    with_memo,
)
from sdbake.stages.state import Position, State
from sdbake.stages.token_merging import token_merging
from sdbake.stages.vae import vae_options


def run(p: SampleParams, state: State, ctx: StageContext) -> State:
    if state.latent is None:
        raise StateError("there is no latent to sample: add an `encode` stage before it", stage=ctx.stage_id)
    model = ctx.model(p.model)
    setup = sampling_setup(model, p.sampler, p.scheduler, p.steps)
    if state.position is not None:
        at = state.position
        if (at.step, at.steps, at.scheduler) != (p.start, p.steps, p.scheduler):
            raise StateError(f"the latent is at step {at.step} of a {at.steps}-step {at.scheduler} schedule, but "
                             f"this stage starts at step {p.start} of a {p.steps}-step {p.scheduler} schedule",
                             stage=ctx.stage_id)
        x = state.latent.to(ctx.device)
        noise = setup.restore_noise(state.noise, ctx.device)
        carry = state.carry if state.sampler == p.sampler else None
        if state.carry is not None and carry is None:
            ctx.warn(f"sampler changes from {state.sampler} to {p.sampler}: its history starts afresh")
        model_calls = state.model_calls
    else:
        if p.start > 0 and state.latent_kind == "empty":
            raise StateError(f"starts at step {p.start} but the latent is empty: only a stage that ended at "
                             f"step {p.start}, or an init image, can be continued", stage=ctx.stage_id)
        noise = setup.new_noise(state.seeds, state.latent.shape[1:], ctx.device,
                                seed_variations(state, model.vae_scale_factor))
        initial = noise.draw().to(ctx.device)
        # A1111: txt2img starts from noise * sigmas[0]; img2img adds noise * sigmas[start] to the image.
        empty = state.latent_kind == "empty"
        base = torch.zeros_like(initial) if empty else state.latent.to(ctx.device)
        x = base + initial * setup.noise_scale(p.start, empty)
        carry, model_calls = None, 0
    regions = stage_regions(p, ctx, (state.width, state.height))
    g = with_memo(guidance(state, ctx, p.cfg, p.steps, micro=p.sdxl, regions=regions), model, p.sampler, ctx)
    twin = None
    with token_merging(model.unet, p.tome_ratio, p.tome_max_downsample, ctx.stage_id):
        if state.twin is not None:       # an intervene with keep_outside: the unedited latent runs beside
            x, carry, model_calls, twin = sample_beside_twin(setup, model, x, p.start, p.end, g, ctx,
                                                             noise=noise, carry=carry, model_calls=model_calls,
                                                             twin=state.twin)
        else:
            x, carry, model_calls = run_sampler(setup, model, x, p.start, p.end, g, ctx, noise=noise, carry=carry,
                                                model_calls=model_calls)
    image = None
    if twin is not None and p.end == p.steps:    # the unedited pixels beyond the decoder's reach of the mask
        image = finished_image(model, x, twin, vae_options(state, ctx), ctx.warn)
    return _result(p, state, ctx, x, carry, model_calls, setup, noise, g, twin, image)


def _result(p: SampleParams, state: State, ctx: StageContext, x, carry, model_calls, setup, noise,
            g: Guidance, twin=None, image=None) -> State:
    finished = p.end == p.steps
    record = {"stage": ctx.stage_id, "type": "sample", "Steps": p.steps, "sampler": p.sampler,
              "scheduler": p.scheduler, "CFG scale": p.cfg, "start": p.start, "end": p.end,
              **provenance_fields(p, g.prompts, (state.width, state.height), p.end)}
    if p.tome_ratio:
        record["Token merging ratio"] = p.tome_ratio
    if state.latent_kind == "image" and state.position is None:
        record["Denoising strength"] = state.img2img_denoise
    if state.position is not None and state.model is not None and state.model != p.model:
        # A model switch mid-schedule is A1111's refiner: it records the model and where it took over.
        info = ctx.model_info
        record["Refiner"] = f"{info.get('model_name')} [{info.get('model_hash')}]"
        record["Refiner switch at"] = round(p.start / p.steps, 4)
    return state.evolve(
        latent=x.float().cpu(), latent_kind="sampled" if finished else "noisy",
        position=None if finished else Position(p.steps, p.scheduler, p.end, float(setup.sigmas[p.end])),
        sampler=None if finished else p.sampler, carry=None if finished else carry,
        noise=None if finished else setup.pack_noise(noise), model_calls=0 if finished else model_calls,
        twin=None if finished else twin,         # at the end the outside already equals the twin's
        image=image, image_from_latent=False, model=p.model, prompts=tuple(g.prompts), negatives=tuple(g.negatives),
        embeddings=g.embeddings,
        provenance=state.provenance + (record,))


def batchable(p: SampleParams, state: State) -> bool:
    """Whether this execution may join a batch: a whole schedule from an empty latent (no history,
    no leftover noise to split between the images afterwards)."""
    return state.position is None and state.latent_kind == "empty" and p.start == 0 and p.end == p.steps


def _batch_shape(p: SampleParams, state: State) -> tuple:
    """What every member of a batch must share: all params but the per-image ones, and the latent's
    shape and text encoding."""
    params = p.model_dump(exclude={"id", "cfg", "seed", "prompt", "negative"})
    return params, tuple(state.latent.shape[1:]), state.clip_skip, state.model


def run_batch(params: list[SampleParams], states: list[State], contexts: list[StageContext]) -> list[State]:
    """Several executions that differ only in seeds, prompts and cfg, as one sampler call.

    Each image draws from its own generator (seeded with its own seed), is guided with its own
    point's cfg, and on CPU the size-dependent layers run per point (stages/point_rows.py), so every
    result equals its unbatched run bit for bit; the caller stores each as its own cache entry."""
    p, ctx = params[0], contexts[0]
    shared = _batch_shape(p, states[0])
    if any(not batchable(q, state) or _batch_shape(q, state) != shared for q, state in zip(params, states)):
        raise StateError("these sample executions differ in more than seeds, prompts and cfg: they cannot "
                         "share a batch", stage=ctx.stage_id)
    model = ctx.model(p.model)
    setup = sampling_setup(model, p.sampler, p.scheduler, p.steps)
    rows = [len(state.seeds) for state in states]
    per_state = [seed_variations(state, model.vae_scale_factor) or [None] * len(state.seeds) for state in states]
    noise = setup.new_noise([seed for state in states for seed in state.seeds], states[0].latent.shape[1:],
                            ctx.device, [variation for variations in per_state for variation in variations])
    initial = noise.draw().to(ctx.device)
    x = torch.zeros_like(initial) + initial * setup.noise_scale(p.start, True)
    own = [with_memo(guidance(state, c, q.cfg, q.steps, micro=q.sdxl,
                              regions=stage_regions(q, c, (state.width, state.height))), model, q.sampler, c)
           for q, state, c in zip(params, states, contexts)]
    memo: dict = {}
    for state in states:                  # every point's texts, for this model's encoders
        memo.update(unpack_memo(state.embeddings, model, state.clip_skip))
    g = Guidance([t for one in own for t in one.prompts], [t for one in own for t in one.negatives],
                 pack_memo(memo, model, states[0].clip_skip), states[0].clip_skip,
                 [one.cfg for one, count in zip(own, rows) for _ in range(count)], p.steps, micro=own[0].micro,
                 points=[n for n, count in enumerate(rows) for _ in range(count)] if ctx.device == "cpu" else None,
                 regions=own[0].regions)
    with token_merging(model.unet, p.tome_ratio, p.tome_max_downsample, ctx.stage_id):
        x, _carry, model_calls = run_sampler(setup, model, x, p.start, p.end, g, ctx, noise=noise)
    offsets = [sum(rows[:n]) for n in range(len(rows) + 1)]
    return [_result(q, state, c, x[offsets[n]:offsets[n + 1]], None, model_calls, setup, noise, own[n])
            for n, (q, state, c) in enumerate(zip(params, states, contexts))]
