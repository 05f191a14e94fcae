"""`sdbake lock`, `sdbake verify`: pin a render's inputs and outputs, and check them again later."""
from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

from sdbake.runner.commands import add_command
from sdbake.runner.commands.run import add_recipe_options


def register(subparsers: argparse._SubParsersAction) -> None:
    lock = add_command(subparsers, "lock", run_lock, "render and write RECIPE.lock (models, prompts, keys, outputs)",
                       ["sdbake lock recipes/demo.toml        writes recipes/demo.toml.lock",
                        "sdbake run recipes/demo.toml --locked   later: refuse changed models or prompts"])
    add_recipe_options(lock)
    verify = add_command(subparsers, "verify", run_verify, "re-render without the cache and compare outputs to "
                         "the lock", ["sdbake verify recipes/demo.toml   exit 1 and a list when anything differs"])
    add_recipe_options(verify)


def run_lock(args) -> int:
    from sdbake.runner.commands.run import prepare
    from sdbake.runner.execute import RunOptions, execute
    from sdbake.runner.lock import lock_document, lock_path, write_lock

    plan, store = prepare(args)
    result = execute(plan, store, RunOptions(quiet=True))
    path = lock_path(Path(args.recipe))
    write_lock(path, lock_document(plan, result.outputs))
    print(f"wrote {path}")
    return 0


def run_verify(args) -> int:
    from sdbake.runner.commands.run import prepare
    from sdbake.runner.execute import RunOptions, execute
    from sdbake.runner.lock import lock_differences, lock_document, lock_path, read_lock

    locked = read_lock(lock_path(Path(args.recipe)))
    with tempfile.TemporaryDirectory() as scratch:
        args.out = scratch
        plan, _ = prepare(args)
        problems = lock_differences(locked, lock_document(plan))
        result = execute(plan, None, RunOptions(no_cache=True, quiet=True))
        for path in result.outputs:
            rel = path.resolve().relative_to(Path(scratch).resolve()).as_posix()
            want = locked.get("outputs", {}).get(rel)
            got = hashlib.sha256(path.read_bytes()).hexdigest()
            if want is None:
                problems.append(f"output {rel}: not in the lock")
            elif want != got:
                problems.append(f"output {rel}: sha256 {got[:12]} differs from the lock's {want[:12]}")
    for line in problems:
        print(line)
    print("verified: outputs match the lock" if not problems else f"{len(problems)} difference(s) from the lock")
    return 1 if problems else 0
