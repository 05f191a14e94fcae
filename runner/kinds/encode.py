"""encode's plan: keyed by its prompts (resolved per image), model, seeds, size, clip skip, init image
and the wildcard files and embeddings its prompts read. Never by later stages: the sampling stages
encode any scheduled text its memo lacks."""
from __future__ import annotations

from sdbake.runner.kinds.common import PlanContext, batch_job
from sdbake.runner.kinds.prompts import plan_prompts


def plan(stage, inv, document: dict, ctx: PlanContext) -> None:
    seeds = stage.image_seeds()
    plan_prompts(stage.prompt, stage.negative, seeds, inv, document, ctx)
    ctx.carried.update(prompts=inv.prompts, negatives=inv.negatives, seeds=seeds, width=stage.width,
                       height=stage.height, model=inv.model, job=batch_job(ctx.loaded, stage))
