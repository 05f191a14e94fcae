"""hires's plan: a sampling stage whose output size changes, and which may read an upscaler model file."""
from __future__ import annotations

from sdbake.runner.kinds import sampling
from sdbake.runner.kinds.common import PlanContext
from sdbake.runner.models.hashing import sha256_file
from sdbake.schemas.errors import SdbakeError
from sdbake.schemas.stages import LATENT_UPSCALERS, PIXEL_UPSCALERS


def plan(stage, inv, document: dict, ctx: PlanContext) -> None:
    sampling.plan(stage, inv, document, ctx)
    carried = ctx.carried
    carried["width"], carried["height"] = stage.target_size(carried["width"], carried["height"])
    if stage.upscaler not in LATENT_UPSCALERS + PIXEL_UPSCALERS:
        from sdbake.runner.models.search import resolve_model_file, upscaler_file_name
        try:
            name = upscaler_file_name(stage.upscaler, ctx.loaded.folder)
            path = resolve_model_file(name, "upscalers", ctx.loaded.folder)
        except SdbakeError as err:
            raise ctx.error(("upscaler",), err.message, type(err)) from None
        inv.files["upscaler"] = path
        document["files"]["upscaler"] = sha256_file(path)
