"""`sdbake diff A B`: which stages changed between two recipes, and which a re-run would reuse.

Exit codes follow diff(1): 0 identical, 1 different, 2 trouble (bad arguments, unreadable input).
Imports no torch: it plans, it never renders.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from sdbake.runner.commands import add_command, add_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    diff = add_command(
        subparsers, "diff", run_diff, "compare two recipes stage by stage (files, images made by sdbake, or REV:path)",
        ["sdbake diff HEAD:recipes/demo.toml recipes/demo.toml", "sdbake diff outputs/a.png outputs/b.png --format json"],
        description="A and B may be recipe files (TOML or YAML), images carrying an sdbake recipe, or git revisions "
                    "written REV:path. Exit 0 when identical, 1 when different, 2 on error.")
    diff.add_argument("a", metavar="A", help="the old side: a recipe, an image made by sdbake, or REV:path")
    diff.add_argument("b", metavar="B", help="the new side, as A")
    diff.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    diff.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                      help="colour the text output (auto: only on a terminal, and never with NO_COLOR set)")
    add_overrides(diff, "override a value on both sides")


def wants_colour(choice: str, stream=sys.stdout) -> bool:
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and not os.environ.get("NO_COLOR")


def run_diff(args) -> int:
    from sdbake.runner.diff import diff_sources
    from sdbake.runner.diff_text import format_text
    from sdbake.schemas.errors import SdbakeError

    try:
        diff = diff_sources(args.a, args.b, args.overrides)
    except SdbakeError as err:
        print(str(err), file=sys.stderr)
        return 2           # as diff(1): trouble is 2, so that 1 always means "different"
    if args.format == "json":
        print(json.dumps(diff.to_json(), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        sys.stdout.write(format_text(diff, colour=wants_colour(args.color)))
    return 0 if diff.identical else 1
