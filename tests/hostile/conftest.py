"""Fixtures of the hostile-input corpus: an arena per test, and one tiny render shared by the session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))      # `import hostile_helpers`

from hostile_helpers import Arena


@pytest.fixture
def arena(tmp_path, monkeypatch, capsys) -> Arena:
    monkeypatch.setenv("SDBAKE_THREADS", "1")
    monkeypatch.setenv("SDBAKE_HASH_INDEX", str(tmp_path / "index" / "hash-index.json"))
    monkeypatch.setenv("SDBAKE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SDBAKE_DEBUG", raising=False)
    made = Arena(tmp_path, capsys)
    monkeypatch.chdir(made.work)
    return made


BAKED_STEPS = 2


@pytest.fixture(scope="session")
def baked(tmp_path_factory, tiny_model_dir):
    """One tiny render (the only torch work most cache tests need): its recipe text and a filled cache.
    A test copies the cache into its arena; its runs are then hits, which import no torch."""
    pytest.importorskip("torch")
    from recipe_helpers import txt2img
    from sdbake.runner.cli import main
    folder = tmp_path_factory.mktemp("baked")
    text = txt2img(tiny_model_dir, steps=BAKED_STEPS, size=64, path="baked.png", name="baked")
    (folder / "r.toml").write_text(text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SDBAKE_THREADS", "1")
        patch.setenv("SDBAKE_HASH_INDEX", str(folder / "hash-index.json"))
        assert main(["run", str(folder / "r.toml"), "--out", str(folder / "out"), "--cache-dir",
                     str(folder / "cache"), "-q"]) == 0
    return {"text": text, "cache": folder / "cache", "png": (folder / "out" / "baked.png").read_bytes()}
