"""The registry loads each model once per process and keeps at most N in an LRU."""
from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")

from sdbake.runner.models.registry import ModelRegistry, ModelSpec, default_registry


def test_each_model_loads_once_and_is_shared(tiny_model_dir):
    registry = ModelRegistry(max_models=2)
    spec = ModelSpec(tiny_model_dir)
    first = registry.get(spec)
    assert registry.get(ModelSpec(tiny_model_dir)) is first
    assert registry.loads == 1


def test_same_bytes_under_another_name_is_the_same_model(tmp_path, tiny_single_file, tiny_model_dir):
    copy = tmp_path / "renamed.safetensors"
    shutil.copyfile(tiny_single_file, copy)
    registry = ModelRegistry()
    a = registry.get(ModelSpec(tiny_single_file, config=tiny_model_dir))
    assert registry.get(ModelSpec(copy, config=tiny_model_dir)) is a


def test_lru_evicts_least_recently_used(tmp_path):
    files = []
    for name in "abc":
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(name.encode())
        files.append(path)
    loaded = []
    registry = ModelRegistry(max_models=2, loader=lambda spec: loaded.append(spec.checkpoint.name) or object())
    a, b, c = (ModelSpec(f) for f in files)
    registry.get(a)
    registry.get(b)
    registry.get(a)            # a is now the most recent: b goes first
    registry.get(c)
    assert b not in registry and a in registry and c in registry
    registry.get(a)            # still resident: no reload
    registry.get(b)            # evicted: loads again
    assert loaded == ["a.safetensors", "b.safetensors", "c.safetensors", "b.safetensors"]


def test_device_and_dtype_are_part_of_the_key(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"m")
    registry = ModelRegistry(max_models=4, loader=lambda spec: object())
    registry.get(ModelSpec(path))
    registry.get(ModelSpec(path, dtype=torch.bfloat16))
    assert registry.loads == 2 and len(registry) == 2


def test_default_registry_is_process_wide():
    assert default_registry() is default_registry()
