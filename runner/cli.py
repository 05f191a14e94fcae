"""The `sdbake` command line: one subcommand per module in runner/commands/."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)`, adding its parser with `set_defaults(func=handler)`;
# a handler takes the parsed args and returns the exit code. Modules import torch only inside
# handlers, so `sdbake validate` stays instant.
COMMAND_MODULES = [
    "sdbake.runner.commands.recipe_cmds",
    "sdbake.runner.commands.run",
    "sdbake.runner.commands.cache",
    "sdbake.runner.commands.lock",
    "sdbake.runner.commands.show",
    "sdbake.runner.commands.diff",
    "sdbake.runner.commands.check",
    "sdbake.runner.commands.prompt",
    "sdbake.runner.commands.models",
]


def build_parser() -> argparse.ArgumentParser:
    from sdbake import __version__
    parser = argparse.ArgumentParser(prog="sdbake", description="Declarative, cached Stable Diffusion recipes.")
    parser.add_argument("--version", action="version", version=f"sdbake {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name == name:   # a command module that has not landed yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sdbake.schemas.errors import SdbakeError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except SdbakeError as err:
        print(str(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
