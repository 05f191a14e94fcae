"""`sdbake models hash FILE...`, `sdbake models ls` and `sdbake models merge`: weight file hashes, what the
search folders hold, and A1111-style checkpoint merges written to a file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdbake.runner.commands import add_actions, add_command


def register(subparsers) -> None:
    models = add_command(subparsers, "models", None, "hash model files, list the model search folders, merge "
                         "checkpoints",
                         ["sdbake models hash models/demo/unet/diffusion_pytorch_model.safetensors",
                          "sdbake models ls --kind loras"])
    actions = add_actions(models, "models_command", "what to do")
    hash_parser = add_command(actions, "hash", hash_handler, "print sha256, A1111 short hash and path of weight files",
                              ["sdbake models hash ~/webui/models/Stable-diffusion/*.safetensors"])
    hash_parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="weight files")
    ls_parser = add_command(actions, "ls", ls_handler, "list the files in the configured model folders",
                            ["sdbake models ls", "sdbake models ls --kind checkpoints"])
    ls_parser.add_argument("--kind", default=None,
                           help="only this kind (checkpoints, vae, loras, embeddings, upscalers, wildcards)")
    merge_parser = add_command(
        actions, "merge", merge_handler,
        "merge checkpoints as A1111's Checkpoint Merger does, into a new .safetensors file (docs/merging.md)",
        ["sdbake models merge a.safetensors b.safetensors --alpha 0.3 -o mix.safetensors",
         ("sdbake models merge a.safetensors b.safetensors c.safetensors --method add_difference --alpha 1 "
         "-o mix.safetensors"),
         "sdbake models merge a.safetensors b.safetensors --alpha 0.5 --alphas IN00=0,OUT11=1 -o mix.safetensors"])
    merge_parser.add_argument("models", nargs="+", type=Path, metavar="MODEL",
                              help="A B [C]: checkpoint files or SD1 diffusers folders")
    merge_parser.add_argument("--method", choices=("weighted_sum", "add_difference"), default="weighted_sum",
                              help="weighted_sum: (1-alpha)*A + alpha*B; add_difference: A + alpha*(B-C)")
    merge_parser.add_argument("--alpha", type=float, required=True, help="A1111's multiplier M")
    merge_parser.add_argument("--alphas", default=None, metavar="WEIGHTS",
                              help="block weights: 25 comma-separated numbers (IN00..IN11, M00, OUT00..OUT11) "
                                   "or BLOCK=alpha pairs")
    merge_parser.add_argument("--fp16", action="store_true", help="store the merged tensors as float16")
    merge_parser.add_argument("--allow-pickle", action="store_true", help="read .ckpt inputs (trusted files only)")
    merge_parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                              help="the new .safetensors file (an existing file is never overwritten)")


def hash_handler(args: argparse.Namespace) -> int:
    from sdbake.runner.models.hashing import sha256_file, short_hash
    from sdbake.schemas.errors import ModelError
    for path in args.files:
        if not path.is_file():
            raise ModelError("not a file", file=str(path))
        sha = sha256_file(path)
        print(f"{sha}  {short_hash(sha)}  {path}")
    return 0


def ls_handler(args: argparse.Namespace) -> int:
    from sdbake.runner.models.hashing import cached_sha256, short_hash
    from sdbake.runner.models.search import FOLDER_KINDS, list_folder, load_search_config
    from sdbake.schemas.errors import ModelError
    if args.kind is not None and args.kind not in FOLDER_KINDS:
        raise ModelError(f"unknown kind {args.kind!r} (known: {', '.join(FOLDER_KINDS)})")
    search = load_search_config()
    if not search.sources:
        from sdbake.runner.locations import user_config_dir
        print(f"no config file found (./sdbake.toml, {user_config_dir() / 'config.toml'} or $SDBAKE_CONFIG)",
              file=sys.stderr)
        return 0
    for kind in [args.kind] if args.kind else FOLDER_KINDS:
        for folder in search.folders[kind]:
            note = "" if folder.is_dir() else "  (missing)"
            print(f"[{kind}] {folder}{note}")
            for entry in list_folder(folder, kind):
                # Only hashes already known: listing must not read every 7 GB file.
                sha = cached_sha256(entry) if entry.is_file() else None
                known = f"{short_hash(sha)}  " if sha else " " * 12
                print(f"  {known}{entry.relative_to(folder)}")
    return 0


def parse_alphas(text: str | None):
    """`--alphas`: 25 numbers in block order, or BLOCK=alpha pairs."""
    from sdbake.schemas.errors import RecipeError
    if text is None:
        return None
    try:
        if "=" in text:
            pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
            return {block.strip().upper(): float(value) for block, value in pairs}
        return [float(part) for part in text.split(",")]
    except ValueError as err:
        raise RecipeError(f"--alphas: {err}") from None


def merge_handler(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError
    from sdbake.runner.merges import merge_recipe
    from sdbake.runner.modelfiles import path_sha256
    from sdbake.runner.models.hashing import sha256_file, short_hash
    from sdbake.schemas.errors import OutputError, RecipeError
    from sdbake.schemas.recipe import MergeSpec
    names = [str(p) for p in args.models]
    if len(args.models) not in (2, 3):
        raise RecipeError(f"merge takes two models (A B) or three (A B C), got {len(args.models)}")
    try:
        spec = MergeSpec(method=args.method, a=names[0], b=names[1], c=names[2] if len(names) > 2 else None,
                         alpha=args.alpha, alphas=parse_alphas(args.alphas), fp16=args.fp16)
    except ValidationError as err:
        first = err.errors()[0]
        raise RecipeError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    problems = spec.problems()
    if problems:
        path, message = problems[0]
        raise RecipeError(f"{'.'.join(str(p) for p in path) or 'merge'}: {message}")
    output: Path = args.output
    if os.path.lexists(output):
        raise OutputError("exists already; a merge never overwrites a file", file=str(output))
    if output.suffix.lower() != ".safetensors":
        raise OutputError("the output must be a .safetensors file", file=str(output))
    hashes = [path_sha256(p) for p in args.models]
    recipe = merge_recipe(spec.method, spec.alpha, spec.alphas, spec.fp16, hashes[0], hashes[1],
                          hashes[2] if len(hashes) > 2 else None)
    from safetensors.torch import save_file
    from sdbake.runner.models.merge import file_metadata, merge_files
    tensors = merge_files(recipe, args.models[0], args.models[1], args.models[2] if len(names) > 2 else None,
                          names=(names[0], names[1], names[2] if len(names) > 2 else "c"),
                          allow_pickle=args.allow_pickle)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=file_metadata(recipe))
        try:
            os.link(tmp, output)          # publishes the whole file, and fails if one appeared meanwhile
        except FileExistsError:
            raise OutputError("exists already; a merge never overwrites a file", file=str(output)) from None
    finally:
        tmp.unlink(missing_ok=True)
    sha = sha256_file(output)
    print(f"{sha}  {short_hash(sha)}  {output}")
    return 0
