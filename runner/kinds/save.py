"""save's plan: its output paths, and what each image embeds: the recipe prefix that made it (not the
whole file, so an edit after this save leaves it a hit), the image's seed and resolved prompts, and
the content hashes of every file the prefix read, so `run IMAGE` can find them again anywhere."""
from __future__ import annotations

from pathlib import PurePosixPath

from sdbake.runner.kinds.common import PlanContext, key_of, render_outputs


def plan(stage, inv, document: dict, ctx: PlanContext) -> None:
    recipe = ctx.prefix_recipe(stage)
    inv.outputs = render_outputs(ctx, stage.path, "path", stage, key_of(recipe))
    # A pattern's names carry a sequence number (and maybe the time) that no byte depends on: its key holds
    # the pattern (in params) and the files' formats, so the next run is a hit writing the next numbers.
    document["outputs"] = [PurePosixPath(o).suffix for o in inv.outputs] if stage.pattern else inv.outputs
    inputs = prefix_inputs(ctx.prefix)
    seeds = ctx.carried["seeds"] or [0]
    # the whole batch's prompts: its images are rendered together again (a batch's size changes the
    # last bits of the VAE's and UNet's batched kernels on CPU, so each image is re-rendered in its batch)
    resolved = _resolved(ctx.prefix)
    inv.embedded = [{"recipe": recipe, "seed": seed, "batch_index": index, **inputs, "resolved": resolved}
                    for index, seed in enumerate(seeds)]
    document["recipe"] = key_of({"images": inv.embedded})


def _resolved(prefix: list) -> dict:
    """Per stage id, the prompts and negatives of the batch's images (wildcards expanded)."""
    found = {}
    for inv in prefix:
        texts = {name: list(getattr(inv, name)) for name in ("prompts", "negatives") if getattr(inv, name)}
        if texts:
            found[inv.id] = texts
    return found


def prefix_inputs(prefix: list) -> dict:
    """The content hashes of every file the prefix read, and its stage keys."""
    files, wildcards, embeddings, models, loras = {}, {}, {}, {}, {}
    for inv in prefix:
        if inv.inputs.get("files"):
            files[inv.id] = dict(inv.inputs["files"])
        wildcards.update(inv.inputs.get("wildcards", {}))
        embeddings.update(inv.inputs.get("embeddings", {}))
        if inv.model is not None:
            models[inv.model.entry_name] = inv.model.identity()
        if inv.loras:
            # a tag's name too: `run IMAGE` finds the file the tag loaded by this hash (runner/sources.py)
            loras[inv.id] = [{"name": l.path.name, "sha256": l.sha256, "weight": l.weight,
                              **({"tag": l.tag} if l.tag is not None else {})} for l in inv.loras]
    return {"files": files, "wildcards": wildcards, "embeddings": embeddings, "models": models, "loras": loras,
            "stage_keys": {inv.id: inv.key for inv in prefix}}
