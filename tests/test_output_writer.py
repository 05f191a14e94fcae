"""write_new_file: never overwrite, idempotent, atomic even with two processes racing."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sdbake.schemas.errors import OutputError
from sdbake.stages.output.writer import write_new_file

REPO_ROOT = Path(__file__).resolve().parents[1]


def folder_snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """{relative name: (sha256, mtime_ns)} of every file: equal snapshots = untouched folder."""
    return {str(path.relative_to(folder)): (hashlib.sha256(path.read_bytes()).hexdigest(),
                                            path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_first_write_creates_the_target_and_its_folders(tmp_path):
    target = tmp_path / "out" / "sub" / "a.png"
    result = write_new_file(target, b"one")
    assert (result.path, result.status) == (target, "written")
    assert target.read_bytes() == b"one"


def test_save_never_overwrites_existing_file_but_numbers_the_new_one(tmp_path):
    target = tmp_path / "a.png"
    write_new_file(target, b"one")
    second = write_new_file(target, b"two")
    third = write_new_file(target, b"three")
    assert (second.path.name, second.status) == ("a-1.png", "written")
    assert (third.path.name, third.status) == ("a-2.png", "written")
    assert [target.read_bytes(), second.path.read_bytes()] == [b"one", b"two"]


def test_identical_bytes_at_target_or_numbered_sibling_are_left_alone(tmp_path):
    target = tmp_path / "a.png"
    write_new_file(target, b"one")
    write_new_file(target, b"two")
    before = folder_snapshot(tmp_path)
    time.sleep(0.01)
    again_one = write_new_file(target, b"one")
    again_two = write_new_file(target, b"two")
    assert (again_one.path.name, again_one.status) == ("a.png", "identical")
    assert (again_two.path.name, again_two.status) == ("a-1.png", "identical")
    assert folder_snapshot(tmp_path) == before


def test_skip_leaves_a_different_file_and_writes_nothing(tmp_path):
    target = tmp_path / "a.png"
    write_new_file(target, b"one")
    result = write_new_file(target, b"two", on_exists="skip")
    assert (result.path, result.status) == (target, "skipped")
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"] and target.read_bytes() == b"one"


def test_error_mode_raises_one_line_naming_the_file(tmp_path):
    target = tmp_path / "a.png"
    write_new_file(target, b"one")
    assert write_new_file(target, b"one", on_exists="error").status == "identical"
    with pytest.raises(OutputError, match=r"a\.png already exists") as caught:
        write_new_file(target, b"two", on_exists="error")
    assert "\n" not in str(caught.value)
    assert target.read_bytes() == b"one"


def test_no_temporary_file_is_left_behind(tmp_path):
    for index in range(5):
        write_new_file(tmp_path / "a.png", bytes([index]) * 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-1.png", "a-2.png", "a-3.png", "a-4.png", "a.png"]


def test_a_numbered_name_taken_by_an_unrelated_file_is_skipped(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "a-1.png").write_bytes(b"y")
    (tmp_path / "a-3.png").write_bytes(b"z")
    assert write_new_file(tmp_path / "a.png", b"new").path.name == "a-2.png"
    assert write_new_file(tmp_path / "a.png", b"newer").path.name == "a-4.png"


SAVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from sdbake.stages.output.writer import write_new_file
    folder, worker, go = Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.001)
    for index in range(50):
        # Each image a different size and content, so a torn or mixed file would show.
        data = f"worker {worker} image {index} ".encode() * (50 + 7 * index + worker)
        result = write_new_file(folder / "out" / "render.png", data)
        print(result.status, result.path.name)
""")


def run_two_savers(folder: Path) -> list[str]:
    go = folder / "go"
    go.unlink(missing_ok=True)
    workers = [subprocess.Popen([sys.executable, "-c", SAVER, str(REPO_ROOT), str(folder), str(worker),
                                 str(go)], stdout=subprocess.PIPE, text=True) for worker in (0, 1)]
    time.sleep(0.3)                                     # both interpreters started: release them at once
    go.write_text("")
    outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    go.unlink()
    return [line for output in outputs for line in output.splitlines()]


def expected_images() -> set[bytes]:
    return {f"worker {worker} image {index} ".encode() * (50 + 7 * index + worker)
            for worker in (0, 1) for index in range(50)}


def test_two_processes_saving_at_once_keep_all_100_images_and_rerun_changes_nothing(tmp_path):
    lines = run_two_savers(tmp_path)
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 100 and all(line.startswith("written ") for line in lines)
    assert len({line.split()[1] for line in lines}) == 100               # no name given out twice
    assert {path.read_bytes() for path in files} == expected_images()    # none lost, none torn
    before = folder_snapshot(tmp_path)
    lines = run_two_savers(tmp_path)
    assert all(line.startswith("identical ") for line in lines)
    assert folder_snapshot(tmp_path) == before                          # byte-for-byte as it was
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_falls_back_to_exclusive_create_without_hard_links(tmp_path, monkeypatch):
    def no_links(source, destination, **where):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "a.png"
    assert write_new_file(target, b"one").status == "written"
    assert write_new_file(target, b"two").path.name == "a-1.png"
    assert write_new_file(target, b"one").status == "identical"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-1.png", "a.png"]


# -- prepared writes: the bytes are made durable while a stage runs, named when it has succeeded ------------

def test_a_prepared_file_is_invisible_until_committed_then_numbered_like_any_write(tmp_path):
    from sdbake.stages.output.writer import commit_new_file, prepare_new_file
    write_new_file(tmp_path / "a.png", b"one")
    pending = prepare_new_file(tmp_path / "a.png", b"two", root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".sdbake-tmp-")) == ["a.png"]
    result = commit_new_file(pending)
    assert (result.path.name, result.status) == ("a-1.png", "written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-1.png", "a.png"]     # no temporary file left


def test_a_discarded_or_refused_prepared_file_leaves_nothing_behind(tmp_path):
    from sdbake.stages.output.writer import commit_new_file, discard_pending, prepare_new_file
    before = folder_snapshot(tmp_path)
    discard_pending(prepare_new_file(tmp_path / "sub" / "b.png", b"never named", root=tmp_path))
    assert folder_snapshot(tmp_path) == before and list((tmp_path / "sub").iterdir()) == []
    write_new_file(tmp_path / "c.png", b"mine")
    with pytest.raises(OutputError, match="already exists"):
        commit_new_file(prepare_new_file(tmp_path / "c.png", b"other", "error", root=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["c.png"]
    assert (tmp_path / "c.png").read_bytes() == b"mine"


def test_a_link_planted_between_prepare_and_commit_is_refused(tmp_path):
    from sdbake.stages.output.writer import commit_new_file, prepare_new_file
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    pending = prepare_new_file(root / "sub" / "a.png", b"bytes", root=root)
    (root / "sub").rename(root / "moved")
    (root / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputError, match="symbolic link"):
        commit_new_file(pending)
    assert list(outside.iterdir()) == []


def test_a_failed_stage_leaves_no_output_file(tmp_path):
    """Files emitted before a stage fails are not named: the output folder holds nothing of that run."""
    from types import SimpleNamespace

    from sdbake.runner.output_files import StageFiles
    files = StageFiles(SimpleNamespace(output_root=tmp_path), SimpleNamespace(stage=SimpleNamespace()))
    files.emitted("run/0.png", b"first image")
    files.emitted("run/1.png", b"second image")
    files.discard()                                  # what the runner does when the stage raises
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    kept = StageFiles(SimpleNamespace(output_root=tmp_path), SimpleNamespace(stage=SimpleNamespace()))
    kept.emitted("run/1.png", b"second image")
    kept.emitted("run/0.png", b"first image")
    written = kept.commit(SimpleNamespace(line=lambda text: None))
    assert [(status, path.name) for status, path in written] == [("written", "0.png"), ("written", "1.png")]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["0.png", "1.png"]
