"""Hostile caches: folders that are not caches, and entries of every broken or malicious shape. The
maintenance commands refuse what sdbake did not mark, delete only their own layout, never follow a
link out of the cache, and report a damaged entry as corrupt instead of serving or crashing on it."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from hostile_helpers import OLD_S

KEY = "ab" + "1" * 62
OTHER = "cd" + "2" * 62
COMMANDS = [["cache", "ls"], ["cache", "verify"], ["cache", "gc", "--max-size", "0"], ["cache", "clear"]]


def store(arena):
    from sdbake.runner.cache import CacheStore
    return CacheStore(arena.cache)


def put(arena, key: str = KEY, files: dict | None = None):
    return store(arena).put(key, stage={"id": "save", "type": "save", "recipe": "hostile"},
                            files=files if files is not None else {"0": b"image bytes"}, inputs={})


@pytest.mark.parametrize("folder", ["home", "album"])
@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_maintenance_refuses_a_folder_that_is_not_a_marked_cache(arena, monkeypatch, folder, command):
    # SDBAKE_CACHE pointed at the wrong folder: `gc` used to remove its old tmp/ project, `verify` the album.
    monkeypatch.setenv("SDBAKE_CACHE", str(arena.sentinel / folder))
    arena.sdbake(*command, code=1, expect="not an sdbake cache")


@pytest.mark.parametrize("command", COMMANDS[:2], ids=["ls", "verify"])
def test_a_cache_root_that_is_a_file_or_a_device_is_one_line(arena, command):
    arena.write("file-cache", "x")
    arena.sdbake(command[0], "--cache-dir", arena.work / "file-cache", command[1], code=1,
                 expect="is not a folder")
    arena.sdbake(command[0], "--cache-dir", "/dev/null", command[1], code=1, expect="is not a folder")


def test_a_marker_that_is_a_link_does_not_mark_a_folder(arena, monkeypatch):
    (arena.sentinel / "home" / "SDBAKE-CACHE").symlink_to(arena.sentinel / "secret" / "hostname")
    monkeypatch.setenv("SDBAKE_CACHE", str(arena.sentinel / "home"))
    arena.sdbake("cache", "gc", "--max-size", "0", code=1, expect="not an sdbake cache")


FOREIGN = ["objects/ab/abc-album/pic.jpg", "objects/zz/notes.txt", "tmp/my-project/main.c", "records.txt",
           "objects/ab/" + "f" * 64 + "/pic.jpg"]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_maintenance_touches_only_its_own_layout_in_a_marked_cache(arena, command):
    put(arena)
    old = time.time() - OLD_S
    for rel in FOREIGN:
        path = arena.cache / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep me")
        os.utime(path, (old, old))
        os.utime(path.parent, (old, old))
    arena.sdbake(*command, code=0)
    assert all((arena.cache / rel).read_text() == "keep me" for rel in FOREIGN)


def test_gc_removes_abandoned_writes_and_links_without_following_them(arena):
    put(arena)
    tmp = arena.cache / "tmp"
    abandoned = tmp / f"{OTHER}.4242.deadbeef"
    abandoned.mkdir(parents=True)
    (abandoned / "entry.json").write_text("{}")
    dangling = tmp / f"{OTHER}.4243.deadbeee"
    dangling.symlink_to(arena.root / "nowhere")
    outward = tmp / f"evict-{OTHER}.deadbeed"
    outward.symlink_to(arena.sentinel / "home")
    foreign_link = tmp / "their-link"
    foreign_link.symlink_to(arena.root / "nowhere")
    old = time.time() - OLD_S
    for path in (abandoned, dangling, outward, foreign_link):
        os.utime(path, (old, old), follow_symlinks=False)
    out = arena.sdbake("cache", "gc", code=0).out
    assert "removed 3 abandoned" in out
    assert sorted(p.name for p in tmp.iterdir()) == ["their-link"]


def entry_json(arena, key: str = KEY):
    return store(arena).entry_folder(key) / "entry.json"


def rewrite(arena, change, digest: bool = True, key: str = KEY) -> None:
    """Edit an entry.json as an attacker would, recomputing its digest unless told not to."""
    from sdbake.runner.cache import entry_digest
    path = entry_json(arena, key)
    info = json.loads(path.read_text())
    change(info)
    if digest:
        info["digest"] = entry_digest(info)
    path.write_text(json.dumps(info))


def blob_path(value):
    return lambda info: info["files"]["0"].update(blob=value)


def set_field(name, value):
    return lambda info: info.update({name: value})


DAMAGE = [   # (id, what to do to a stored entry) -> `cache verify` evicts it as corrupt
    ("entry-json-list", lambda a: entry_json(a).write_text("[]")),
    ("entry-json-number", lambda a: entry_json(a).write_text("7")),
    ("entry-json-garbage", lambda a: entry_json(a).write_text("{not json")),
    ("entry-json-empty", lambda a: entry_json(a).write_text("")),
    ("entry-json-invalid-utf8", lambda a: entry_json(a).write_bytes(b'{"key": "\xff"}')),
    ("entry-json-100k-deep", lambda a: entry_json(a).write_text("[" * 100_000 + "]" * 100_000)),
    ("entry-json-is-a-folder", lambda a: (entry_json(a).unlink(), entry_json(a).mkdir())),
    ("entry-json-link-to-secret", lambda a: (entry_json(a).unlink(),
                                             entry_json(a).symlink_to(a.sentinel / "secret" / "hostname"))),
    ("flipped-bit-no-digest", lambda a: entry_json(a).write_text(
        entry_json(a).read_text().replace('"size": 11', '"size": 13'))),
    ("key-rewritten", lambda a: rewrite(a, set_field("key", OTHER), digest=False)),
    ("format-1", lambda a: rewrite(a, set_field("format", 1))),
    ("files-a-string", lambda a: rewrite(a, set_field("files", "x"))),
    ("files-entry-a-list", lambda a: rewrite(a, set_field("files", {"0": []}))),
    ("files-name-not-an-index", lambda a: rewrite(a, set_field("files", {"../x": {"blob": "0.bin", "sha256": "0" * 64}}))),
    ("stage-a-list", lambda a: rewrite(a, set_field("stage", []))),
    ("size-a-string", lambda a: rewrite(a, set_field("size_bytes", "big"))),
    ("has-tensors-without-checksums", lambda a: rewrite(a, set_field("has_tensors", True))),
    ("blob-dotdot-etc-hostname", lambda a: rewrite(a, blob_path("../../../../etc/hostname"))),
    ("blob-absolute", lambda a: rewrite(a, blob_path(str(a.sentinel / "secret" / "hostname")))),
    ("blob-a-number", lambda a: rewrite(a, blob_path(5))),
    ("blob-link-to-secret", lambda a: ((store(a).entry_folder(KEY) / "files" / "0.bin").unlink(),
                                       (store(a).entry_folder(KEY) / "files" / "0.bin").symlink_to(
                                           a.sentinel / "secret" / "hostname"))),
    ("blob-bytes-changed", lambda a: (store(a).entry_folder(KEY) / "files" / "0.bin").write_bytes(b"other bytes")),
    ("entry-json-missing", lambda a: entry_json(a).unlink()),
]


@pytest.mark.parametrize("damage", [c[1] for c in DAMAGE], ids=[c[0] for c in DAMAGE])
def test_a_damaged_or_malicious_entry_is_reported_corrupt_and_evicted(arena, damage):
    put(arena)
    damage(arena)
    for command in (["cache", "ls"], ["cache", "gc"]):
        arena.sdbake(*command, code=0)
    verified = arena.sdbake("cache", "verify", code=1, expect="1 corrupt", report=True)
    assert "verified 1 entries" in verified.out
    assert not store(arena).entry_folder(KEY).exists()
    assert store(arena).get(KEY) is None


def test_a_blob_path_escaping_the_entry_is_never_read_by_a_hit(arena):
    put(arena)
    secret = arena.sentinel / "secret" / "hostname"
    import hashlib
    rewrite(arena, lambda info: info["files"]["0"].update(
        blob="../../../../../sentinel/secret/hostname", sha256=hashlib.sha256(secret.read_bytes()).hexdigest()))
    warned = []
    from sdbake.runner.cache import CacheStore
    assert CacheStore(arena.cache, warn=warned.append).get(KEY) is None
    assert "not a plain name" in warned[0]


def test_an_entry_folder_that_is_a_link_is_evicted_without_touching_its_target(arena):
    put(arena)
    folder = store(arena).entry_folder(OTHER)
    folder.parent.mkdir(parents=True)
    folder.symlink_to(arena.sentinel / "home")
    arena.sdbake("cache", "verify", code=1, expect="1 corrupt", report=True)
    assert not os.path.lexists(folder)


def test_a_prefix_folder_that_is_a_link_is_left_alone(arena):
    put(arena)
    (arena.cache / "objects" / "ee").symlink_to(arena.sentinel / "album" / "objects" / "ab")
    for command in COMMANDS:
        arena.sdbake(*command, code=0)
    assert (arena.cache / "objects" / "ee").is_symlink()


@pytest.mark.parametrize("record", ["[]", "{", "[" * 100_000 + "]" * 100_000, '{"key": 5, "inputs": []}'])
def test_a_junk_plan_record_does_not_break_plan(arena, record):
    from hostile_helpers import recipe
    arena.write("r.toml", recipe())
    folder = arena.cache / "records" / "hostile"
    folder.mkdir(parents=True)
    for stage in ("encode", "sample", "save"):
        (folder / f"{stage}.json").write_text(record)
    shutil.copy(arena.work / "r.toml", arena.work / "copy.toml")
    arena.sdbake("plan", "r.toml", code=0)
