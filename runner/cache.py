"""Content-addressed stage cache on disk (docs/design.md section 5; the anchor is DVC's run cache).

Layout under the root (`--cache-dir`, else `$SDBAKE_CACHE`, else `~/.cache/sdbake/stages` on Linux):

    objects/ab/<key>/entry.json        what the stage was, its metadata, checksums, size
    objects/ab/<key>/state.safetensors the output state's tensors (absent for pass-through stages)
    objects/ab/<key>/files/<n>         side outputs (saved images, previews) as bytes
    objects/ab/<key>/used              its mtime is the entry's last use
    tmp/                               entries being written; renamed into objects/ when complete
    records/<recipe>/<stage id>.json   the last key inputs per stage, so `plan` can say why a miss missed

An entry is written in tmp/ and renamed into place in one step, so a reader sees a whole entry or
none; two writers of one key both succeed and one entry stays. Every read checks the checksums; a
corrupt entry is reported, evicted and recomputed. Nothing here imports torch: a fully cached run
only reads entry.json files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENTRY_FORMAT = 1


def default_cache_root() -> Path:
    """`$SDBAKE_CACHE`, else the user's cache folder (runner/locations.py): one default for every command."""
    from sdbake.runner.locations import default_stage_cache
    env = os.environ.get("SDBAKE_CACHE")
    root = Path(env).expanduser() if env else default_stage_cache()
    logging.getLogger(__name__).info("stage cache: %s", root)
    return root


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        return self.info.get("meta") or {}

    @property
    def files(self) -> dict[str, dict]:
        """Side outputs: {relative output path: {"sha256", "blob"}}."""
        return self.info.get("files") or {}

    def blob_bytes(self, rel: str) -> bytes:
        return (self.folder / "files" / self.files[rel]["blob"]).read_bytes()

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

    # -- paths --
    def entry_folder(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / key

    def has(self, key: str) -> bool:
        return (self.entry_folder(key) / "entry.json").is_file()

    # -- read --
    def get(self, key: str, verify: bool = True, touch: bool = True) -> Entry | None:
        """The entry for `key`, checked; None when absent. A corrupt entry is evicted with a warning.
        `touch=False` reads without counting as a use (for `cache verify`, so gc's LRU order survives)."""
        folder = self.entry_folder(key)
        try:
            info = json.loads((folder / "entry.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            # An entry folder is published whole by one rename: one without entry.json is damaged, and
            # left in place it would make every later put of this key fail.
            if folder.is_dir():
                self._evict_corrupt(key, "entry.json is missing")
            return None
        except (OSError, ValueError) as err:
            self._evict_corrupt(key, f"unreadable entry.json ({err})")
            return None
        entry = Entry(key, folder, info)
        if verify:
            reason = self._problem(entry)
            if reason:
                self._evict_corrupt(key, reason)
                return None
        if touch:
            self.touch(key)
        return entry

    def _problem(self, entry: Entry) -> str | None:
        info = entry.info
        if info.get("format") != ENTRY_FORMAT or info.get("key") != entry.key:
            return "entry.json does not describe this key"
        if info.get("has_tensors"):
            path = entry.folder / "state.safetensors"
            if not path.is_file():
                return "state.safetensors is missing"
            if path.stat().st_size != info.get("tensors_size") or _sha256_file(path) != info.get("tensors_sha256"):
                return "state.safetensors does not match its checksum"
        for rel, record in entry.files.items():
            blob = entry.folder / "files" / record["blob"]
            if not blob.is_file() or _sha256_file(blob) != record["sha256"]:
                return f"stored file for {rel} does not match its checksum"
        return None

    def _evict_corrupt(self, key: str, reason: str) -> None:
        message = f"cache entry {key[:12]} is corrupt ({reason}): evicted, recomputing"
        if self.warn:
            self.warn(message)
        else:
            warnings.warn(message, stacklevel=2)
        self.evict(key)

    def touch(self, key: str) -> None:
        used = self.entry_folder(key) / "used"
        try:
            used.touch()
        except OSError:
            pass                      # a read-only cache still serves hits

    # -- write --
    def put(self, key: str, *, stage: dict, tensors: dict[str, Any] | None = None, meta: dict | None = None,
            files: dict[str, bytes] | None = None, inputs: dict | None = None) -> Entry:
        """Store an entry atomically; if another process stored the same key first, keep theirs."""
        final = self.entry_folder(key)
        if final.is_dir() and (final / "entry.json").is_file():
            return self.get(key, verify=False) or self.put(key, stage=stage, tensors=tensors, meta=meta,
                                                           files=files, inputs=inputs)
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            info: dict[str, Any] = {"format": ENTRY_FORMAT, "key": key, "stage": stage, "meta": meta or {},
                                    "inputs": inputs or {}, "created": time.time(), "has_tensors": bool(tensors)}
            size = 0
            if tensors:
                from safetensors.torch import save_file
                path = tmp / "state.safetensors"
                save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
                info["tensors_size"] = path.stat().st_size
                info["tensors_sha256"] = _sha256_file(path)
                size += info["tensors_size"]
            records = {}
            if files:
                (tmp / "files").mkdir()
                for n, (rel, data) in enumerate(sorted(files.items())):
                    blob = f"{n}.bin"
                    (tmp / "files" / blob).write_bytes(data)
                    records[rel] = {"sha256": _sha256_bytes(data), "blob": blob, "size": len(data)}
                    size += len(data)
            info["files"] = records
            info["size_bytes"] = size
            _write_synced(tmp / "entry.json", json.dumps(info, sort_keys=True, indent=1).encode())
            for name in ("state.safetensors",):
                if (tmp / name).exists():
                    _fsync_file(tmp / name)
            (tmp / "used").touch()
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

    def evict(self, key: str) -> None:
        folder = self.entry_folder(key)
        if not folder.exists():
            return
        trash = self.root / "tmp" / f"evict-{key}.{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, trash)     # out of sight in one step, then removed
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    # -- listing --
    def entries(self) -> list[Entry]:
        found = []
        objects = self.root / "objects"
        if not objects.is_dir():
            return found
        for prefix in sorted(objects.iterdir()):
            for folder in sorted(prefix.iterdir()) if prefix.is_dir() else []:
                try:
                    info = json.loads((folder / "entry.json").read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    info = {"key": folder.name, "corrupt": True}
                found.append(Entry(folder.name, folder, info))
        return found

    def last_used(self, entry: Entry) -> float:
        try:
            return (entry.folder / "used").stat().st_mtime
        except OSError:
            return entry.info.get("created", 0.0)

    # -- records for `plan` --
    def record_path(self, recipe_name: str, stage_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in recipe_name) or "recipe"
        return self.root / "records" / safe / f"{stage_id}.json"

    def write_record(self, recipe_name: str, stage_id: str, key: str, inputs: dict) -> None:
        path = self.record_path(recipe_name, stage_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "inputs": inputs}, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    def read_record(self, recipe_name: str, stage_id: str) -> dict | None:
        try:
            return json.loads(self.record_path(recipe_name, stage_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


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
