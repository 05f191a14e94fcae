"""inpaint: masked img2img, optionally looped (A1111 loopback); pixels outside the mask stay exact.

Loop i uses seed + i and a denoise between the first and last value along a curve. Only masked
latent cells are noised and re-denoised: before each model call the unmasked cells are set to the
original noised to that sigma, and after it to the original (ComfyUI's latent noise mask). The
decoded result is composited over the input in pixel space with the feathered mask, so where the
mask is 0 the pixels are the input's, exactly.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from sdbake.schemas.errors import StateError
from sdbake.schemas.stages import InpaintParams
from sdbake.stages.colorfix import color_correct
from sdbake.stages.context import StageContext
from sdbake.stages.images import draw_rects, mask_to_tensor, pil_to_tensor, read_mask, to_pil
from sdbake.stages.regions import provenance_fields, stage_regions
from sdbake.stages.sampler_run import (
    Guidance,
    guidance,
    run_sampler,
    sampling_setup,
    seed_variations,
    with_memo,
)
from sdbake.stages.samplers.stepping import Guided
from sdbake.stages.state import State
from sdbake.stages.vae import VaeOptions, vae_decode, vae_encode, vae_options

CURVES = {"linear": lambda p: p, "aggressive": lambda p: math.sin(p * math.pi / 2),
          "lazy": lambda p: 1 - math.cos(p * math.pi / 2)}


def loop_denoise(denoise: float | list[float], loops: int, curve: str) -> list[float]:
    """A1111 loopback: d_i = first + (last - first) * curve(i / (loops - 1))."""
    first, last = (denoise, denoise) if not isinstance(denoise, list) else denoise
    if loops == 1:
        return [first]
    return [first + (last - first) * CURVES[curve](i / (loops - 1)) for i in range(loops)]


def pixel_mask(p: InpaintParams, ctx: StageContext, size: tuple[int, int]) -> Image.Image:
    mask = read_mask(ctx.files["mask"], size, ctx.warn) if p.mask else Image.new("L", size, 0)
    return draw_rects(mask, p.rects)


def crop_box(mask: Image.Image, padding: int, aspect: float) -> tuple[int, int, int, int]:
    """The mask's bounding box plus padding, grown to the processing aspect ratio, inside the image."""
    width, height = mask.size
    left, top, right, bottom = mask.getbbox()
    left, top = max(left - padding, 0), max(top - padding, 0)
    right, bottom = min(right + padding, width), min(bottom + padding, height)
    box_w, box_h = right - left, bottom - top
    if box_w / box_h < aspect:
        grow = min(int(box_h * aspect) - box_w, width - box_w)
        left = max(0, min(left - grow // 2, width - box_w - grow))
        right = left + box_w + grow
    else:
        grow = min(int(box_w / aspect) - box_h, height - box_h)
        top = max(0, min(top - grow // 2, height - box_h - grow))
        bottom = top + box_h + grow
    return left, top, right, bottom


class LatentNoiseMask:
    """Wraps D(x, sigma) so only masked latent cells change (mask 1 = repaint)."""

    def __init__(self, denoiser, original: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor):
        self.denoiser, self.original, self.noise, self.mask = denoiser, original, noise, mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor | Guided:
        noised = self.original + self.noise * sigma.reshape(-1, 1, 1, 1)
        x = x * self.mask + noised * (1 - self.mask)
        out = self.denoiser(x, sigma)
        if isinstance(out, Guided):
            # as ComfyUI's KSamplerX0Inpaint: a CFG++ sampler's unconditional estimate is the model's own
            return out._replace(denoised=out.denoised * self.mask + self.original * (1 - self.mask))
        return out * self.mask + self.original * (1 - self.mask)


def inpaint_once(p: InpaintParams, model, pixels: torch.Tensor, feathered: torch.Tensor, seeds, denoise: float,
                 g: Guidance, options: VaeOptions, ctx: StageContext, variations=None) -> torch.Tensor:
    """One masked img2img pass over (B, 3, H, W) pixels; returns decoded pixels (not composited)."""
    original = vae_encode(model, pixels, options).to(ctx.device)
    latent_mask = F.interpolate(feathered[None].expand(len(seeds), -1, -1, -1), size=original.shape[-2:],
                                mode="area").to(original)
    setup = sampling_setup(model, p.sampler, p.scheduler, p.steps)
    # A1111 img2img: t_enc = int(min(denoise, 0.999) * steps) steps from sigmas[steps - t_enc - 1].
    start = p.steps - int(min(denoise, 0.999) * p.steps) - 1
    noise = setup.new_noise(seeds, original.shape[1:], ctx.device, variations)
    initial = noise.draw().to(ctx.device)
    x = original + initial * setup.sigmas[start]
    concat = None
    if model.in_channels == 9:       # inpainting checkpoints see the mask and the masked image too
        masked_pixels = pixels * (feathered[None] < 0.5)
        concat = torch.cat([(latent_mask > 0.5).to(original),
                            vae_encode(model, masked_pixels, options).to(ctx.device)], 1)
    x, _, _ = run_sampler(setup, model, x, start, p.steps, g, ctx, noise=noise, concat=concat,
                          wrap=lambda d: LatentNoiseMask(d, original, initial, latent_mask))
    return vae_decode(model, x, options, warn=ctx.warn)[0]


def run(p: InpaintParams, state: State, ctx: StageContext) -> State:
    if state.latent is None and state.image is None:
        raise StateError("there is no image to inpaint: put inpaint after a sample stage", stage=ctx.stage_id)
    if state.position is not None:
        raise StateError("inpaint needs a finished image, but the latent still holds noise", stage=ctx.stage_id)
    model = ctx.model(p.model)
    size = (state.width, state.height)
    mask = pixel_mask(p, ctx, size)
    if mask.getbbox() is None:
        ctx.warn("the inpaint mask is all black: nothing to repaint, the image passes through unchanged")
        return state.evolve(provenance=state.provenance + ({"stage": ctx.stage_id, "type": "inpaint",
                                                            "loops": 0},))
    feathered_pil = mask.filter(ImageFilter.GaussianBlur(p.blur)) if p.blur else mask
    feathered = mask_to_tensor(feathered_pil)
    options = vae_options(state, ctx)
    pixels = state.image if state.image is not None else vae_decode(model, state.latent.to(ctx.device), options,
                                                                    warn=ctx.warn)[0]
    original = pixels.clone()
    g = with_memo(guidance(state, ctx, p.cfg, p.steps, micro=p.sdxl, regions=stage_regions(p, ctx, size)), model,
                  p.sampler, ctx)
    box = crop_box(feathered_pil, p.padding, size[0] / size[1]) if p.area == "masked" else None
    schedule = loop_denoise(p.denoise, p.loops, p.curve)
    for loop, denoise in enumerate(schedule):
        seeds = [seed + loop for seed in state.seeds]
        if box is None:
            result = inpaint_once(p, model, pixels, feathered, seeds, denoise, g, options, ctx,
                                  seed_variations(state, model.vae_scale_factor))
        else:
            result = _inpaint_crop(p, model, pixels, feathered_pil, box, seeds, denoise, g, options, state, ctx)
        if p.color_correction:       # as A1111: on the 8-bit pictures, towards the stage's input image
            result = torch.stack([pil_to_tensor(Image.fromarray(color_correct(np.asarray(r), np.asarray(o))))
                                  for r, o in zip(to_pil(result), to_pil(original))])
        # pixel composite: where the feathered mask is 0 the input pixels stay, exactly
        pixels = torch.where(feathered > 0, pixels * (1 - feathered) + result * feathered, pixels)
    latent = vae_encode(model, pixels, options).float().cpu()
    record = {"stage": ctx.stage_id, "type": "inpaint", "Mask blur": p.blur, "loops": p.loops,
              "Denoising strength": schedule[0] if p.loops == 1 else None,
              "Loopback denoise": ",".join(f"{d:g}" for d in schedule) if p.loops > 1 else None,
              "Color correction": True if p.color_correction else None,
              "Inpaint area": "Only masked" if p.area == "masked" else None,
              "Masked area padding": p.padding if p.area == "masked" else None,
              # what the infotext's Steps, Sampler and CFG scale say when no sample stage came before
              "Steps": p.steps, "sampler": p.sampler, "scheduler": p.scheduler, "CFG scale": p.cfg,
              **provenance_fields(p, g.prompts, size, p.steps)}
    return state.evolve(latent=latent, latent_kind="sampled", position=None, carry=None, noise=None,
                        sampler=None, model_calls=0, image=pixels.float().cpu(), image_from_latent=False,
                        model=p.model, embeddings=g.embeddings,
                        provenance=state.provenance + ({k: v for k, v in record.items()
                                                                       if v is not None},))


def _inpaint_crop(p, model, pixels, feathered_pil, box, seeds, denoise, g, options, state, ctx):
    """area = "masked": inpaint the mask's box at the stage's full resolution, then put it back."""
    left, top, right, bottom = box
    width, height = state.width, state.height
    crops = [to_pil(pixels[i:i + 1])[0].crop(box).resize((width, height), Image.LANCZOS)
             for i in range(pixels.shape[0])]
    crop_mask = mask_to_tensor(feathered_pil.crop(box).resize((width, height), Image.BILINEAR))
    crop_pixels = torch.stack([pil_to_tensor(c) for c in crops])
    g = dataclasses.replace(g, regions=tuple(r.cropped(box, (width, height)) for r in g.regions))
    done = inpaint_once(p, model, crop_pixels, crop_mask, seeds, denoise, g, options, ctx,
                        seed_variations(state, model.vae_scale_factor))
    result = pixels.clone()
    for i, picture in enumerate(to_pil(done)):
        back = pil_to_tensor(picture.resize((right - left, bottom - top), Image.LANCZOS))
        result[i, :, top:bottom, left:right] = back
    return result
