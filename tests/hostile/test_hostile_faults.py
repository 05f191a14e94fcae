"""Faults while a run writes: a full disk, a read-only cache, the cache deleted mid-run, kill -9 in the
middle of an output write, a link planted while sampling runs. The run fails in one line or goes on
with a warning, and the next run recovers byte-identical output with no temporary files left."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_helpers import bring_baked_cache


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False):
    """A small tmpfs at folder (root only: skipped where mounting is not permitted)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".sdbake-tmp-*")] if folder.exists() else []


def test_disk_full_on_output_is_one_line_and_the_next_run_recovers(arena, baked):
    bring_baked_cache(arena, baked)
    with tmpfs(arena.out, "64k"):
        filler = arena.out / "filler"
        with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):   # no room left
            while True:
                handle.write(b"\0" * 1024)
                handle.flush()
        err = arena.sdbake("run", "r.toml", "-q", code=1, expect="disk full", max_s=20).errors[0]
        assert err.startswith("outputs/") and not temp_files(arena.out)
        filler.unlink()
        arena.sdbake("run", "r.toml", "-q", code=0, max_s=20)
        assert (arena.out / "baked.png").read_bytes() == baked["png"] and not temp_files(arena.out)


def test_a_read_only_cache_serves_hits_and_warns_about_records(arena, baked):
    arena.write("r.toml", baked["text"])
    with tmpfs(arena.cache, "8m"):
        shutil.copytree(baked["cache"], arena.cache, dirs_exist_ok=True)
        remount_read_only(arena.cache)
        ran = arena.sdbake("run", "r.toml", code=0, max_s=20)
        assert "HIT" in ran.err and "record for" in ran.err and "read-only" in ran.err.lower()
        assert (arena.out / "baked.png").read_bytes() == baked["png"]


def test_a_read_only_cache_without_mounting_serves_hits(arena, baked, monkeypatch):
    # The same promise where mounting is not permitted: every write into the cache fails with EROFS.
    import errno
    bring_baked_cache(arena, baked)
    real_mkdir, real_replace, cache = Path.mkdir, os.replace, str(arena.cache)

    def refuse_in_cache(path, *args, **kwargs):
        if str(path).startswith(cache):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: refuse_in_cache(self) or real_mkdir(self, *a, **k))
    monkeypatch.setattr(os, "replace", lambda a, b, **k: refuse_in_cache(b) or real_replace(a, b, **k))
    ran = arena.sdbake("run", "r.toml", code=0, max_s=20)
    assert "record for" in ran.err and (arena.out / "baked.png").read_bytes() == baked["png"]


def test_cache_deleted_mid_run_is_one_line_and_the_next_run_recovers(arena, baked):
    recipe = bring_baked_cache(arena, baked)
    from sdbake.runner.cache import CacheStore
    real_write_record = CacheStore.write_record
    deleted = []

    def delete_cache_once(self, *args, **kwargs):
        real_write_record(self, *args, **kwargs)
        if not deleted:
            deleted.append(shutil.rmtree(self.root))
    with pytest.MonkeyPatch.context() as patch:       # after encode's hit, the cache disappears
        patch.setattr(CacheStore, "write_record", delete_cache_once)
        arena.sdbake("run", recipe, "--refresh", "save", "-q", code=1, expect="vanished during the run",
                     max_s=60)
    arena.sdbake("run", recipe, "-q", code=0, max_s=120)
    assert (arena.out / "baked.png").read_bytes() == baked["png"] and not temp_files(arena.out)


PAUSED_OUTPUT_WRITER = """
import os, sys, time
import sdbake.stages.output.writer as writer
real_claim = writer._claim
def pause_before_claim(folder, temp, final):
    open(os.environ["PAUSED_MARKER"], "w").close()
    time.sleep(600)
writer._claim = pause_before_claim
from sdbake.runner.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_an_output_write_then_rerun_recovers_the_same_bytes(arena, baked):
    recipe = bring_baked_cache(arena, baked)
    marker = arena.root / "paused"
    writer = subprocess.Popen([sys.executable, "-c", PAUSED_OUTPUT_WRITER, "run", str(recipe), "-q"],
                              cwd=arena.work, env=dict(os.environ, PAUSED_MARKER=str(marker)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert writer.poll() is None, writer.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(writer.pid, signal.SIGKILL)
    writer.communicate(timeout=30)
    assert len(temp_files(arena.out)) == 1 and not (arena.out / "baked.png").exists()
    arena.sdbake("run", recipe, "-q", code=0, max_s=20)
    assert (arena.out / "baked.png").read_bytes() == baked["png"]
    assert not temp_files(arena.out)


def test_a_link_planted_while_the_run_works_does_not_redirect_the_write(arena, baked, monkeypatch):
    recipe = bring_baked_cache(arena, baked)
    from sdbake.runner import execute
    secret = arena.sentinel / "secret" / "hostname"
    real_materialize = execute.materialize

    def plant_then_write(plan, *args, **kwargs):
        plan.output_root.mkdir(parents=True, exist_ok=True)
        (plan.output_root / "baked.png").symlink_to(secret)
        return real_materialize(plan, *args, **kwargs)
    monkeypatch.setattr(execute, "materialize", plant_then_write)
    ran = arena.sdbake("run", recipe, code=0, max_s=20)
    assert "baked-1.png" in ran.out and (arena.out / "baked-1.png").read_bytes() == baked["png"]
    assert (arena.out / "baked.png").is_symlink()           # the snapshot shows the secret untouched


def test_a_folder_replaced_by_a_link_at_write_time_is_refused(arena):
    from sdbake.schemas.errors import OutputError
    from sdbake.stages.output.writer import write_new_file
    (arena.out / "sub").parent.mkdir(parents=True)
    (arena.out / "sub").symlink_to(arena.sentinel / "home")
    with pytest.raises(OutputError, match="symbolic link"):
        write_new_file(arena.out / "sub" / "x.png", b"data", root=arena.out)
    assert not (arena.sentinel / "home" / "x.png").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_files_honour_the_umask(arena, baked, umask, mode):
    recipe = bring_baked_cache(arena, baked)
    previous = os.umask(umask)
    try:
        arena.sdbake("run", recipe, "-q", code=0, max_s=20)
    finally:
        os.umask(previous)
    assert (arena.out / "baked.png").stat().st_mode & 0o777 == mode


def test_stale_temp_files_of_dead_writers_are_cleaned_and_live_ones_kept(arena, baked):
    from sdbake.stages.output import writer
    recipe = bring_baked_cache(arena, baked)
    arena.out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = arena.out / f".sdbake-tmp-{writer._HOST}-{dead.pid}-0123abcd"
    ancient = arena.out / ".sdbake-tmp-oldstyle"
    live = arena.out / f".sdbake-tmp-{writer._HOST}-{os.getppid()}-0123abce"
    for path in (stale, ancient, live):
        path.write_bytes(b"half an image")
    old = time.time() - 2 * writer.STALE_TEMP_S
    os.utime(ancient, (old, old))
    arena.sdbake("run", recipe, "-q", code=0, max_s=20)
    assert sorted(p.name for p in temp_files(arena.out)) == [live.name]


def test_invisible_characters_never_reach_a_file_name():
    from sdbake.stages.output.names import safe_relative_path
    rendered = "a\u202egnp.exe\u200b\u200d\ufeff\u2066b\u2028c.png"
    assert str(safe_relative_path(rendered, Path("/tmp"))) == "agnp.exeb_c.png"


def test_a_read_only_output_folder_is_one_line(arena, baked):
    recipe = bring_baked_cache(arena, baked)
    with tmpfs(arena.out, "1m"):
        remount_read_only(arena.out)
        err = arena.sdbake("run", recipe, "-q", code=1, expect="read-only file system", max_s=20).errors[0]
        assert err.startswith("outputs")


def test_a_junk_entry_json_in_a_run_is_evicted_and_recomputed(arena, baked):
    # One of the few renders here: the sample stage's entry.json is `[]`, so it runs again.
    recipe = bring_baked_cache(arena, baked)
    from sdbake.runner.cache import CacheStore
    store = CacheStore(arena.cache)
    (sample,) = [e for e in store.entries() if e.info.get("stage", {}).get("id") == "sample"]
    (sample.folder / "entry.json").write_text("[]")
    ran = arena.sdbake("run", recipe, code=0, max_s=120)
    assert "is corrupt" in ran.err and "sample: ran" in ran.err
    assert (arena.out / "baked.png").read_bytes() == baked["png"]


def test_a_corrupt_entry_that_cannot_be_evicted_fails_once_without_recursion(tmp_path, monkeypatch):
    # A read-only cache holding a corrupt entry: get -> put -> get used to recurse until RecursionError.
    from sdbake.runner.cache import CacheStore
    from sdbake.schemas.errors import CacheError
    key = "ab" + "4" * 62
    warned: list[str] = []
    store = CacheStore(tmp_path, warn=warned.append)
    store.put(key, stage={"id": "s"}, files={"0": b"x"})
    (store.entry_folder(key) / "entry.json").write_text("[]")
    monkeypatch.setattr(os, "rename", lambda *a, **k: (_ for _ in ()).throw(OSError(30, "Read-only file system")))
    with pytest.raises(CacheError, match="cannot be replaced"):
        store.put(key, stage={"id": "s"}, files={"0": b"x"})
    assert any("cannot be evicted" in w for w in warned)


def test_a_spandrel_that_fails_to_import_with_any_error_is_treated_as_absent(monkeypatch):
    import builtins

    from sdbake.runner.models import upscaler
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "spandrel":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)
    monkeypatch.delitem(sys.modules, "spandrel", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    assert upscaler._spandrel() is None


def test_a_read_only_cache_still_runs_a_miss_and_says_it_could_not_store_it(arena, baked):
    arena.write("r.toml", baked["text"])
    with tmpfs(arena.cache, "8m"):
        shutil.copytree(baked["cache"], arena.cache, dirs_exist_ok=True)
        from sdbake.runner.cache import CacheStore
        (save,) = [e for e in CacheStore(arena.cache).entries() if e.info["stage"]["id"] == "save"]
        shutil.rmtree(save.folder)                      # the save stage misses
        remount_read_only(arena.cache)
        ran = arena.sdbake("run", "r.toml", code=0, max_s=120)
        assert "save: ran" in ran.err and "stage save not stored in the cache" in ran.err
        assert (arena.out / "baked.png").read_bytes() == baked["png"]
