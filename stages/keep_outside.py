"""intervene `keep_outside`: the unedited latent (the twin) is sampled beside the edited one, and after
every step the edited latent takes the twin's values wherever the intervene's latent mask is exactly 0.

The twin continues exactly as the uninterrupted run would: it starts from the latent and sampler carry
the intervene received, draws the same noise (each image's ancestral draws and Brownian path are a
function of its seed and position, so one draw serves both rows), and makes the same model calls
(same prompts, cfg and model-call count, so the same prompt schedule). Both rows run in one UNet batch
per model call; on CPU the batch-size-dependent layers compute each half on its own (point_rows.py),
so the twin's rows round as the unedited run's do and equal it bit for bit. The sampler walks one
step at a time (splits are exact, samplers/carry.py) so that the replacement happens after each step.

The twin lives in the state (`State.twin`, stored by the cache like the carry) until the schedule
ends. Then the latent outside the mask equals the unedited one, but a decoder does not decode cells
independently: its convolutions carry an edited cell to pixels up to `decoder_reach` away, and its
GroupNorm statistics and mid-block attention span the whole image (on the demo VAE, one changed cell
still moves pixels 60 px away by about 1 level in 255). So the last step also decodes the twin and
keeps its pixels beyond the reach of the mask: there the image equals the unedited render exactly.
Hires and inpaint start from that finished image; they re-noise or composite it on their own terms.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from sdbake.stages.sampler_run import run_sampler
from sdbake.stages.state import Packed
from sdbake.stages.vae import VaeOptions, vae_decode

_CARRY = "carry."


def make_twin(latent: torch.Tensor, latent_mask: torch.Tensor, carry: Packed | None) -> Packed:
    """The twin of a latent about to be edited: the latent itself, the sampler carry it continues with,
    and the latent mask (1, 1, h, w) whose zero cells are kept equal to the twin."""
    tensors = {"latent": latent.float().cpu(), "mask": latent_mask.float().cpu()}
    meta = None
    if carry is not None:
        carry_tensors, meta = carry
        # own copies: the edited carry shares its 0-d entries, and safetensors refuses shared memory
        tensors.update({_CARRY + name: tensor.clone() for name, tensor in carry_tensors.items()})
    return tensors, {"carry": meta}


def widen(twin: Packed, latent_mask: torch.Tensor) -> Packed:
    """A second keep_outside edit: the kept outside is what both masks leave at 0."""
    tensors, meta = twin
    return {**tensors, "mask": torch.maximum(tensors["mask"], latent_mask.float().cpu())}, meta


def _parts(twin: Packed) -> tuple[torch.Tensor, torch.Tensor, Packed | None]:
    tensors, meta = twin
    carry = None
    if meta["carry"] is not None:
        carry = ({name[len(_CARRY):]: t for name, t in tensors.items() if name.startswith(_CARRY)}, meta["carry"])
    return tensors["latent"], tensors["mask"], carry


def _join_carry(edited: Packed, twin: Packed) -> Packed:
    """Both carries as one batch: per-image history (denoised, derivatives) stacked, the 0-d entries
    (sigmas, step sizes: positions in the shared schedule) taken once."""
    (a, meta), (b, _) = edited, twin
    return {name: a[name] if a[name].dim() == 0 else torch.cat([a[name], b[name].to(a[name])]) for name in a}, meta


def _split_carry(carry: Packed, rows: int) -> tuple[Packed, Packed]:
    tensors, meta = carry
    first = {name: t if t.dim() == 0 else t[:rows] for name, t in tensors.items()}
    second = {name: t if t.dim() == 0 else t[rows:] for name, t in tensors.items()}
    return (first, meta), (second, meta)


def _keeping_walk(keep: torch.Tensor, rows: int):
    """A sampler call that takes one step at a time and puts the twin's cells back after each."""
    def walk(sampler, denoise, x, sigmas, *, noise_sampler, carry, callback, steps_before, steps_after):
        both = None if noise_sampler is None else (lambda sigma, sigma_next: torch.cat([noise_sampler(sigma, sigma_next)] * 2))
        steps = len(sigmas) - 1
        for i in range(steps):
            # each one-step slice is told where it sits in the whole schedule (uni_pc's order depends on it)
            x, carry = sampler(denoise, x, sigmas[i:i + 2], noise_sampler=both, carry=carry,
                               callback=None if callback is None else (lambda _, i=i: callback(i)),
                               steps_before=steps_before + i, steps_after=steps_after + steps - 1 - i)
            x = torch.cat([torch.where(keep, x[rows:], x[:rows]), x[rows:]])
        return x, carry
    return walk


def sample_beside_twin(setup, model, x: torch.Tensor, start: int, end: int, g, ctx, *, noise,
                       carry: Packed | None, model_calls: int, twin: Packed):
    """`run_sampler` over the edited rows and the twin's in one batch; returns (x, carry, model calls, twin)."""
    twin_latent, latent_mask, twin_carry = _parts(twin)
    rows = x.shape[0]
    if carry is not None and twin_carry is None:
        raise ValueError("the edited latent has a sampler history but its keep_outside twin has none")
    both_carry = _join_carry(carry, twin_carry) if carry is not None else None
    both_g = dataclasses.replace(g, prompts=g.prompts * 2, negatives=g.negatives * 2,
                                 cfg=g.cfg * 2 if isinstance(g.cfg, list) else g.cfg,
                                 points=[0] * rows + [1] * rows if ctx.device == "cpu" else None)
    sink = ctx.on_preview
    both_ctx = dataclasses.replace(ctx, on_preview=lambda step, images: sink(step, images[:rows]))
    x = torch.cat([x, twin_latent.to(x)])
    keep = latent_mask.to(x.device) == 0
    x, both_carry, model_calls = run_sampler(setup, model, x, start, end, both_g, both_ctx, noise=noise,
                                             carry=both_carry, model_calls=model_calls,
                                             walk=_keeping_walk(keep, rows))
    edited_carry, twin_carry = _split_carry(both_carry, rows) if both_carry is not None else (None, None)
    return x[:rows], edited_carry, model_calls, make_twin(x[rows:], latent_mask, twin_carry)


def decoder_reach(vae) -> int:
    """How far (pixels) a change of one latent cell travels through the decoder's 3x3 convolutions
    (diffusers' AutoencoderKL decoder: conv_in, the mid block's two resnets, then per level
    layers_per_block + 1 resnets of two convs and an upsampler conv, and conv_out): one cell of the
    resolution each conv runs at. The demo VAE: 52 px; SD's: 138 px."""
    config = vae.config
    levels, layers = len(config.block_out_channels), config.layers_per_block
    factor = 2 ** (levels - 1)
    reach = factor * (1 + 2 * 2)
    for level in range(levels):
        scale = factor >> level
        reach += scale * 2 * (layers + 1) + (scale // 2 if level < levels - 1 else 0)
    return reach + 1


def finished_image(model, x: torch.Tensor, twin: Packed, options: VaeOptions, warn) -> torch.Tensor:
    """The decoded image at the end of the schedule: the edited decode within the decoder's reach of the
    mask (dilated in whole latent cells), the unedited decode, bit for bit, everywhere else."""
    twin_latent, latent_mask, _ = _parts(twin)
    edited = vae_decode(model, x, options, warn=warn)[0]
    unedited = vae_decode(model, twin_latent.to(x), options, warn=warn)[0]
    cells = math.ceil(decoder_reach(model.vae) / model.vae_scale_factor)
    near = F.max_pool2d((latent_mask > 0).float(), 2 * cells + 1, stride=1, padding=cells)
    near = F.interpolate(near, scale_factor=model.vae_scale_factor, mode="nearest") > 0
    return torch.where(near, edited, unedited)
