"""Which stage executions may share one sampling call (DESIGN.md section 12), decided from the graph.

Sample executions that differ only in seed, prompt, negative and cfg, with the same model, LoRAs,
size, sampler, schedule and step range, starting from an empty latent and walking the whole
schedule, run as one batch; each image keeps its own noise generator and its own cache entry.
"""
from __future__ import annotations

from sdbake.runner.graph import StageGraph
from sdbake.runner.plan import key_of

PER_IMAGE = {"cfg", "seed", "prompt", "negative", "id"}


def batch_signature(graph: StageGraph, key: str) -> str | None:
    """A key shared by every execution this one may be batched with; None when it runs alone."""
    inv = graph.invocation(key)
    stage = inv.stage
    if stage.type != "sample" or stage.start != 0 or stage.end != stage.steps:
        return None
    source_key = graph.nodes[key].depends_on
    if source_key is None:
        return None
    source = graph.invocation(source_key).stage
    if source.type != "encode" or source.image:
        return None
    document = {name: value for name, value in inv.inputs.items()
                if name not in ("input", "prompts", "negatives", "params")}
    document["params"] = {name: value for name, value in inv.inputs["params"].items() if name not in PER_IMAGE}
    document["latent"] = [source.width, source.height, source.clip_skip]
    return key_of(document)


def group_ready(graph: StageGraph, ready: list[str], max_batch: int) -> list[list[str]]:
    """The ready keys in groups to hand to one worker call: batchable ones together (at most
    `max_batch` per group), every other key alone; the order of first appearance is kept."""
    groups: list[list[str]] = []
    open_group: dict[str, list[str]] = {}
    for key in ready:
        signature = batch_signature(graph, key) if max_batch > 1 else None
        if signature is None:
            groups.append([key])
            continue
        group = open_group.get(signature)
        if group is None or len(group) >= max_batch:
            group = open_group[signature] = []
            groups.append(group)
        group.append(key)
    return groups
