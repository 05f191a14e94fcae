"""`sdbake show IMAGE`: what an image holds (an sdbake recipe, or A1111's infotext parsed into fields).

Images are downloaded from anywhere: every text taken from one is printed with its control
characters escaped (a terminal escape sequence in a prompt must not reach the terminal), and
metadata that is not what sdbake writes is an error line, not a traceback.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sdbake.runner.commands import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    show = add_command(subparsers, "show", run_show, "print the recipe or infotext embedded in an image",
                       ["sdbake show outputs/demo/1234.png", "sdbake show a1111-image.png --format infotext"])
    show.add_argument("image", metavar="IMAGE", help="a PNG, WebP or JPEG made by sdbake or A1111")
    show.add_argument("--format", choices=("recipe", "infotext", "json"), default=None,
                      help="recipe (TOML, the default for sdbake images), infotext, or json (all fields)")


def escape_controls(text: str) -> str:
    """Text safe for a terminal: control and invisible format characters (ESC, bidi overrides) are
    shown as `\\x1b`, `\\u202e`; newlines and tabs stay."""
    import unicodedata

    def visible(c: str) -> str:
        if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"):
            return c
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
    return "".join(visible(c) for c in str(text))


def _say(text: str = "") -> None:
    print(escape_controls(text))


def _recipe_text(recipe: dict) -> str:
    """The recipe as TOML; JSON when TOML cannot spell it (null values, mixed arrays of a foreign file)."""
    import tomli_w
    try:
        return tomli_w.dumps(recipe)
    except (TypeError, ValueError):
        return json.dumps(recipe, indent=2, sort_keys=True) + "\n"


def run_show(args) -> int:
    from sdbake.runner.sources import parse_embedded
    from sdbake.schemas.errors import InputFileError
    from sdbake.stages.output.infotext import parse_infotext
    from sdbake.stages.output.metadata import read_metadata

    path = Path(args.image)
    infotext, sdbake_json = read_metadata(path)
    if infotext is None and sdbake_json is None:
        raise InputFileError("this image carries no generation metadata", file=str(path))
    fmt = args.format or ("recipe" if sdbake_json else "infotext")
    document = parse_embedded(sdbake_json, path) if sdbake_json and fmt != "infotext" else None
    if fmt == "recipe":
        if document is None:
            raise InputFileError("no sdbake recipe in this image (an A1111 image? `sdbake import IMAGE -o "
                                 "recipe.toml` writes one from its infotext; --format infotext shows it)",
                                 file=str(path))
        _say(f"# seed {document.get('seed')}, image {document.get('batch_index')} of its batch")
        _say("# prompt: " + str(document.get("prompt")).replace("\n", " "))
        print(escape_controls(_recipe_text(document["recipe"])), end="")
    elif fmt == "infotext":
        if infotext is None:
            raise InputFileError("no A1111 infotext in this image", file=str(path))
        prompt, negative, params = parse_infotext(infotext)
        _say(f"Prompt: {prompt}")
        _say(f"Negative prompt: {negative}")
        for key, value in params.items():
            _say(f"{key}: {value}")
    else:
        prompt, negative, params = parse_infotext(infotext) if infotext else ("", "", {})
        # json.dumps escapes every control character itself (ensure_ascii).
        print(json.dumps({"prompt": prompt, "negative": negative, "parameters": params, "sdbake": document},
                         indent=2, sort_keys=True))
    return 0
