"""The `sdbake` command line: one subcommand per module in runner/commands/."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

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
    "sdbake.runner.commands.watch",
    "sdbake.runner.commands.new",
    "sdbake.runner.commands.pack",
    "sdbake.runner.commands.export",
    "sdbake.runner.commands.import_recipe",
]


def common_options() -> argparse.ArgumentParser:
    """The options every command and subcommand takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's parser must not reset what `sdbake --debug run ...` already set.
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log what sdbake does on stderr (the cache and config files it uses); -vv for more")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, print its traceback instead of one line; log everything")
    return common


class _Subcommands(argparse._SubParsersAction):
    """A subcommand's one-line help is also its description, unless it has its own."""

    def add_parser(self, name, **kwargs):
        if kwargs.get("help") and not kwargs.get("description"):
            kwargs["description"] = kwargs["help"][0].upper() + kwargs["help"][1:] + "."
        return super().add_parser(name, **kwargs)


class CommandParser(argparse.ArgumentParser):
    """The parser of `sdbake` and of every (sub)command: the common options, and the epilog's examples
    printed as written."""

    def __init__(self, *args, **kwargs):
        kwargs["parents"] = [*kwargs.get("parents", []), common_options()]
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Subcommands)


def build_parser() -> argparse.ArgumentParser:
    from sdbake import __version__
    parser = CommandParser(prog="sdbake", description="Declarative, cached Stable Diffusion recipes.",
                           epilog="examples:\n  sdbake run recipes/demo.toml --out outputs\n"
                                  "  sdbake plan recipes/demo.toml\n  sdbake run -h")
    parser.add_argument("--version", action="version", version=f"sdbake {__version__}",
                        help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", help="`sdbake COMMAND -h` for its options")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name == name:   # a command module that has not landed yet
                continue
            raise
        module.register(subparsers)
    return parser


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests swap it between calls of main)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _ignored):
        pass


def configure_logging(verbose: int, debug: bool) -> None:
    """Our loggers (`sdbake.*`) on stderr: warnings only, INFO with -v, DEBUG with -vv or --debug."""
    logger = logging.getLogger("sdbake")
    logger.setLevel(logging.DEBUG if debug or verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure a user can cause ends as one line on stderr and an exit code
    (runner/failures.py says which). `--debug` (or SDBAKE_DEBUG=1) prints the traceback as well."""
    from sdbake.runner.failures import describe_failure, silence_broken_pipe

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("SDBAKE_DEBUG", "") not in ("", "0")
    configure_logging(getattr(args, "verbose", 0), debug)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `sdbake ... | head`: the reader has gone; nothing more to say to anyone.
        return silence_broken_pipe()
    except Exception as err:
        described = describe_failure(err)
        if described is None:
            raise                      # a bug, not a user's mistake: its traceback is the report
        line, code = described
        if debug:
            traceback.print_exc()
        print(line, file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
