"""sha256 of weight files with an index keyed by (path, size, mtime); `sdbake models hash|ls`."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from sdbake.runner.models import hashing


@pytest.fixture
def private_index(isolated_env):
    """The index's default place in the test's own cache folder (conftest.isolated_env)."""
    return isolated_env.cache / "sdbake" / "hash-index.json"


def _weights(tmp_path, content: bytes = b"weights" * 1000):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    return path


def test_sha256_matches_hashlib_and_short_hash_is_a1111s(tmp_path):
    path = _weights(tmp_path)
    sha = hashing.sha256_file(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hashing.short_hash(sha) == sha[:10]


def test_warm_index_does_not_read_the_file(tmp_path, monkeypatch, private_index):
    path = _weights(tmp_path)
    cold = hashing.sha256_file(path)
    assert private_index.is_file()
    assert hashing.cached_sha256(path) == cold

    def must_not_hash(_path):
        raise AssertionError("file re-read despite a warm index")

    monkeypatch.setattr(hashing, "sha256_uncached", must_not_hash)
    assert hashing.sha256_file(path) == cold


def test_changed_file_is_hashed_again(tmp_path):
    path = _weights(tmp_path)
    first = hashing.sha256_file(path)
    path.write_bytes(b"other weights")
    os.utime(path, ns=(1, 1))
    assert hashing.sha256_file(path) == hashlib.sha256(b"other weights").hexdigest() != first
    entries = json.loads(hashing.index_path().read_text())
    assert len(entries) == 1            # the stale entry for the old contents is dropped


def test_corrupt_index_is_ignored_and_rebuilt(tmp_path, private_index):
    path = _weights(tmp_path)
    private_index.parent.mkdir(parents=True)
    private_index.write_text("{ not json")
    assert hashing.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(private_index.read_text())       # rewritten as valid JSON


def test_hashing_and_search_do_not_import_torch():
    code = ("import sys, runner.models.hashing, runner.models.search, runner.commands.models; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_cli_models_hash_prints_sha_short_hash_and_path(tmp_path, capsys):
    from sdbake.runner.cli import main
    path = _weights(tmp_path)
    assert main(["models", "hash", str(path)]) == 0
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert capsys.readouterr().out == f"{sha}  {sha[:10]}  {path}\n"


def test_cli_models_hash_missing_file_is_one_error_line(tmp_path, capsys):
    from sdbake.runner.cli import main
    assert main(["models", "hash", str(tmp_path / "nope.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.safetensors" in err


def test_cli_models_ls_shows_known_hashes(tmp_path, monkeypatch, capsys):
    from sdbake.runner.cli import main
    folder = tmp_path / "ckpts"
    folder.mkdir()
    hashed = folder / "hashed.safetensors"
    hashed.write_bytes(b"a")
    (folder / "unhashed.safetensors").write_bytes(b"b")
    (folder / "notes.txt").write_text("not a model")
    sha = hashing.sha256_file(hashed)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sdbake.toml").write_text('[folders]\ncheckpoints = ["ckpts"]\n')
    assert main(["models", "ls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[checkpoints] {folder}"
    assert out[1] == f"  {sha[:10]}  hashed.safetensors"
    assert out[2].strip() == "unhashed.safetensors"
    assert len(out) == 3
