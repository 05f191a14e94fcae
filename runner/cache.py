"""Content-addressed stage cache on disk (docs/design.md section 5; the anchor is DVC's run cache).

Layout under the root (`--cache-dir`, else `$SDBAKE_CACHE`, else `~/.cache/sdbake/stages` on Linux):

    objects/ab/<key>/entry.json        what the stage was, its metadata, checksums, size
    objects/ab/<key>/state.safetensors the output state's tensors (absent for pass-through stages)
    objects/ab/<key>/files/<n>         side outputs (saved images, previews) as bytes
    objects/ab/<key>/used              its mtime is the entry's last use
    tmp/                               entries being written; renamed into objects/ when complete
    records/<recipe>/<stage id>.json   the last key inputs per stage, so `plan` can say why a miss missed
    SDBAKE-CACHE, CACHEDIR.TAG         the marker (and the standard tag backup tools know)

An entry is written in tmp/ and renamed into place in one step, so a reader sees a whole entry or
none; two writers of one key both succeed and one entry stays. Every read checks the checksums; a
corrupt entry is reported, evicted and recomputed. Nothing here imports torch: a fully cached run
only reads entry.json files.

Caches are shared and downloaded, so nothing read from one is trusted: entry.json carries the
sha256 of its own content (a flipped bit is corruption, not a different height), blob names are
plain names inside their entry's folder, and an entry must name the key of the folder it sits in.
Deleting is confined to a marked root and to names of this layout: a cache root pointed at the
wrong folder (`$HOME`) never loses a file that sdbake did not write.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdbake.runner.cache_layout import (
    BLOB_NAME,
    CACHEDIR_TAG,
    CACHEDIR_TAG_TEXT,
    ENTRY_FORMAT,
    LAYOUT_NAMES,
    MARKER_NAME,
    TMP_GRACE_S,
    TMP_NAME,
    entry_digest,
    is_key,
    is_regular_file,
    remove_tree_or_link,
    sha256_bytes,
    structure_problem,
)
from sdbake.schemas.errors import CacheError


def default_cache_root() -> Path:
    """`$SDBAKE_CACHE`, else the user's cache folder (runner/locations.py): one default for every command."""
    from sdbake.runner.locations import default_stage_cache
    env = os.environ.get("SDBAKE_CACHE")
    root = Path(env).expanduser() if env else default_stage_cache()
    logging.getLogger(__name__).info("stage cache: %s", root)
    return root


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Entry:
    key: str
    folder: Path
    info: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.info.get("meta")
        return meta if isinstance(meta, dict) else {}

    @property
    def files(self) -> dict[str, dict]:
        """Side outputs: {index in the stage's outputs: {"sha256", "blob", "size"}}."""
        files = self.info.get("files")
        return files if isinstance(files, dict) else {}

    def blob_path(self, name: str) -> Path:
        blob = self.files[name]["blob"]
        if not isinstance(blob, str) or BLOB_NAME.fullmatch(blob) is None:
            raise CacheError(f"cache entry {self.key[:12]}: blob name {blob!r} is not a plain name")
        return self.folder / "files" / blob

    def blob_bytes(self, name: str) -> bytes:
        return self.blob_path(name).read_bytes()

    def load_tensors(self, device: str = "cpu") -> dict[str, Any]:
        path = self.folder / "state.safetensors"
        if not self.info.get("has_tensors"):
            return {}
        from safetensors.torch import load_file
        return load_file(str(path), device=device)


@dataclass
class CacheStore:
    root: Path
    warn: Any = field(default=None)

    def __post_init__(self):
        self.root = Path(self.root)
        self._tmp_cleaned = False

    # -- the marker --
    def is_marked(self) -> bool:
        return is_regular_file(self.root / MARKER_NAME)

    def require_marked(self, action: str) -> None:
        """Maintenance commands act only on a folder that sdbake created as a cache (or on none)."""
        if not os.path.lexists(self.root):
            return                    # no cache yet: an empty one, with nothing to delete
        if not self.root.is_dir():
            raise CacheError(f"cannot {action}: {self.root} is not a folder")
        if not self.is_marked():
            raise CacheError(f"cannot {action}: {self.root} is not an sdbake cache (it has no {MARKER_NAME} "
                             "marker file); point --cache-dir or SDBAKE_CACHE at the cache folder")

    def _ensure_marked(self) -> None:
        """Before the first write: mark a new (or empty, or old unmarked sdbake-layout) root; refuse a
        folder holding anything else, so a cache pointed at $HOME never fills it or cleans it."""
        if self.is_marked():
            return
        try:
            names = {entry.name for entry in os.scandir(self.root)}
        except FileNotFoundError:
            names = set()
        foreign = sorted(names - LAYOUT_NAMES)
        if foreign:
            raise CacheError(f"{self.root} is not an sdbake cache (it holds {', '.join(foreign[:3])}"
                             f"{' ...' if len(foreign) > 3 else ''} and no {MARKER_NAME} marker): use an "
                             "empty or new folder for --cache-dir / SDBAKE_CACHE")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / CACHEDIR_TAG).write_text(CACHEDIR_TAG_TEXT, encoding="utf-8")
        (self.root / MARKER_NAME).write_text(f"sdbake stage cache, entry format {ENTRY_FORMAT}\n",
                                             encoding="utf-8")

    # -- paths --
    def entry_folder(self, key: str) -> Path:
        if not is_key(key):
            raise CacheError(f"not a cache key: {key!r}")
        return self.root / "objects" / key[:2] / key

    def has(self, key: str) -> bool:
        return is_regular_file(self.entry_folder(key) / "entry.json")

    # -- read --
    def get(self, key: str, verify: bool = True, touch: bool = True) -> Entry | None:
        """The entry for `key`, checked; None when absent. A corrupt entry is evicted with a warning.
        `touch=False` reads without counting as a use (for `cache verify`, so gc's LRU order survives).
        `verify=False` skips the (slow) checksums of tensors and blobs, never the entry.json checks."""
        folder = self.entry_folder(key)
        path = folder / "entry.json"
        try:
            if os.path.islink(path) or os.path.islink(folder):
                raise ValueError("entry.json or its folder is a symbolic link")
            info = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            # An entry folder is published whole by one rename: one without entry.json is damaged, and
            # left in place it would make every later put of this key fail.
            if folder.is_dir():
                self._evict_corrupt(key, "entry.json is missing")
            return None
        except (OSError, ValueError, RecursionError) as err:
            self._evict_corrupt(key, f"unreadable entry.json ({str(err)[:120]})")
            return None
        reason = structure_problem(info, key)
        entry = Entry(key, folder, info)
        if reason is None and verify:
            reason = self._content_problem(entry)
        if reason:
            self._evict_corrupt(key, reason)
            return None
        if touch:
            self.touch(key)
        return entry

    def _content_problem(self, entry: Entry) -> str | None:
        info = entry.info
        if info.get("has_tensors"):
            path = entry.folder / "state.safetensors"
            if not is_regular_file(path):
                return "state.safetensors is missing"
            if path.stat().st_size != info.get("tensors_size") or _sha256_file(path) != info.get("tensors_sha256"):
                return "state.safetensors does not match its checksum"
        for name, record in entry.files.items():
            blob = entry.blob_path(name)
            if not is_regular_file(blob) or _sha256_file(blob) != record["sha256"]:
                return f"stored file {name} does not match its checksum"
        return None

    def _say(self, message: str) -> None:
        if self.warn:
            self.warn(message)
        else:
            warnings.warn(message, stacklevel=3)

    def _evict_corrupt(self, key: str, reason: str) -> None:
        if self.evict(key):
            self._say(f"cache entry {key[:12]} is corrupt ({reason}): evicted, recomputing")
        else:
            self._say(f"cache entry {key[:12]} is corrupt ({reason}) and cannot be evicted: not used")

    def evict_corrupt(self, key: str, reason: str) -> None:
        """For a caller that found an entry unusable (e.g. its files do not fit the stage)."""
        self._evict_corrupt(key, reason)

    def touch(self, key: str) -> None:
        used = self.entry_folder(key) / "used"
        try:
            if not os.path.islink(used):
                used.touch()
        except OSError:
            pass                      # a read-only cache still serves hits

    # -- write --
    def put(self, key: str, *, stage: dict, tensors: dict[str, Any] | None = None, meta: dict | None = None,
            files: dict[str, bytes] | None = None, inputs: dict | None = None,
            tensors_metadata: dict[str, str] | None = None) -> Entry:
        """Store an entry atomically; if another process stored the same key first, keep theirs.
        `tensors_metadata` goes into state.safetensors' header (a merged checkpoint's recipe)."""
        final = self.entry_folder(key)
        if final.is_dir() or os.path.islink(final):
            existing = self.get(key)                     # evicts a corrupt one, never recurses
            if existing is not None:
                return existing
            if final.is_dir() or os.path.islink(final):
                raise CacheError(f"cache entry {key[:12]} is corrupt and cannot be replaced "
                                 f"({final} cannot be removed)")
        self._ensure_marked()
        self.clean_stale_tmp(once=True)
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            info = self._write_contents(tmp, key, stage, tensors, meta, files, inputs, tensors_metadata)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "entry.json").is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)        # another process won the race: same content
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Entry(key, final, info)

    def _write_contents(self, tmp: Path, key: str, stage: dict, tensors, meta, files, inputs,
                        tensors_metadata=None) -> dict:
        info: dict[str, Any] = {"format": ENTRY_FORMAT, "key": key, "stage": stage, "meta": meta or {},
                                "inputs": inputs or {}, "created": time.time(), "has_tensors": bool(tensors)}
        size = 0
        if tensors:
            from safetensors.torch import save_file
            path = tmp / "state.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path),
                      metadata=tensors_metadata)
            info["tensors_size"] = path.stat().st_size
            info["tensors_sha256"] = _sha256_file(path)
            size += info["tensors_size"]
        records = {}
        if files:
            (tmp / "files").mkdir()
            for n, (name, data) in enumerate(sorted(files.items())):
                blob = f"{n}.bin"
                (tmp / "files" / blob).write_bytes(data)
                records[name] = {"sha256": sha256_bytes(data), "blob": blob, "size": len(data)}
                size += len(data)
        info["files"] = records
        info["size_bytes"] = size
        info["digest"] = entry_digest(info)
        _write_synced(tmp / "entry.json", json.dumps(info, sort_keys=True, indent=1).encode())
        if (tmp / "state.safetensors").exists():
            _fsync_file(tmp / "state.safetensors")
        (tmp / "used").touch()
        return info

    def evict(self, key: str) -> bool:
        """Remove an entry (moved out of sight in one rename, then deleted); False if it cannot be."""
        folder = self.entry_folder(key)
        if not folder.exists() and not os.path.islink(folder):
            return True
        if not self.is_marked():
            return False              # never delete in a folder that sdbake did not mark as its cache
        trash = self.root / "tmp" / f"evict-{key}.{uuid.uuid4().hex[:8]}"
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(folder, trash)
        except OSError:
            return False
        remove_tree_or_link(trash)
        return True

    def clean_stale_tmp(self, once: bool = False, grace_s: float = TMP_GRACE_S) -> int:
        """Remove what writers killed mid-write left in tmp/ (only names this module writes, older than
        the grace period, links removed as links); the number removed."""
        if once and self._tmp_cleaned:
            return 0
        self._tmp_cleaned = True
        removed = 0
        now = time.time()
        try:
            names = os.scandir(self.root / "tmp")
        except OSError:
            return 0
        with names:
            for item in names:
                if TMP_NAME.fullmatch(item.name) is None:
                    continue
                try:
                    age_s = now - item.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                if age_s > grace_s and remove_tree_or_link(Path(item.path)):
                    removed += 1
        return removed

    # -- listing --
    def entries(self) -> list[Entry]:
        """Every entry folder of this layout (objects/<2 hex>/<64 hex key>); other names are left alone."""
        found = []
        objects = self.root / "objects"
        if not objects.is_dir() or objects.is_symlink():
            return found
        for prefix in sorted(objects.iterdir()):
            if not re.fullmatch(r"[0-9a-f]{2}", prefix.name) or not prefix.is_dir() or prefix.is_symlink():
                continue
            for folder in sorted(prefix.iterdir()):
                if not is_key(folder.name) or folder.name[:2] != prefix.name:
                    continue
                try:
                    info = json.loads((folder / "entry.json").read_bytes().decode("utf-8"))
                except (OSError, ValueError, RecursionError):
                    info = None
                if structure_problem(info, folder.name) is not None:
                    info = {"key": folder.name, "corrupt": True}
                found.append(Entry(folder.name, folder, info))
        return found

    def last_used(self, entry: Entry) -> float:
        try:
            return (entry.folder / "used").stat().st_mtime
        except OSError:
            created = entry.info.get("created", 0.0)
            return created if isinstance(created, (int, float)) else 0.0

    # -- records for `plan` --
    def record_path(self, recipe_name: str, stage_id: str) -> Path:
        def safe(text: str) -> str:
            return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".") or "_"
        return self.root / "records" / (safe(recipe_name) or "recipe") / f"{safe(stage_id)}.json"

    def write_record(self, recipe_name: str, stage_id: str, key: str, inputs: dict) -> None:
        """Remember a stage's key inputs; a cache that cannot be written (read-only) only warns."""
        path = self.record_path(recipe_name, stage_id)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        try:
            self._ensure_marked()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"key": key, "inputs": inputs}, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        except (OSError, CacheError) as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self._say(f"cache record for {stage_id} not written ({_short_error(err)})")

    def read_record(self, recipe_name: str, stage_id: str) -> dict | None:
        try:
            record = json.loads(self.record_path(recipe_name, stage_id).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return record if isinstance(record, dict) else None


def _short_error(err: BaseException) -> str:
    if isinstance(err, OSError):
        return f"{err.strerror or err}: {err.filename}" if err.filename else str(err.strerror or err)
    return str(err)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
