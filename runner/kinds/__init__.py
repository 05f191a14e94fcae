"""The stage kinds the runner knows: for each, how its plan (key document, files, prompts) is built and
which module runs it. Adding a kind: its schema in schemas/stages.py, its plan module here, its run
module in stages/, and one line in KINDS.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sdbake.runner.kinds import encode, hires, intervene, sampling, save


@dataclass(frozen=True)
class Kind:
    plan: Callable          # plan(stage, inv, document, ctx): fill the key document and the invocation
    run_module: str         # the module whose run(params, state, ctx) executes the stage
    passes_state_through: bool = False   # its output state is its input's (the cache chains that key)


KINDS: dict[str, Kind] = {
    "encode": Kind(encode.plan, "sdbake.stages.encode"),
    "sample": Kind(sampling.plan, "sdbake.stages.sample"),
    "intervene": Kind(intervene.plan, "sdbake.stages.intervene"),
    "hires": Kind(hires.plan, "sdbake.stages.hires"),
    "inpaint": Kind(sampling.plan, "sdbake.stages.inpaint"),
    "save": Kind(save.plan, "sdbake.stages.save", passes_state_through=True),
}
