"""Step previews: a cheap latent -> RGB picture of the clean estimate every N steps while a sampler runs.

The projection is A1111's "Approx cheap" (modules/sd_vae_approx.py cheap_approximation, used by
sd_samplers_common's live previews): one fixed 4x3 linear map from latent channels to RGB per model
family, then `* 0.5 + 0.5`, clamped to [0, 1]. It needs no weights and costs one small matmul, so a
preview is cheap enough to take at every step. Those matrices describe the SD1 and SDXL VAEs (scale
factor 8); a VAE of another make, such as the demo model's (models/demo, scale factor 4, trained on its
own), maps latents to colours differently (with the SD1 matrix its previews come out in inverted colours),
so for it the same kind of linear map, plus an offset, is fitted once per loaded model from the VAE
itself: the latents of 27 flat colours against those colours, by least squares. Still no extra weights.

Previews never change a stage's output: the wrapper only reads the denoiser's result, so a run with
previews is the same tensor as one without, and `preview_every` stays out of every cache key.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from sdbake.stages.samplers.stepping import Guided

# Rows: latent channels 0-3; columns: R, G, B (A1111 v1.10.1, from the linked huggingface discussion).
SD1_LATENT_RGB = ((0.298, 0.207, 0.208),
                  (0.187, 0.286, 0.173),
                  (-0.158, 0.189, 0.264),
                  (-0.184, -0.271, -0.473))
SDXL_LATENT_RGB = ((0.3448, 0.4168, 0.4395),
                   (-0.1953, -0.0290, 0.0250),
                   (0.1074, 0.0886, -0.0163),
                   (-0.3730, -0.2499, -0.2088))
LATENT_RGB = {"sd1": SD1_LATENT_RGB, "sdxl": SDXL_LATENT_RGB}


# A projection: rgb in [0, 1] = latent cell (4 values) @ matrix (4x3) + offset (3).
Projection = tuple[torch.Tensor, torch.Tensor]


def a1111_projection(family: str) -> Projection:
    """A1111's matrix for the family; its `* 0.5 + 0.5` becomes the scale and the offset."""
    matrix = torch.tensor(LATENT_RGB.get(family, SD1_LATENT_RGB), dtype=torch.float32)
    return matrix * 0.5, torch.full((3,), 0.5)


def fitted_projection(model) -> Projection:
    """The least-squares linear map (plus offset) from this model's latents to colours, from the VAE's
    encodings of the 27 flat colours of {0, 0.5, 1}^3 (one 2x2-cell image each)."""
    from sdbake.stages.vae import VaeOptions, vae_encode
    levels = torch.tensor([0.0, 0.5, 1.0])
    colours = torch.cartesian_prod(levels, levels, levels)                        # (27, 3)
    side = 2 * model.vae_scale_factor
    images = colours[:, :, None, None].expand(-1, -1, side, side).contiguous()
    latents = vae_encode(model, images, VaeOptions()).float().cpu()[:, :4]      # (27, 4, 2, 2)
    cells = latents.permute(0, 2, 3, 1).reshape(-1, 4)
    targets = colours.repeat_interleave(4, dim=0)
    solution = torch.linalg.lstsq(torch.cat([cells, torch.ones(len(cells), 1)], dim=1), targets).solution
    return solution[:4], solution[4]


def projection_for(model) -> Projection:
    """A1111's matrix for the SD1 and SDXL VAEs; a fitted one, kept on the model object, for other VAEs."""
    family = getattr(model, "family", "sd1")
    if getattr(model, "vae_scale_factor", 8) == 8 or getattr(model, "vae", None) is None:
        return a1111_projection(family)
    fitted = getattr(model, "preview_projection", None)
    if fitted is None:
        fitted = fitted_projection(model)
        model.preview_projection = fitted
    return fitted


def latent_to_rgb(latent: torch.Tensor, projection: Projection | None = None) -> torch.Tensor:
    """(B, 4, h, w) latent (scaled, as the samplers see it) -> (B, h, w, 3) uint8, one pixel per latent cell."""
    matrix, offset = projection if projection is not None else a1111_projection("sd1")
    rgb = torch.einsum("bchw,cr->bhwr", latent[:, :4].detach().float().cpu(), matrix) + offset
    return rgb.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def preview_images(latent: torch.Tensor, projection: Projection | None = None, scale: int = 8) -> list:
    """PIL images of a latent batch, enlarged `scale` times (nearest) so a 64x64 render's 8x8 preview is
    seen at the image's own size."""
    from PIL import Image
    pixels = latent_to_rgb(latent, projection).numpy()
    return [Image.fromarray(p, "RGB").resize((p.shape[1] * scale, p.shape[0] * scale), Image.NEAREST)
            for p in pixels]


class StepPreviews:
    """Wraps a denoiser to keep its latest clean estimate D(x, sigma); after every `every`-th step of the
    run, hands `sink(step, images)` a preview of it (step = position in the stage's sigma schedule)."""

    def __init__(self, every: int, sink: Callable[[int, list], None], *, projection: Projection | None,
                 scale: int, start: int):
        self.every, self.sink, self.projection, self.scale, self.start = every, sink, projection, scale, start
        self.denoised: torch.Tensor | None = None

    @classmethod
    def for_run(cls, ctx, model, start: int) -> StepPreviews:
        every = ctx.preview_every or 0
        return cls(every, ctx.on_preview, projection=projection_for(model) if every else None,
                   scale=getattr(model, "vae_scale_factor", 8), start=start)

    def watch(self, denoiser):
        if not self.every:
            return denoiser

        def remembering(x, sigma, *args, **kwargs):
            out = denoiser(x, sigma, *args, **kwargs)
            self.denoised = out.denoised if isinstance(out, Guided) else out    # a CFG++ sampler's: the guided
            return out
        return remembering

    def after_step(self, i: int) -> None:
        if self.every and (i + 1) % self.every == 0 and self.denoised is not None:
            self.sink(self.start + i + 1, preview_images(self.denoised, self.projection, self.scale))
