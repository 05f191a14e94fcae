"""`sdbake import SOURCE`: a recipe from an A1111 image or infotext, or from a ComfyUI workflow.

Settings that have no sdbake equivalent are written into the recipe as `# unmapped: Key: value` comments;
what the source does not hold (an init image, a model that is not on this machine) is said on stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from sdbake.runner.commands import add_command
    parser = add_command(
        subparsers, "import", import_command,
        help="write a recipe from an A1111 image or infotext, or a ComfyUI workflow",
        description="Write a recipe that renders the settings of SOURCE: a PNG, JPEG or WebP made by A1111 (its "
                    "infotext), a text file holding an infotext, or a ComfyUI workflow (.json). Settings with no "
                    "sdbake equivalent become `# unmapped:` comments. Never overwrites a file without --force.",
        examples=["sdbake import 00012-1234.png -o portrait.toml",
                  "sdbake import infotext.txt -o again.toml --model sd15=models/demo",
                  "sdbake import inpaint.png -o fix.toml --init-image photo.png --mask face-mask.png",
                  "sdbake import workflow.json -o flow.toml"])
    parser.add_argument("source", metavar="SOURCE", help="an image, a .txt infotext, or a workflow .json")
    parser.add_argument("-o", "--output", metavar="RECIPE", help="the .toml recipe to write (default: print it)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="use the local file PATH where the source names NAME (a checkpoint, VAE, LoRA or "
                             "upscaler: its name, file name, or A1111 hash); repeat for each")
    parser.add_argument("--init-image", metavar="FILE", help="A1111 img2img/inpaint: the init image (the infotext "
                                                             "does not hold it)")
    parser.add_argument("--mask", metavar="FILE", help="A1111 inpaint: the mask (white = repaint)")
    parser.add_argument("--force", action="store_true", help="replace an existing RECIPE")


def recipe_path(path: str, recipe_dir: Path) -> str:
    """A file given on the command line (relative to the current folder), as the recipe must spell it:
    relative to the recipe's folder. A name that is not a file here (a model name) is kept as written."""
    given = Path(path).expanduser()
    if not given.exists():
        return path
    absolute, folder = given.resolve(), recipe_dir.resolve()
    try:
        if os.path.commonpath([absolute, folder]) != absolute.anchor:
            return Path(os.path.relpath(absolute, folder)).as_posix()
    except ValueError:           # another drive (Windows): no relative path
        pass
    return absolute.as_posix()   # nothing in common but the root: an absolute path reads better


def parse_model_map(pairs: list[str], recipe_dir: Path) -> dict[str, str]:
    from sdbake.schemas.errors import ModelError
    mapping: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ModelError(f"--model wants NAME=PATH (got {pair!r})")
        mapping[name.strip()] = recipe_path(path.strip(), recipe_dir)
    return mapping


def import_command(args) -> int:
    from sdbake.runner.interop.recipe_text import recipe_toml, write_new_file
    from sdbake.schemas.errors import InputFileError, OutputError

    source = Path(args.source)
    target = Path(args.output) if args.output else None
    if target is not None:
        if target.suffix.lower() != ".toml":
            raise OutputError("sdbake import writes TOML: give a .toml file", file=str(target))
        if target.exists() and not args.force:
            raise OutputError("already exists: not overwriting it (choose another -o, or --force)", file=str(target))
    if not source.is_file():
        raise InputFileError("no such file", file=str(source))
    recipe_dir = target.parent if target is not None else Path.cwd()
    model_map = parse_model_map(args.model, recipe_dir)
    name = (target or source).stem
    if source.suffix.lower() == ".json":
        if args.init_image or args.mask:
            raise InputFileError("--init-image and --mask are for A1111 sources: a workflow names its own "
                                 "images", file=str(source))
        from sdbake.runner.interop.comfy_import import import_workflow
        recipe, unmapped = import_workflow(source, model_map)
        recipe.setdefault("name", name)
        header, notes = [f"Imported from the ComfyUI workflow {source.name} by `sdbake import`."], []
    else:
        imported = _import_a1111(source, name, model_map, recipe_dir, args)
        recipe, unmapped, header, notes = imported.recipe, imported.unmapped, imported.header, imported.notes
    text = recipe_toml(recipe, unmapped, header)
    if target is None:
        sys.stdout.write(text)
    else:
        write_new_file(target, text, force=args.force)
        print(target)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if unmapped:
        print(f"{len(unmapped)} setting(s) with no sdbake equivalent are comments in the recipe (# unmapped:)",
              file=sys.stderr)
    return 0


def _import_a1111(source: Path, name: str, model_map: dict, recipe_dir: Path, args):
    from sdbake.runner.interop.a1111_infotext import import_infotext, read_infotext
    from sdbake.runner.interop.model_names import ModelResolver
    resolver = ModelResolver(model_map, recipe_dir)
    text = read_infotext(source)
    imported = import_infotext(
        text, name=name, resolver=resolver, source=source.name,
        init_image=recipe_path(args.init_image, recipe_dir) if args.init_image else None,
        mask=recipe_path(args.mask, recipe_dir) if args.mask else None)
    imported.notes += [f"found {line}" for line in resolver.resolved]
    if resolver.unresolved_line():
        imported.notes.append(resolver.unresolved_line())
    return imported
