"""intervene's plan: its edits and the files they read (from its schema). Which previews it writes is in
its key (a hit must hold their bytes); their paths are not (a hit writes them wherever the recipe now says)."""
from __future__ import annotations

from sdbake.runner.kinds.common import PlanContext, key_of, render_outputs

PREVIEWS = ("preview", "preview_before")


def plan(stage, inv, document: dict, ctx: PlanContext) -> None:
    wanted = [name for name in PREVIEWS if getattr(stage, name)]
    if not wanted:
        return                       # no previews: the key of an intervene without them is unchanged
    # "after-ops": the `preview` file shows the edited clean estimate (it showed the one before the ops)
    document["previews"] = {"files": wanted, "preview": "after-ops"}
    recipe_hash = key_of(ctx.prefix_recipe(stage))
    inv.outputs = [path for name in wanted
                   for path in render_outputs(ctx, getattr(stage, name), name, stage, recipe_hash)]
