"""`sdbake export RECIPE --to comfyui`: the recipe as a ComfyUI workflow (docs/interop.md)."""
from __future__ import annotations

import argparse
import json
import sys

from sdbake.runner.commands import add_command, add_overrides, add_recipe_argument, write_text_output


def register(subparsers: argparse._SubParsersAction) -> None:
    export = add_command(
        subparsers, "export", run_export, "write a recipe as a ComfyUI API-format workflow",
        ["sdbake export recipes/txt2img.toml --to comfyui -o txt2img.json",
         "sdbake export recipes/demo.toml --to comfyui --strict   fail if anything is left out"],
        description="Writes a ComfyUI workflow (API format, core nodes only) that renders the recipe's settings. "
                    "Each setting no ComfyUI core node expresses is a warning on stderr naming its stage; exit 0, "
                    "or 1 with --strict (then nothing is written).")
    add_recipe_argument(export)
    export.add_argument("--to", choices=("comfyui",), required=True, help="the target format")
    export.add_argument("-o", "--output", metavar="FILE", help="write the workflow here (default: stdout)")
    export.add_argument("--strict", action="store_true", help="exit 1 and write nothing when a setting is left out")
    add_overrides(export)
    export.add_argument("--out", metavar="DIR", help="output root the save paths are rendered for (default: the "
                                                     "recipe's output_dir, else ./outputs)")


def run_export(args) -> int:
    from sdbake.runner.interop.comfy_export import export_comfyui, save_outputs
    from sdbake.runner.interop.comfy_nodes import validate_workflow
    from sdbake.runner.planning import PlanOptions, pick_random_seed, plan_recipe
    from sdbake.runner.sources import load_any
    from sdbake.schemas.errors import SdbakeError

    loaded = load_any(args.recipe, args.overrides)
    try:    # the plan renders the save paths; without the model files they fall back to recipe/stage names
        outputs = save_outputs(plan_recipe(loaded, PlanOptions(output_root=args.out)))
    except SdbakeError as err:
        print(f"warning: save paths not rendered ({err.message}): SaveImage prefixes are <name>/<stage id>",
              file=sys.stderr)
        pick_random_seed(loaded)
        outputs = None
    result = export_comfyui(loaded, outputs)
    problems = validate_workflow(result.workflow)
    if problems:        # the exporter's own mistake, not the user's: show it with its traceback
        raise RuntimeError("exported workflow fails ComfyUI's node definitions: " + "; ".join(problems))
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.strict and result.warnings:
        print(f"{len(result.warnings)} setting(s) have no ComfyUI core equivalent (--strict): nothing written",
              file=sys.stderr)
        return 1
    text = json.dumps(result.workflow, indent=2, ensure_ascii=False) + "\n"
    return write_text_output(text, args.output)
