"""`sdbake show IMAGE`: what an image holds (an sdbake recipe, or A1111's infotext parsed into fields)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    show = subparsers.add_parser(
        "show", help="print the recipe or infotext embedded in an image",
        epilog="examples:\n  sdbake show outputs/demo/1234.png\n"
               "  sdbake show a1111-image.png --format infotext")
    show.add_argument("image", metavar="IMAGE", help="a PNG, WebP or JPEG made by sdbake or A1111")
    show.add_argument("--format", choices=("recipe", "infotext", "json"), default=None,
                      help="recipe (TOML, the default for sdbake images), infotext, or json (all fields)")
    show.set_defaults(func=run_show)


def run_show(args) -> int:
    from sdbake.schemas.errors import InputFileError
    from sdbake.stages.output.infotext import parse_infotext
    from sdbake.stages.output.metadata import read_metadata

    path = Path(args.image)
    infotext, sdbake_json = read_metadata(path)
    if infotext is None and sdbake_json is None:
        raise InputFileError("this image carries no generation metadata", file=str(path))
    fmt = args.format or ("recipe" if sdbake_json else "infotext")
    if fmt == "recipe":
        if not sdbake_json:
            raise InputFileError("no sdbake recipe in this image (try --format infotext)", file=str(path))
        import tomli_w
        document = json.loads(sdbake_json)
        print(f"# seed {document.get('seed')}, image {document.get('batch_index')} of its batch")
        print(f"# prompt: {document.get('prompt')}")
        print(tomli_w.dumps(document["recipe"]), end="")
    elif fmt == "infotext":
        if infotext is None:
            raise InputFileError("no A1111 infotext in this image", file=str(path))
        prompt, negative, params = parse_infotext(infotext)
        print(f"Prompt: {prompt}")
        print(f"Negative prompt: {negative}")
        for key, value in params.items():
            print(f"{key}: {value}")
    else:
        prompt, negative, params = parse_infotext(infotext) if infotext else ("", "", {})
        print(json.dumps({"prompt": prompt, "negative": negative, "parameters": params,
                          "sdbake": json.loads(sdbake_json) if sdbake_json else None}, indent=2, sort_keys=True))
    return 0
