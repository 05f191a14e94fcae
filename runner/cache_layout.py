"""What an sdbake cache looks like on disk, and the checks that a folder or an entry.json is one.

Kept apart from runner/cache.py (which reads and writes entries) because everything here treats the
cache as untrusted input: a shared or downloaded cache, or SDBAKE_CACHE pointed at the wrong folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

ENTRY_FORMAT = 2                  # 2: entry.json carries its own digest
MARKER_NAME = "SDBAKE-CACHE"
CACHEDIR_TAG = "CACHEDIR.TAG"
# The standard tag (https://bford.info/cachedir/): backup and sync tools skip a folder holding it.
CACHEDIR_TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                     "# This file is a cache directory tag created by sdbake.\n"
                     "# For information about cache directory tags see https://bford.info/cachedir/\n")
LAYOUT_NAMES = {"objects", "tmp", "records", MARKER_NAME, CACHEDIR_TAG}
TMP_GRACE_S = 3600                # a tmp/ folder younger than this may belong to a running writer
_KEY = re.compile(r"[0-9a-f]{64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
BLOB_NAME = re.compile(r"[0-9]{1,9}\.bin")
# What this module writes under tmp/: entries being written, evicted entries, record temp files.
TMP_NAME = re.compile(r"(?:evict-)?[0-9a-f]{64}\.(?:[0-9]+\.)?[0-9a-f]{8}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_digest(info: dict) -> str:
    """sha256 of an entry's content without its `digest` field, in one fixed JSON spelling."""
    body = {k: v for k, v in info.items() if k != "digest"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())


def is_key(text: Any) -> bool:
    return isinstance(text, str) and _KEY.fullmatch(text) is not None


def is_regular_file(path: Path) -> bool:
    """A plain file, not a link to one: a planted link must not make a hit read another file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def structure_problem(info: Any, key: str) -> str | None:
    """What is wrong with the shape of an entry.json (read from a cache that anyone may have written)."""
    if not isinstance(info, dict):
        return f"entry.json holds a {type(info).__name__}, not an object"
    if info.get("format") != ENTRY_FORMAT:
        return f"entry.json has format {info.get('format')!r}, expected {ENTRY_FORMAT}"
    if info.get("digest") != entry_digest(info):
        return "entry.json does not match its digest"
    if info.get("key") != key:
        return "entry.json does not describe this key"
    for name, kind in (("stage", dict), ("meta", dict), ("inputs", dict), ("files", dict),
                       ("has_tensors", bool), ("size_bytes", int)):
        if not isinstance(info.get(name), kind):
            return f"entry.json field {name!r} is not a {kind.__name__}"
    if info["has_tensors"] and (not isinstance(info.get("tensors_size"), int)
                                or not isinstance(info.get("tensors_sha256"), str)):
        return "entry.json lacks the tensors' size and checksum"
    for name, record in info["files"].items():
        if not name.isdigit() or not isinstance(record, dict):
            return f"entry.json names a stored file {name!r} that is not an output index"
        if not isinstance(record.get("blob"), str) or BLOB_NAME.fullmatch(record["blob"]) is None:
            return f"stored file {name} has a blob name {record.get('blob')!r} that is not a plain name"
        if not isinstance(record.get("sha256"), str) or _SHA256.fullmatch(record["sha256"]) is None:
            return f"stored file {name} has no valid sha256"
    return None


def remove_tree_or_link(path: Path) -> bool:
    """Delete a file, link or folder tree without following links; False if it stays."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
