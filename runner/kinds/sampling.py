"""The plan of a stage that runs a sampler (sample, inpaint; hires adds its upscaler): its own params,
its prompt overrides resolved per image, and its model, LoRAs and numerics (added by the planner)."""
from __future__ import annotations

from sdbake.runner.kinds.common import PlanContext
from sdbake.runner.kinds.prompts import plan_prompts
from sdbake.schemas.errors import StateError


def plan(stage, inv, document: dict, ctx: PlanContext) -> None:
    plan_prompts(stage.prompt, stage.negative, ctx.carried["seeds"], inv, document, ctx)
    _token_merging(stage, document, ctx)
    ctx.carried.update(steps=stage.steps, cfg=stage.cfg, sampler=stage.sampler, scheduler=stage.scheduler,
                       model=inv.model)


def _token_merging(stage, document: dict, ctx: PlanContext) -> None:
    """tome_ratio changes the arithmetic, not what is computed: it keys the stage as part of its numerics
    (with the tomesd settings and version), and a stage without it keeps the key it always had."""
    from sdbake.stages import token_merging
    document["params"].pop("tome_ratio", None)
    max_downsample = document["params"].pop("tome_max_downsample", None)
    ratio = getattr(stage, "tome_ratio", None)
    if not ratio:
        return
    if token_merging.tomesd_version() is None:
        raise ctx.error(("tome_ratio",), token_merging.missing_message(), StateError)
    document["numerics"] = {**document["numerics"], "token_merging": token_merging.settings(ratio, max_downsample)}
