"""`sdbake models hash FILE...` and `sdbake models ls`: weight file hashes and what the search folders hold."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdbake.runner.commands import add_actions, add_command


def register(subparsers) -> None:
    models = add_command(subparsers, "models", None, "hash model files, list the model search folders",
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
