"""Input files by content hash: the cache's input store, and finding a file an image's recipe read.

Every input file a run reads (init images, masks, paste images, wildcard files, embeddings) is kept
under `<cache root>/inputs/ab/<sha256>` the first time it is seen, so `run IMAGE` can re-render
even after the original file moved or changed. Lookups verify the content hash; nothing here
imports torch.
"""
from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

from sdbake.runner.models.hashing import sha256_file
from sdbake.schemas.errors import InputFileError

MAX_SCAN_FILES = 10_000     # a folder searched by hash is hashed file by file: bound the work


class InputStore:
    """Files by sha256 under `<cache root>/inputs/`; written to a temporary name and renamed."""

    def __init__(self, cache_root: Path):
        self.root = Path(cache_root) / "inputs"

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def keep(self, path: Path, sha256: str) -> None:
        target = self.path_of(sha256)
        if target.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".{sha256}.{uuid.uuid4().hex}.tmp"
        try:
            shutil.copyfile(path, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def find(self, sha256: str) -> Path | None:
        path = self.path_of(sha256)
        return path if path.is_file() and sha256_file(path) == sha256 else None


def plan_inputs(plan) -> dict[str, Path]:
    """sha256 -> path of every input file the plan reads (not models: they have their own folders)."""
    found = {}
    for inv in plan.invocations:
        for name, path in inv.files.items():
            if name != "upscaler":
                found[inv.inputs["files"][name]] = path
        for kind in ("wildcards", "embeddings"):
            for name, path in getattr(inv, kind).items():
                found[inv.inputs[kind][name]] = path
    return found


def remember_inputs(plan, cache_root: Path) -> None:
    """Keep every input file of the plan in the cache's input store (a no-op for files kept before)."""
    store = InputStore(cache_root)
    for sha256, path in plan_inputs(plan).items():
        store.keep(path, sha256)


def find_by_hash(sha256: str, relative: str | None, folders: Iterable[Path], store: InputStore | None) -> Path | None:
    """The file with this content: at `relative` under each folder, then any file in those folders (not
    in subfolders), then in the input store."""
    folders = [Path(f) for f in folders if f is not None and Path(f).is_dir()]
    if relative and not Path(relative).is_absolute() and ".." not in Path(relative).parts:
        for folder in folders:
            candidate = folder / relative
            if candidate.is_file() and sha256_file(candidate) == sha256:
                return candidate
    scanned = 0
    for folder in folders:
        for candidate in sorted(folder.iterdir()):
            if candidate.is_file() and not candidate.is_symlink():
                scanned += 1
                if scanned > MAX_SCAN_FILES:
                    break
                if sha256_file(candidate) == sha256:
                    return candidate
    return store.find(sha256) if store is not None else None


def found_key(kind: str, name: str) -> str:
    """Where `LoadedRecipe.found` keeps the file found by hash for a name the recipe writes: under the name
    for checkpoints and input files, under `<loras>name` for a LoRA (a checkpoint may be spelled alike)."""
    return name if kind == "checkpoints" else f"<{kind}>{name}"


def in_model_folders(sha256: str, kind: str) -> Path | None:
    """The file or diffusers folder in the configured folders of `kind` with this content hash."""
    from sdbake.runner.modelfiles import path_sha256
    from sdbake.runner.models.search import list_folder, load_search_config
    for models_folder in load_search_config().folders[kind]:
        for candidate in list_folder(models_folder, kind):
            if path_sha256(candidate) == sha256:
                return candidate.resolve()
    return None


def named_sha256(resolve, name: str, folder: Path) -> tuple[Path | None, str | None]:
    """The file `resolve(name, folder)` leads to and its content hash; (None, None) when it leads nowhere."""
    from sdbake.runner.modelfiles import path_sha256
    from sdbake.schemas.errors import SdbakeError
    try:
        path = resolve(name, folder)
    except SdbakeError:
        return None, None
    return (path, path_sha256(path)) if path.exists() else (None, None)


def model_by_hash(kind: str, name: str, sha256: str, folder: Path, source: Path, resolve=None) -> Path | None:
    """Where a re-render of `source` (an image or a bundle) finds a model file it recorded: None when
    `name` leads to the recorded file (used as the recipe says); else the file or diffusers folder of
    `kind` ("checkpoints", "loras") with the recorded content hash in the configured folders, said in
    one `note:` line. A model no folder holds is an error, never a render with another file."""
    from sdbake.runner.models.search import resolve_model_file
    resolve = resolve or (lambda model, where: resolve_model_file(model, kind, where))
    named, named_hash = named_sha256(resolve, name, folder)
    if named_hash == sha256:
        return None
    located = in_model_folders(sha256, kind)
    label = {"checkpoints": "checkpoint", "loras": "LoRA"}[kind]
    other = f"`{name}` is {named}, sha256 {named_hash[:12]}" if named is not None else f"no file is named `{name}`"
    if located is None:
        raise InputFileError(f"{label} `{name}` (sha256 {sha256[:12]}) is in no {label} folder ({other})",
                             file=str(source))
    print(f"note: {source}: {label} `{name}` (sha256 {sha256[:12]}) found by its hash: {located} ({other})",
          file=sys.stderr)
    return located
