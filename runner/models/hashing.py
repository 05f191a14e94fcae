"""sha256 of weight files, remembered in a small index so a 7 GB checkpoint is read once. No torch here."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from sdbake.runner.locations import user_cache_dir
from sdbake.schemas.errors import ModelError
from sdbake.schemas.files import require_regular_file

INDEX_ENV = "SDBAKE_HASH_INDEX"
CHUNK_BYTES = 8 * 1024 * 1024


def index_path() -> Path:
    """Where the hash index lives: $SDBAKE_HASH_INDEX, else hash-index.json in the user's cache folder."""
    override = os.environ.get(INDEX_ENV)
    return Path(override) if override else user_cache_dir() / "hash-index.json"


def short_hash(sha256: str) -> str:
    """A1111's `Model hash`: the first 10 hex characters of the file's sha256."""
    return sha256[:10]


def _file_identity(path: Path) -> tuple[str, int, int]:
    # A file whose size and mtime are unchanged is taken as unchanged, as build tools do.
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _index_key(identity: tuple[str, int, int]) -> str:
    abs_path, size_bytes, mtime_ns = identity
    return f"{abs_path}|{size_bytes}|{mtime_ns}"


# The parsed index per index file, with the stat it was parsed at: a run asks for the same few hashes at
# every stage, and parsing the JSON each time cost more than the stage keys it served.
_PARSED: dict[Path, tuple[tuple[int, int, int], dict[str, str]]] = {}


def read_index() -> dict[str, str]:
    """The stored {identity key: sha256}; a missing or corrupt index reads as empty (it is rebuilt)."""
    path = index_path()
    try:
        info = path.stat()
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)   # a rewrite is a rename: a new inode
        if path in _PARSED and _PARSED[path][0] == stamp:
            return dict(_PARSED[path][1])
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(entries, dict):
        return {}
    valid = {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, str) and len(v) == 64}
    _PARSED[path] = (stamp, valid)
    return dict(valid)


def _write_index(entries: dict[str, str]) -> None:
    target = index_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temporary file and renamed, so a crash or a concurrent run never leaves half a file.
    fd, tmp_name = tempfile.mkstemp(prefix=".hash-index-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entries, f, indent=0, sort_keys=True)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def sha256_uncached(path: Path) -> str:
    require_regular_file(path, "file to hash", ModelError)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str | None:
    """The sha256 the index already knows for this file as it is now, or None (never reads the file)."""
    return read_index().get(_index_key(_file_identity(Path(path))))


def _indexed(path: Path, compute, kind: str = "") -> str:
    """`compute(path)` (a sha256), from the index when the file's (path, size, mtime) is unchanged."""
    path = Path(path)
    key = kind + _index_key(_file_identity(path))
    entries = read_index()
    if key in entries:
        return entries[key]
    sha = compute(path)
    entries = read_index()          # re-read: another process may have added entries meanwhile
    stale_prefix = key.rsplit("|", 2)[0] + "|"
    entries = {k: v for k, v in entries.items() if not k.startswith(stale_prefix)}   # older versions of it
    entries[key] = sha
    _write_index(entries)
    return sha


def sha256_file(path: Path) -> str:
    """sha256 of a file, from the index when its (path, size, mtime) is unchanged, else computed and stored."""
    return _indexed(path, sha256_uncached)


def _safetensors_header(path: Path) -> tuple[int, dict]:
    """The JSON header's length and content (safetensors: 8-byte little-endian length, then the JSON)."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        if size < 2 or size > 100 * 1024 * 1024:
            raise ModelError("not a safetensors file (bad header length)", file=str(path))
        try:
            header = json.loads(f.read(size))
        except ValueError as err:
            raise ModelError(f"not a safetensors file (header: {err})", file=str(path)) from None
    return size, header if isinstance(header, dict) else {}


def _addnet_sha256(path: Path) -> str:
    # kohya's "addnet" hash: sha256 of the tensor bytes, i.e. everything after the header
    size, _header = _safetensors_header(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(8 + size)
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def safetensors_metadata(path: Path) -> dict:
    """The `__metadata__` table of a .safetensors file's header (empty when it has none)."""
    metadata = _safetensors_header(Path(path))[1].get("__metadata__") or {}
    return metadata if isinstance(metadata, dict) else {}


def lora_short_hash(path: Path) -> str:
    """What A1111 writes for a LoRA in `Lora hashes` (extensions-builtin/Lora/network.py): the first
    12 hex characters of the file's `sshs_model_hash` metadata when it has one, else of its sha256,
    taken for a .safetensors file over the bytes after the header (kohya's addnet hash)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return sha256_file(path)[:12]
    stored = safetensors_metadata(path).get("sshs_model_hash")
    if isinstance(stored, str) and stored:
        return stored[:12]
    return _indexed(path, _addnet_sha256, kind="addnet:")[:12]
