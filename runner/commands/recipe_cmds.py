"""`sdbake validate`, `canonical` and `schema`: recipe checks that never import torch."""
from __future__ import annotations

import argparse
import json
import sys

from sdbake.runner.commands import add_command, add_overrides, add_recipe_argument, write_text_output

SET_HELP = "override a recipe value before checking, e.g. stages.hires.denoise=0.5 (repeatable)"


def register(subparsers: argparse._SubParsersAction) -> None:
    validate = add_command(
        subparsers, "validate", run_validate, "check recipe files; print every error as file:line:col",
        ["sdbake validate recipes/*.toml", "sdbake validate recipes/   every recipe in a folder",
         "sdbake validate recipes/demo.toml --set defaults.steps=0   would this override be valid?"],
        description="Checks the schema, then everything a run would meet that needs no torch: model, LoRA, image "
                    "and mask files, save templates, colours, upscalers, wildcards, embeddings, sizes and output "
                    "collisions.")
    validate.add_argument("files", nargs="+", metavar="FILE", help="recipe files, or folders of recipe files")
    add_overrides(validate, SET_HELP)
    validate.add_argument("--out", metavar="DIR", help="output root that run would use (default: the recipe's "
                                                       "output_dir, else ./outputs), for output collisions")

    canonical = add_command(
        subparsers, "canonical", run_canonical, "print the normalized recipe (defaults filled, keys sorted)",
        ["sdbake canonical recipes/demo.yaml --format toml",
         "git config diff.sdbake.textconv \"sdbake canonical\"   semantic git diff of recipes"])
    add_recipe_argument(canonical, dest="file", metavar="FILE")
    canonical.add_argument("--format", choices=("toml", "yaml", "json"), default="toml",
                           help="output format (default: toml)")
    add_overrides(canonical, SET_HELP)

    schema = add_command(
        subparsers, "schema", run_schema, "print the recipe JSON Schema (for editors), or write it to a file",
        ["sdbake schema --write            ./sdbake.schema.json, for your editor",
         "sdbake schema --markdown         the field reference (docs/recipes.md)"],
        description="Print the JSON Schema of recipes. Editors' TOML and YAML language servers use it for "
                    "completion, hover and checks: see docs/editors.md.")
    schema.add_argument("--write", nargs="?", const="sdbake.schema.json", metavar="PATH",
                        help="write it to PATH (default ./sdbake.schema.json) instead of printing it")
    schema.add_argument("--markdown", action="store_true", help="the field reference as Markdown instead "
                                                                "(docs/recipes.md is this output)")


def run_validate(args) -> int:
    from pathlib import Path

    from sdbake.runner.preflight import preflight
    from sdbake.schemas.errors import SdbakeError
    from sdbake.schemas.loader import RECIPE_SUFFIXES, load_recipe

    files = []
    for name in args.files:   # a folder stands for the recipes directly in it (`recipes/*` includes folders)
        path = Path(name)
        files += sorted(str(p) for p in path.iterdir() if p.suffix in RECIPE_SUFFIXES) if path.is_dir() else [name]
    failed = 0
    for name in files:
        try:
            loaded = load_recipe(name, args.overrides)
            recipe = loaded.recipe
            preflight(loaded, Path(args.out or recipe.output_dir or "outputs"))
        except SdbakeError as err:
            print(str(err), file=sys.stderr)
            failed += 1
        else:
            print(f"{name}: ok")
    return 1 if failed else 0


def run_canonical(args) -> int:
    from sdbake.runner.sources import load_any
    from sdbake.schemas.canonical import dumps

    loaded = load_any(args.file, args.overrides)
    sys.stdout.write(dumps(loaded.recipe, args.format))
    return 0


def run_schema(args) -> int:
    if args.markdown:
        from sdbake.runner.reference import recipe_reference_markdown
        text = recipe_reference_markdown()
    else:
        from sdbake.schemas.jsonschema import recipe_json_schema
        text = json.dumps(recipe_json_schema(), indent=2, sort_keys=True) + "\n"
    return write_text_output(text, args.write)
    from pathlib import Path

    from sdbake.schemas.errors import OutputError
    try:
        Path(args.write).write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputError(f"cannot write: {err.strerror or err}", file=args.write) from None
    print(args.write)
    return 0
