"""`sdbake validate`, `canonical` and `schema`: recipe checks that never import torch."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    validate = subparsers.add_parser("validate", help="check recipe files; print every error as file:line:col")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    validate.set_defaults(func=run_validate)

    canonical = subparsers.add_parser("canonical", help="print the normalized recipe (defaults filled, "
                                                        "keys sorted)")
    canonical.add_argument("file", metavar="FILE")
    canonical.add_argument("--format", choices=("toml", "yaml", "json"), default="toml")
    canonical.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    canonical.set_defaults(func=run_canonical)

    schema = subparsers.add_parser("schema", help="print the recipe JSON Schema (for editors)")
    schema.set_defaults(func=run_schema)


def run_validate(args) -> int:
    from pathlib import Path

    from sdbake.schemas.errors import SdbakeError
    from sdbake.schemas.loader import RECIPE_SUFFIXES, load_recipe

    files = []
    for name in args.files:   # a folder stands for the recipes directly in it (`recipes/*` includes folders)
        path = Path(name)
        files += sorted(str(p) for p in path.iterdir() if p.suffix in RECIPE_SUFFIXES) if path.is_dir() else [name]
    failed = 0
    for name in files:
        try:
            load_recipe(name, args.overrides)
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
    from sdbake.schemas.jsonschema import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2, sort_keys=True))
    return 0
