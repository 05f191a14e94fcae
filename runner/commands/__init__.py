"""The `sdbake` subcommands, one module each; the helpers below give every command the same shape."""
from __future__ import annotations

import argparse
import sys

from sdbake.runner.locations import cache_dir_help

DTYPES = ("float32", "float16", "bfloat16", "fp32", "fp16", "bf16")


def add_command(subparsers, name: str, handler, help: str, examples: list[str],
                description: str | None = None) -> argparse.ArgumentParser:
    """A (sub)command: its one-line help (also its description unless it has a longer one), and examples
    printed as written under the options."""
    heading = "example" if len(examples) == 1 else "examples"
    parser = subparsers.add_parser(name, help=help, description=description,
                                   epilog=f"{heading}:\n" + "\n".join(f"  {line}" for line in examples))
    if handler is not None:
        parser.set_defaults(func=handler)
    return parser


def add_actions(parser: argparse.ArgumentParser, dest: str, help: str):
    """The actions of a command such as `sdbake cache ACTION`; the command alone prints its help, exit 2."""
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])
    return parser.add_subparsers(dest=dest, metavar="ACTION", help=help)


def add_recipe_argument(parser: argparse.ArgumentParser, dest: str = "recipe", metavar: str = "RECIPE") -> None:
    """The recipe a command reads: a recipe file, or an image whose embedded recipe sdbake wrote."""
    parser.add_argument(dest, metavar=metavar, help="a recipe file, or an image made by sdbake")


def add_overrides(parser: argparse.ArgumentParser,
                  help: str = "override a recipe value, e.g. stages.hires.denoise=0.5 (repeatable)") -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_render_options(parser: argparse.ArgumentParser) -> None:
    """Where a render runs and what it reads and writes: the options of every command that renders."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES, help="model precision (default: float16 on CUDA, float32 on CPU)")
    parser.add_argument("--out", metavar="DIR", help="output root (default: the recipe's output_dir, else ./outputs)")
    parser.add_argument("--cache-dir", metavar="DIR", help=cache_dir_help())


def write_text_output(text: str, path: str | None) -> int:
    """A command's text result: on stdout, or written to path (then the path is printed); exit code 0."""
    if path is None:
        sys.stdout.write(text)
        return 0
    from pathlib import Path

    from sdbake.schemas.errors import OutputError
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputError(f"cannot write: {err.strerror or err}", file=path) from None
    print(path)
    return 0
