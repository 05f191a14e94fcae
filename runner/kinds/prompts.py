"""Prompt fields in a plan: templates resolved per image, and the wildcard files they read."""
from __future__ import annotations

from sdbake.runner.kinds.common import PlanContext, resolve_prompts, wildcard_files
from sdbake.runner.models.hashing import sha256_file


def plan_prompts(prompt: str | None, negative: str | None, seeds: list[int], inv, document: dict,
                 ctx: PlanContext) -> None:
    """Resolve the prompt and negative a stage sets (None: it uses its input's) into its key document.
    A recipe from an image brings its resolved prompts: those are used, and no wildcard file is read."""
    pinned = ctx.loaded.resolved.get(inv.id)
    if pinned is not None:
        inv.prompts, inv.negatives = pinned.get("prompts", []), pinned.get("negatives", [])
        document.update({name: getattr(inv, name) for name in ("prompts", "negatives") if getattr(inv, name)})
        return
    if prompt is not None:
        inv.prompts = resolve_prompts(prompt, seeds, ctx.loaded)
        document["prompts"] = inv.prompts
    if negative is not None:
        inv.negatives = resolve_prompts(negative, seeds, ctx.loaded)
        document["negatives"] = inv.negatives
    # editing a wildcard file re-runs what used it
    inv.wildcards = wildcard_files([t for t in (prompt, negative) if t is not None], ctx.loaded)
    if inv.wildcards:
        document["wildcards"] = {name: sha256_file(path) for name, path in sorted(inv.wildcards.items())}
