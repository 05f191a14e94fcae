"""Is a cache folder fit to be where workers meet? (docs/scale.md, "The shared cache")

The cache publishes an entry by renaming a finished folder from tmp/ into objects/: a reader sees
all of it or none, and when two workers publish one key the second rename fails because the target
exists, so the first entry stays. That needs a filesystem where rename within the cache folder is
atomic and its result immediately visible (local disks, NFSv4, CephFS and Lustre are; some FUSE or
object-store mounts are not). The probe performs exactly those two renames in the cache folder.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from sdbake.schemas.errors import CacheError

PROBE_FOLDER = "probe"                # under the cache's tmp/, which maintenance commands ignore


def _problem(root: Path) -> str | None:
    base = root / "tmp" / PROBE_FOLDER
    nonce = uuid.uuid4().hex
    first, second, target = base / f"{nonce}.a", base / f"{nonce}.b", base / "published" / nonce
    try:
        for folder, text in ((first, "first"), (second, "second")):
            folder.mkdir(parents=True)
            (folder / "entry").write_text(text, encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(first, target)
        except OSError as err:
            return f"renaming a folder into place failed ({err.strerror or err})"
        if first.exists() or not (target / "entry").is_file() or (target / "entry").read_text() != "first":
            return "a renamed folder is not visible at once under its new name"
        try:
            os.rename(second, target)
        except OSError:
            return None                      # the second publisher loses: the first entry stays
        return "renaming a folder onto an existing one replaced it (the first writer must win)"
    except OSError as err:
        return f"cannot write there ({err.strerror or err})"
    finally:
        for folder in (first, second, target):
            shutil.rmtree(folder, ignore_errors=True)


def check_shared_cache(root: Path) -> None:
    """Refuse a cache folder where publication by rename is not atomic or not visible."""
    problem = _problem(Path(root))
    if problem:
        raise CacheError(f"{root}: the cache folder cannot be shared by workers: {problem}; put the cache on "
                         "a filesystem with atomic rename (a local disk, NFSv4, CephFS, Lustre)")


def write_beacon(root: Path) -> tuple[Path, str]:
    """A file with a fresh nonce, for each worker to read back (it sees the same folder)."""
    nonce = uuid.uuid4().hex
    path = Path(root) / "tmp" / PROBE_FOLDER / f"beacon-{nonce}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nonce, encoding="utf-8")
    return path, nonce


def sees_beacon(path: str, nonce: str) -> bool:
    try:
        return Path(path).read_text(encoding="utf-8") == nonce
    except OSError:
        return False
