"""intervene: edit the clean estimate mid-sampling and continue, with nothing changed outside the mask.

At step k, D(x_k) is the clean estimate and (x_k - D(x_k)) / sigma_k the leftover noise. Decoding
x_k itself would corrupt it (the VAE was trained on clean images), so the ops apply to the decoded
clean estimate, which is encoded back, and the run continues from x_k + mask * (encoded - D(x_k)):
the same as encoded + sigma_k * leftover, but exact where the mask is 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from sdbake.schemas.errors import StateError
from sdbake.schemas.stages import ImageOp, InterveneParams
from sdbake.stages.context import StageContext
from sdbake.stages.edit_ops import apply_op
from sdbake.stages.images import draw_rects, mask_to_tensor, pil_to_tensor, read_mask, to_pil
from sdbake.stages.keep_outside import make_twin, widen
from sdbake.stages.output.metadata import encode_image
from sdbake.stages.sampler_run import Guidance, guided_denoiser
from sdbake.stages.state import State
from sdbake.stages.vae import vae_decode, vae_encode, vae_options


def clean_estimate(state: State, model, cfg: float, ctx: StageContext, micro=None) -> torch.Tensor:
    """D(x_k) with the conditioning of the current model call; the call is not counted."""
    x = state.latent.to(ctx.device)
    if state.position is None:
        return x
    # The prompts the latent was sampled with (not this stage's): the run continues with them.
    g = Guidance(list(state.prompts), list(state.negatives), state.embeddings, state.clip_skip, cfg,
                 state.position.steps, micro=micro)
    denoiser = guided_denoiser(model, state.sampler or "euler", g, x, ctx, model_calls=state.model_calls)
    sigma = torch.full((x.shape[0],), state.position.sigma, device=ctx.device, dtype=x.dtype)
    return denoiser(x, sigma)


def region_mask(p: InterveneParams, ctx: StageContext, size: tuple[int, int]) -> Image.Image | None:
    if p.mask:
        mask = read_mask(ctx.files["mask"], size, ctx.warn)
    elif p.rect:
        mask = draw_rects(Image.new("L", size, 0), [p.rect])
    else:
        return None
    if p.feather:
        mask = mask.filter(ImageFilter.GaussianBlur(p.feather))
    if mask.getbbox() is None:
        ctx.warn("the intervene mask is all black: nothing can change")
    return mask


def run(p: InterveneParams, state: State, ctx: StageContext) -> State:
    if state.latent is None:
        raise StateError("there is no latent to edit: intervene must follow an encode or sample stage",
                         stage=ctx.stage_id)
    if p.keep_outside and state.position is None:
        raise StateError("keep_outside keeps the later sampling steps, but this latent has none left: put the "
                         "intervene between sample stages (a first one with end < steps)", stage=ctx.stage_id)
    ops = ([ImageOp(image=p.image)] if p.image else []) + list(p.ops)
    # a stage-level `image` is op 0, so the ops' files shift by one
    offset = 1 if p.image else 0
    files = {"ops.0.image": ctx.files["image"]} if p.image else {}
    for name, path in ctx.files.items():
        if name.startswith("ops."):
            _, number, field = name.split(".", 2)
            files[f"ops.{int(number) + offset}.{field}"] = path
    unchanged = state.evolve(provenance=state.provenance + ({"stage": ctx.stage_id, "type": "intervene", "ops": []},))
    if not ops and not ctx.outputs:
        return unchanged
    model = ctx.model(p.model or state.model)
    x = state.latent.to(ctx.device)
    denoised = clean_estimate(state, model, p.cfg, ctx, p.sdxl)
    options = vae_options(state, ctx)
    pixels, _ = vae_decode(model, denoised, options, warn=ctx.warn)
    pictures = to_pil(pixels)
    after, before = _preview_paths(p, ctx.outputs, len(pictures))
    _write_previews(ctx, before, pictures, state, "before the ops")
    if not ops:
        _write_previews(ctx, after, pictures, state, "")
        return unchanged
    edited = []
    for picture in pictures:
        for index, op in enumerate(ops):
            picture = apply_op(picture, op, files, index, ctx.warn)
        edited.append(pil_to_tensor(picture))
    encoded = vae_encode(model, torch.stack(edited), options).to(x.dtype)
    mask = region_mask(p, ctx, (state.width, state.height))
    if mask is None:
        change = encoded - denoised
    else:
        # Area-average to latent cells: a cell is 0 only where its whole pixel block is 0, so cells outside
        # the mask keep x_k bit for bit (and, with keep_outside, follow the unedited run).
        latent_mask = F.interpolate(mask_to_tensor(mask)[None], size=x.shape[-2:], mode="area").to(x)
        change = latent_mask * (encoded - denoised)
    # x_k' = x_k + change leaves the leftover noise alone, so the clean estimate moves by `change` too
    if after:
        _write_previews(ctx, after, to_pil(vae_decode(model, denoised + change, options, warn=ctx.warn)[0]),
                        state, "")
    record = {"stage": ctx.stage_id, "type": "intervene", "ops": [op.op for op in ops],
              "step": state.position.step if state.position else None}
    twin = state.twin
    if p.keep_outside:
        twin = make_twin(x, latent_mask, state.carry) if twin is None else widen(twin, latent_mask)
        record["keep_outside"] = True
    elif twin is not None:
        ctx.warn("this intervene has no keep_outside: the outside kept by an earlier one follows this edit "
                 "from here on, not the unedited run")
        twin = None
    return state.evolve(latent=(x + change).float().cpu(), image=None, twin=twin,
                        latent_kind=state.latent_kind if state.position else "sampled",
                        provenance=state.provenance + (record,))


def _preview_paths(p: InterveneParams, outputs: list[str], images: int) -> tuple[list[str], list[str]]:
    """The stage's outputs are the `preview` paths (one per image), then the `preview_before` ones."""
    after = outputs[:images] if p.preview else []
    return after, outputs[len(after):] if p.preview_before else []


def _write_previews(ctx: StageContext, paths: list[str], pictures, state: State, when: str) -> None:
    step = state.position.step if state.position else "end"
    for relative, picture in zip(paths, pictures):
        ctx.emit_file(relative, encode_image(picture, "png", f"intervene preview at step {step}"
                                             + (f", {when}" if when else ""), None))
