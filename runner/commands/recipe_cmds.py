"""`sdbake validate`, `canonical` and `schema`: recipe checks that never import torch."""
from __future__ import annotations

import argparse
import json
import sys

SET_HELP = "override a recipe value before checking, e.g. stages.hires.denoise=0.5 (repeatable)"


def register(subparsers: argparse._SubParsersAction) -> None:
    validate = subparsers.add_parser(
        "validate", help="check recipe files; print every error as file:line:col",
        description="Checks the schema, then everything a run would meet that needs no torch: model, LoRA, "
                    "image and mask files, save templates, colours, upscalers, wildcards, embeddings, sizes "
                    "and output collisions.",
        epilog="examples:\n  sdbake validate recipes/*.toml\n  sdbake validate recipes/   every recipe in a folder\n"
               "  sdbake validate recipes/demo.toml --set defaults.steps=0   would this override be valid?")
    validate.add_argument("files", nargs="+", metavar="FILE", help="recipe files, or folders of recipe files")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help=SET_HELP)
    validate.add_argument("--out", metavar="DIR", help="output root that run would use (default: the recipe's "
                                                       "output_dir, else ./outputs), for output collisions")
    validate.set_defaults(func=run_validate)

    canonical = subparsers.add_parser(
        "canonical", help="print the normalized recipe (defaults filled, keys sorted)",
        epilog="examples:\n  sdbake canonical recipes/demo.yaml --format toml\n"
               "  git config diff.sdbake.textconv \"sdbake canonical\"   semantic git diff of recipes")
    canonical.add_argument("file", metavar="FILE", help="a recipe file, or an image made by sdbake")
    canonical.add_argument("--format", choices=("toml", "yaml", "json"), default="toml",
                           help="output format (default: toml)")
    canonical.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help=SET_HELP)
    canonical.set_defaults(func=run_canonical)

    schema = subparsers.add_parser("schema", help="print the recipe JSON Schema (for editors), or write it to a file",
                                   description="Print the JSON Schema of recipes. Editors' TOML and YAML language "
                                               "servers use it for completion, hover and checks: see docs/editors.md.",
                                   epilog="examples:\n  sdbake schema --write            ./sdbake.schema.json, for your "
                                          "editor\n  sdbake schema --markdown         the field reference (docs/recipes.md)",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    schema.add_argument("--write", nargs="?", const="sdbake.schema.json", metavar="PATH",
                        help="write it to PATH (default ./sdbake.schema.json) instead of printing it")
    schema.add_argument("--markdown", action="store_true", help="the field reference as Markdown instead "
                                                                "(docs/recipes.md is this output)")
    schema.set_defaults(func=run_schema)


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
    if args.write is None:
        sys.stdout.write(text)
        return 0
    from pathlib import Path

    from sdbake.schemas.errors import OutputError
    try:
        Path(args.write).write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputError(f"cannot write: {err.strerror or err}", file=args.write) from None
    print(args.write)
    return 0
