"""The on-disk stage cache: atomic entries, checksums on read, corrupt entries evicted, racing writers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sdbake.runner.cache import CacheStore, default_cache_root

KEY = "ab" + "0" * 62
OTHER_KEY = "cd" + "1" * 62
ROOT = Path(__file__).resolve().parent.parent


def store_with_warnings(root: Path) -> tuple[CacheStore, list[str]]:
    warned: list[str] = []
    return CacheStore(root, warn=warned.append), warned


def put_state(store: CacheStore, key: str = KEY, files: dict[str, bytes] | None = None):
    import torch
    tensors = {"latent": torch.arange(64, dtype=torch.float32).reshape(1, 4, 4, 4)}
    return store.put(key, stage={"id": "sample", "type": "sample", "recipe": "r"}, tensors=tensors,
                     meta={"state": {"step": 3}}, files=files, inputs={"params": {"steps": 3}})


def test_entry_round_trips_tensors_meta_and_files(tmp_path):
    import torch
    store, warned = store_with_warnings(tmp_path)
    put_state(store, files={"0": b"png bytes"})
    entry = store.get(KEY)
    assert entry is not None and not warned
    expected = torch.arange(64, dtype=torch.float32).reshape(1, 4, 4, 4)
    assert torch.equal(entry.load_tensors()["latent"], expected)
    assert entry.meta == {"state": {"step": 3}}
    assert entry.blob_bytes("0") == b"png bytes"
    assert entry.folder == tmp_path / "objects" / "ab" / KEY


def test_entry_records_size_checksum_and_last_use(tmp_path):
    store, _ = store_with_warnings(tmp_path)
    put_state(store, files={"0": b"12345"})
    info = json.loads((store.entry_folder(KEY) / "entry.json").read_text())
    tensors_size = (store.entry_folder(KEY) / "state.safetensors").stat().st_size
    assert info["size_bytes"] == tensors_size + 5
    assert len(info["tensors_sha256"]) == 64 and info["files"]["0"]["size"] == 5
    used = store.entry_folder(KEY) / "used"
    os.utime(used, (1_000_000, 1_000_000))
    store.get(KEY)
    assert used.stat().st_mtime > time.time() - 60          # a read is a use


def test_a_pass_through_entry_stores_no_tensors(tmp_path):
    store, _ = store_with_warnings(tmp_path)
    store.put(KEY, stage={"id": "save"}, files={"0": b"image"})
    entry = store.get(KEY)
    assert entry.load_tensors() == {} and not (entry.folder / "state.safetensors").exists()


def test_a_failed_write_leaves_no_entry_and_no_temporary_folder(tmp_path, monkeypatch):
    store, _ = store_with_warnings(tmp_path)

    def crash(path, data):
        raise OSError("disk full")
    monkeypatch.setattr("sdbake.runner.cache._write_synced", crash)
    with pytest.raises(OSError):
        put_state(store)
    assert not store.has(KEY) and store.get(KEY) is None
    assert list((tmp_path / "tmp").iterdir()) == []


def test_an_abandoned_temporary_folder_is_never_served(tmp_path):
    # What kill -9 during a write leaves behind: a half-written folder under tmp/, never renamed.
    store, warned = store_with_warnings(tmp_path)
    half = tmp_path / "tmp" / f"{KEY}.4242.deadbeef"
    half.mkdir(parents=True)
    (half / "state.safetensors").write_bytes(b"\x00" * 10)
    assert store.get(KEY) is None and store.entries() == [] and not warned
    put_state(store)
    assert store.get(KEY) is not None


def flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip tensor byte", "truncate tensors", "delete tensors",
                                    "flip blob byte", "garbage entry.json", "entry for another key"])
def test_a_corrupt_entry_is_evicted_with_a_warning(tmp_path, damage):
    store, warned = store_with_warnings(tmp_path)
    folder = put_state(store, files={"0": b"some image bytes"}).folder
    tensors = folder / "state.safetensors"
    if damage == "flip tensor byte":
        flip_byte(tensors)
    elif damage == "truncate tensors":
        tensors.write_bytes(tensors.read_bytes()[:-7])
    elif damage == "delete tensors":
        tensors.unlink()
    elif damage == "flip blob byte":
        flip_byte(folder / "files" / "0.bin", 0)
    elif damage == "garbage entry.json":
        (folder / "entry.json").write_text("{not json")
    else:
        info = json.loads((folder / "entry.json").read_text())
        (folder / "entry.json").write_text(json.dumps(dict(info, key=OTHER_KEY)))
    assert store.get(KEY) is None
    assert len(warned) == 1 and "corrupt" in warned[0] and KEY[:12] in warned[0]
    assert not folder.exists() and not store.has(KEY)


def test_an_entry_folder_without_its_entry_json_is_evicted_and_stored_again(tmp_path):
    # Regression: such a folder used to read as absent but stay, and every later put of the key failed.
    store, warned = store_with_warnings(tmp_path)
    folder = put_state(store).folder
    (folder / "entry.json").unlink()
    assert store.get(KEY) is None
    assert len(warned) == 1 and "entry.json is missing" in warned[0] and not folder.exists()
    put_state(store)
    assert store.get(KEY) is not None


def test_without_a_warn_callback_corruption_is_a_python_warning(tmp_path):
    store = CacheStore(tmp_path)
    flip_byte(put_state(store).folder / "state.safetensors")
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.get(KEY) is None


def test_a_second_put_of_one_key_keeps_the_first_entry(tmp_path):
    store, _ = store_with_warnings(tmp_path)
    first = put_state(store)
    created = first.info["created"]
    second = store.put(KEY, stage={"id": "other"}, files={"0": b"different"})
    assert second.info["created"] == created and store.get(KEY).info["stage"]["id"] == "sample"
    assert [e.key for e in store.entries()] == [KEY]


RACER = """
import sys, time
from sdbake.runner.cache import CacheStore
store = CacheStore(sys.argv[1])
start = float(sys.argv[2])
while time.time() < start:
    pass
for n in range(40):
    key = f"{n:02d}" + "e" * 62
    store.put(key, stage={"id": f"s{n}"}, files={"0": b"same bytes for every writer " * 200})
"""


def test_racing_writers_of_the_same_keys_all_succeed_and_leave_one_valid_entry_each(tmp_path):
    start = time.time() + 1.5
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(start)], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for racer in racers:
        _, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err
    store, warned = store_with_warnings(tmp_path)
    entries = store.entries()
    assert len(entries) == 40
    assert all(store.get(entry.key) is not None for entry in entries) and not warned
    assert list((tmp_path / "tmp").iterdir()) == []


def test_evict_removes_the_entry(tmp_path):
    store, _ = store_with_warnings(tmp_path)
    put_state(store)
    store.put(OTHER_KEY, stage={"id": "save"}, files={"0": b"x"})
    store.evict(KEY)
    assert [e.key for e in store.entries()] == [OTHER_KEY]
    store.evict(KEY)                                   # evicting what is gone is a no-op


def test_records_keep_the_last_key_inputs_per_stage(tmp_path):
    store, _ = store_with_warnings(tmp_path)
    assert store.read_record("my recipe", "sample") is None
    store.write_record("my recipe", "sample", KEY, {"params": {"cfg": 5.0}})
    store.write_record("my recipe", "sample", OTHER_KEY, {"params": {"cfg": 6.0}})
    assert store.read_record("my recipe", "sample") == {"key": OTHER_KEY, "inputs": {"params": {"cfg": 6.0}}}


def test_explain_miss_names_the_changed_inputs(tmp_path):
    from types import SimpleNamespace

    from sdbake.runner.explain import explain_miss
    store, _ = store_with_warnings(tmp_path)
    old = {"params": {"denoise": 0.5, "steps": 4}, "input": "k1", "model": {"checkpoint": "aa"}}
    store.write_record("r", "hires", KEY, old)
    same = SimpleNamespace(id="hires", key=KEY, inputs=old)
    assert explain_miss(store, "r", same) == "entry evicted"
    edited = SimpleNamespace(id="hires", key=OTHER_KEY, inputs=dict(old, params={"denoise": 0.6, "steps": 4}))
    assert explain_miss(store, "r", edited) == "changed: denoise"
    upstream = SimpleNamespace(id="hires", key=OTHER_KEY, inputs=dict(old, input="k2"))
    assert explain_miss(store, "r", upstream) == "its input changed"
    assert explain_miss(store, "r", SimpleNamespace(id="new", key=KEY, inputs={})) == "never ran"


def test_cache_root_is_the_user_cache_folder_or_the_environment(tmp_path, monkeypatch, isolated_env):
    monkeypatch.chdir(tmp_path)
    assert default_cache_root() == isolated_env.cache / "sdbake" / "stages"       # $XDG_CACHE_HOME/sdbake
    monkeypatch.setenv("SDBAKE_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_root() == tmp_path / "elsewhere"
