"""Step previews: a cheap latent -> RGB picture of the clean estimate every N steps while a sampler runs.

The projection is A1111's "Approx cheap" (modules/sd_vae_approx.py cheap_approximation, used by
sd_samplers_common's live previews): one fixed 4x3 linear map from latent channels to RGB per model
family, then `* 0.5 + 0.5`, clamped to [0, 1]. It needs no weights and costs one small matmul, so a
preview is cheap enough to take at every step. The demo model (models/demo) has 4 latent channels too
and uses the SD1 matrix: its VAE was trained on its own, so the colours are a rough guide, not the
decoded image (tests/test_preview.py measures how well they follow it).

Previews never change a stage's output: the wrapper only reads the denoiser's result, so a run with
previews is the same tensor as one without, and `preview_every` stays out of every cache key.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

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


def latent_to_rgb(latent: torch.Tensor, family: str = "sd1") -> torch.Tensor:
    """(B, 4, h, w) latent (scaled, as the samplers see it) -> (B, h, w, 3) uint8, one pixel per latent cell."""
    coefficients = torch.tensor(LATENT_RGB.get(family, SD1_LATENT_RGB), dtype=torch.float32)
    rgb = torch.einsum("bchw,cr->bhwr", latent[:, :4].detach().float().cpu(), coefficients)
    return (rgb * 0.5 + 0.5).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def preview_images(latent: torch.Tensor, family: str = "sd1", scale: int = 8) -> list:
    """PIL images of a latent batch, enlarged `scale` times (nearest) so a 64x64 render's 8x8 preview is
    seen at the image's own size."""
    from PIL import Image
    pixels = latent_to_rgb(latent, family).numpy()
    return [Image.fromarray(p, "RGB").resize((p.shape[1] * scale, p.shape[0] * scale), Image.NEAREST)
            for p in pixels]


class StepPreviews:
    """Wraps a denoiser to keep its latest clean estimate D(x, sigma); after every `every`-th step of the
    run, hands `sink(step, images)` a preview of it (step = position in the stage's sigma schedule)."""

    def __init__(self, every: int, sink: Callable[[int, list], None], *, family: str, scale: int, start: int):
        self.every, self.sink, self.family, self.scale, self.start = every, sink, family, scale, start
        self.denoised: torch.Tensor | None = None

    @classmethod
    def for_run(cls, ctx, model, start: int) -> StepPreviews:
        return cls(ctx.preview_every or 0, ctx.on_preview, family=getattr(model, "family", "sd1"),
                   scale=getattr(model, "vae_scale_factor", 8), start=start)

    def watch(self, denoiser):
        if not self.every:
            return denoiser

        def remembering(x, sigma, *args, **kwargs):
            self.denoised = denoiser(x, sigma, *args, **kwargs)
            return self.denoised
        return remembering

    def after_step(self, i: int) -> None:
        if self.every and (i + 1) % self.every == 0 and self.denoised is not None:
            self.sink(self.start + i + 1, preview_images(self.denoised, self.family, self.scale))
