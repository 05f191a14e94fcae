"""intervene's plan: its edits and the files they read (from its schema); the preview path is not in
its key (a hit writes the stored preview wherever the recipe now says)."""
from __future__ import annotations

from sdbake.runner.kinds.common import PlanContext, key_of, render_outputs


def plan(stage, inv, document: dict, ctx: PlanContext) -> None:
    if stage.preview:
        inv.outputs = render_outputs(ctx, stage.preview, "preview", stage, key_of(ctx.prefix_recipe(stage)))
