"""`sdbake plan` (HIT/MISS, key prefixes, why a miss misses) and `sdbake cache ls|verify|gc|clear`."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recipe_helpers import txt2img, write

DAY_S = 86400


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SDBAKE_CACHE", str(tmp_path / "cache"))


def sdbake(capsys, *args) -> tuple[int, str, str]:
    from sdbake.runner.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def five_stages(model: Path, denoise: float = 0.5) -> str:
    hires = f'[[stages]]\ntype = "hires"\nscale = 1.5\ndenoise = {denoise}\nsteps = 2\n'
    return txt2img(model, steps=6, split=4, extra_stages=hires, path="p.png", name="planned")


def plan_lines(capsys, recipe: Path) -> dict[str, str]:
    code, out, _ = sdbake(capsys, "plan", recipe)
    assert code == 0
    return {line.split()[0]: line for line in out.splitlines()[1:]}


# -- plan ------------------------------------------------------------------------------------------

def test_plan_shows_hit_or_miss_with_key_prefixes_and_why_a_miss_misses(capsys, env, tmp_path,
                                                                         tiny_model_dir):
    pytest.importorskip("torch")
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    recipe = write(tmp_path, "p.toml", five_stages(tiny_model_dir))
    before = plan_lines(capsys, recipe)
    assert list(before) == ["encode", "sample-1", "sample-2", "hires", "save"]
    assert all(" MISS " in line and "(never ran)" in line for line in before.values())

    assert sdbake(capsys, "run", recipe, "--out", tmp_path / "out")[0] == 0
    keys = {inv.id: inv.key for inv in make_plan(load_recipe(recipe), threads=1).invocations}
    after = plan_lines(capsys, recipe)
    for stage, line in after.items():
        assert line.split()[1:] == ["HIT", keys[stage][:12]], line

    write(tmp_path, "p.toml", five_stages(tiny_model_dir, denoise=0.7))
    edited = plan_lines(capsys, recipe)
    assert all(" HIT " in edited[s] for s in ("encode", "sample-1", "sample-2"))
    assert " MISS " in edited["hires"] and edited["hires"].endswith("(changed: denoise)")
    assert " MISS " in edited["save"] and edited["save"].endswith("(its input changed)")


def test_plan_and_a_fully_cached_run_import_neither_torch_nor_diffusers(env, tmp_path, tiny_model_dir):
    pytest.importorskip("torch")
    recipe = write(tmp_path, "p.toml", txt2img(tiny_model_dir, steps=4, path="q.png", name="light"))
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    render(load_recipe(recipe), output_root=tmp_path / "out", cache_dir=tmp_path / "cache", threads=1)
    probe = ("import sys; from sdbake.runner.cli import main; code = main(sys.argv[1:]); "
             "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
             "print('heavy:', heavy); "
             "sys.exit(code)")
    for command in (["plan", str(recipe)], ["run", str(recipe), "--out", str(tmp_path / "out")]):
        done = subprocess.run([sys.executable, "-c", probe, *command], check=False, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "heavy: []" in done.stdout, (command, done.stdout)
    assert "MISS" not in done.stderr and "q.png" in done.stdout


# -- cache ls / verify / gc / clear on entries made directly ---------------------------------------

def fill(cache: Path, sizes_by_age_days: dict[str, tuple[int, float]]):
    """Entries named by stage id, with `size` bytes each, last used `age` days ago."""
    from sdbake.runner.cache import CacheStore
    store = CacheStore(cache)
    keys = {}
    for n, (stage, (size, age_days)) in enumerate(sizes_by_age_days.items()):
        key = f"{n:02x}" + stage.encode().hex().ljust(62, "0")[:62]
        store.put(key, stage={"id": stage, "type": "sample", "recipe": "r"}, files={"0": b"x" * size})
        used_at = time.time() - age_days * DAY_S
        os.utime(store.entry_folder(key) / "used", (used_at, used_at))
        keys[stage] = key
    return store, keys


def remaining(store) -> list[str]:
    return sorted(entry.info["stage"]["id"] for entry in store.entries())


def test_cache_ls_lists_entries_most_recently_used_first(capsys, tmp_path):
    _, keys = fill(tmp_path / "c", {"old": (1000, 5), "new": (3000, 0.01), "mid": (2048, 1)})
    code, out, _ = sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "ls")
    lines = out.splitlines()
    assert code == 0 and [line.split()[-1] for line in lines[:3]] == ["r:new", "r:mid", "r:old"]
    assert lines[0].split()[0] == keys["new"][:12] and lines[0].split()[1] == "2.9K"
    assert lines[-1].startswith("3 entries, 5.9K")


def test_cache_verify_is_clean_then_evicts_a_corrupt_entry(capsys, tmp_path):
    store, keys = fill(tmp_path / "c", {"a": (100, 0), "b": (100, 0)})
    code, out, _ = sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "verify")
    assert code == 0 and "verified 2 entries: 0 corrupt" in out
    blob = store.entry_folder(keys["b"]) / "files" / "0.bin"
    blob.write_bytes(b"y" + blob.read_bytes()[1:])
    code, out, err = sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "verify")
    assert err.startswith(f"warning: cache entry {keys['b'][:12]} is corrupt")
    assert code == 1 and f"corrupt: {keys['b'][:12]} (evicted)" in out and "1 corrupt" in out
    assert remaining(store) == ["a"]


def test_cache_verify_is_not_a_use(capsys, tmp_path):
    # Regression: verify used to mark every entry as just used, so a later gc evicted in arbitrary order.
    store, _ = fill(tmp_path / "c", {"new": (4000, 1), "old": (4000, 9)})   # "new" is listed first
    assert sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "verify")[0] == 0
    sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "gc", "--max-size", "5000")
    assert remaining(store) == ["new"]


def test_gc_max_size_evicts_least_recently_used_first(capsys, tmp_path):
    store, _ = fill(tmp_path / "c", {"oldest": (4000, 30), "older": (4000, 3), "recent": (4000, 1),
                                     "newest": (4000, 0)})
    code, out, _ = sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "gc", "--max-size", "9K")
    assert code == 0 and "evicted 2 entries" in out
    assert remaining(store) == ["newest", "recent"]


def test_gc_reads_a_use_as_a_use(capsys, tmp_path):
    store, keys = fill(tmp_path / "c", {"first": (4000, 3), "second": (4000, 2)})
    assert store.get(keys["first"]) is not None          # a hit makes it the most recently used
    sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "gc", "--max-size", "5000")
    assert remaining(store) == ["first"]


def test_gc_older_than_evicts_entries_unused_for_that_many_days(capsys, tmp_path):
    store, _ = fill(tmp_path / "c", {"stale": (10, 40), "aging": (10, 8), "fresh": (10, 0.5)})
    code, out, _ = sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "gc", "--older-than", "7")
    assert code == 0 and "evicted 2 entries" in out and remaining(store) == ["fresh"]


def test_gc_never_touches_a_young_temporary_folder_but_removes_an_abandoned_one(capsys, tmp_path):
    store, _ = fill(tmp_path / "c", {"kept": (10, 0)})
    tmp = tmp_path / "c" / "tmp"
    being_written = tmp / ("ab" * 32 + ".999.00000000")
    abandoned = tmp / ("cd" * 32 + ".998.11111111")
    for folder in (being_written, abandoned):
        folder.mkdir(parents=True)
        (folder / "state.safetensors").write_bytes(b"partial")
    two_days_ago = time.time() - 2 * DAY_S
    os.utime(abandoned, (two_days_ago, two_days_ago))
    code, _, _ = sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "gc", "--max-size", "0")
    assert code == 0 and remaining(store) == []
    assert (being_written / "state.safetensors").read_bytes() == b"partial"
    assert not abandoned.exists()


def test_gc_rejects_a_size_it_cannot_read(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "gc", "--max-size", "lots")
    assert exit_info.value.code == 2 and "not a size: 'lots'" in capsys.readouterr().err


@pytest.mark.parametrize("text, size_bytes", [("500", 500), ("2K", 2048), ("1.5m", 1536 * 1024),
                                              ("3G", 3 << 30), ("10 MB", 10 << 20)])
def test_sizes_read_as_binary_units(text, size_bytes):
    from sdbake.runner.commands.cache import parse_size
    assert parse_size(text) == size_bytes


def test_cache_clear_removes_every_entry(capsys, tmp_path):
    store, _ = fill(tmp_path / "c", {"a": (10, 0), "b": (10, 1), "c": (10, 2)})
    code, out, _ = sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "clear")
    assert code == 0 and out.startswith("cleared 3 entries") and store.entries() == []
    code, out, _ = sdbake(capsys, "cache", "--cache-dir", tmp_path / "c", "ls")
    assert out.startswith("0 entries")
