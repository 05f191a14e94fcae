"""The plan of a stage that runs a sampler (sample, inpaint; hires adds its upscaler): its own params,
its prompt overrides resolved per image, and its model, LoRAs and numerics (added by the planner)."""
from __future__ import annotations

from sdbake.runner.kinds.common import PlanContext
from sdbake.runner.kinds.prompts import plan_prompts


def plan(stage, inv, document: dict, ctx: PlanContext) -> None:
    plan_prompts(stage.prompt, stage.negative, ctx.carried["seeds"], inv, document, ctx)
    ctx.carried.update(steps=stage.steps, cfg=stage.cfg, sampler=stage.sampler, scheduler=stage.scheduler,
                       model=inv.model)
