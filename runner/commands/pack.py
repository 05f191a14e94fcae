"""`sdbake pack`: a recipe or an image's recipe, with every input file it reads, in one .tar.gz."""
from __future__ import annotations

import argparse
from pathlib import Path

from sdbake.runner.commands import add_command, add_overrides, add_recipe_argument

HELP = "bundle a recipe (or an image's recipe) with its input files, to run elsewhere"
DESCRIPTION = ("Writes the recipe and every file it reads (init images, masks, paste images, wildcard files, "
               "embeddings) into one .tar.gz; models are listed by name and sha256, not packed, and found by hash in "
               "the model folders of the machine that runs the bundle.")
EXAMPLES = ["sdbake pack recipes/demo.toml -o demo.tar.gz      then, elsewhere: sdbake run demo.tar.gz",
            "sdbake pack outputs/demo/1-base.png -o base.tar.gz   one image's recipe prefix and inputs"]


def register(subparsers: argparse._SubParsersAction) -> None:
    pack = add_command(subparsers, "pack", run_pack, HELP, EXAMPLES, description=DESCRIPTION)
    add_recipe_argument(pack, metavar="RECIPE|IMAGE")
    pack.add_argument("-o", "--output", required=True, type=Path, metavar="BUNDLE.tar.gz",
                      help="the bundle to write (.tar.gz or .tgz)")
    add_overrides(pack, "override a recipe value before packing")
    pack.add_argument("--inputs", metavar="DIR", type=Path, help="IMAGE: also look here for its files")
    pack.add_argument("--recipe-dir", metavar="DIR", type=Path, help="IMAGE: the folder of its recipe")
    pack.add_argument("--cache-dir", metavar="DIR", help="the cache whose input store is searched")


def run_pack(args) -> int:
    from sdbake.runner.bundle import is_bundle, write_bundle
    from sdbake.runner.commands.run import prepare
    from sdbake.schemas.errors import RecipeError
    if not is_bundle(str(args.output)):
        raise RecipeError("the bundle's name must end with .tar.gz or .tgz", file=str(args.output))
    args.out = args.device = args.dtype = None
    plan, _ = prepare(args)
    members = write_bundle(plan, args.output)
    print(f"wrote {args.output}: {len(members)} files (models listed by sha256 in models.json, not packed)")
    return 0
