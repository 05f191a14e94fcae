"""Special files and operating-system failures: devices, FIFOs, links, files where folders should be,
read-only and full disks, git revisions that look like options, a reader that hangs up. Each is one
line naming the path, in bounded time, with nothing changed outside the outputs and cache."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from hostile_helpers import bring_baked_cache, recipe


def fifo(arena, name: str) -> str:
    os.mkfifo(arena.work / name)
    return name


SPECIAL_INPUTS = [   # (id, how the file is made, recipe using it, message)
    ("checkpoint-dev-zero", lambda a: "/dev/zero", lambda f: recipe(checkpoint=f), "/dev/zero"),
    ("checkpoint-fifo", lambda a: fifo(a, "m.fifo.safetensors"), lambda f: recipe(checkpoint=f),
     "m.fifo.safetensors"),
    ("checkpoint-link-to-dev-zero", lambda a: (os.symlink("/dev/zero", a.work / "z.safetensors"),
                                               "z.safetensors")[1], lambda f: recipe(checkpoint=f),
     "z.safetensors"),
    ("init-image-fifo", lambda a: fifo(a, "init.png"), lambda f: recipe(stages=[
        {"type": "encode", "prompt": "a", "image": f}, {"type": "sample"}, {"type": "save", "path": "x.png"}]),
     "init.png"),
    ("mask-dev-zero", lambda a: "/dev/zero", lambda f: recipe(stages=[
        {"type": "encode", "prompt": "a"}, {"type": "sample"}, {"type": "inpaint", "mask": f},
        {"type": "save", "path": "x.png"}]), "/dev/zero"),
]


@pytest.mark.parametrize("make, text, message", [c[1:] for c in SPECIAL_INPUTS], ids=[c[0] for c in SPECIAL_INPUTS])
def test_a_special_file_as_input_is_refused_without_reading_it(arena, make, text, message):
    arena.write("r.toml", text(make(arena)))
    for command in ("plan", "run"):
        arena.sdbake(command, "r.toml", code=1, expect=message, max_s=10)


def test_a_recipe_that_is_a_fifo_does_not_hang(arena):
    os.mkfifo(arena.work / "r.toml")
    arena.sdbake("validate", "r.toml", code=1, expect="named pipe", max_s=10)


def test_a_recipe_that_links_to_dev_zero_does_not_hang(arena):
    (arena.work / "r.yaml").symlink_to("/dev/zero")
    arena.sdbake("validate", "r.yaml", code=1, expect="a device", max_s=10)


def test_models_hash_of_a_device_is_one_line(arena):
    arena.sdbake("models", "hash", "/dev/zero", code=1, expect="/dev/zero", max_s=10)


# `diff REV:path`: a revision that reads as an option once wrote a file through `git show --output=...`.
REVISIONS = ["--output=owned.txt:r.toml", "-p:r.toml", "HEAD:--output=owned.txt", "HEAD..x:r.toml",
             "--help:x.toml", "HEAD:\x1b[2J.toml"]


@pytest.mark.parametrize("spec", REVISIONS)
def test_a_git_revision_that_looks_like_an_option_is_refused(arena, spec):
    arena.write("r.toml", recipe())
    subprocess.run(["git", "init", "-q"], cwd=arena.work, check=True)
    before = sorted(p.name for p in arena.work.iterdir())
    arena.sdbake("diff", "r.toml", "--", spec, code=2, max_s=10, changes=True)
    assert sorted(p.name for p in arena.work.iterdir()) == before
    assert not (arena.work / "owned.txt").exists()


# Output roots that cannot be written: served from a cache hit (no torch), so the write is the failure.
def test_an_output_root_that_is_a_file_is_one_line(arena, baked):
    bring_baked_cache(arena, baked)
    arena.write("taken", "a file")
    arena.sdbake("run", "r.toml", "--out", "taken", "-q", code=1, expect="taken", max_s=20)


def test_an_output_root_whose_parent_is_a_file_is_one_line(arena, baked):
    bring_baked_cache(arena, baked)
    arena.write("taken", "a file")
    arena.sdbake("run", "r.toml", "--out", "taken/out", "-q", code=1, expect="taken", max_s=20)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk full"), (errno.EROFS, "read-only file system"),
                                          (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota")])
def test_an_os_error_while_writing_outputs_is_one_line_with_the_path(arena, baked, monkeypatch, code, words):
    bring_baked_cache(arena, baked)
    from sdbake.stages.output import writer
    real_open = writer._Folder.open

    def failing_open(self, name, flags, mode=0o666):
        if flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(self.path / name))
        return real_open(self, name, flags, mode)
    monkeypatch.setattr(writer._Folder, "open", failing_open)
    err = arena.sdbake("run", "r.toml", "-q", code=1, expect=words, max_s=20).errors[0]
    assert err.startswith("outputs/.sdbake-tmp-")                # the path, as the user gave the root
    assert not list(arena.out.glob(".sdbake-tmp-*"))


@pytest.mark.parametrize("error, words", [(MemoryError, "input too large"), (RecursionError, "input too deep")])
def test_memory_and_recursion_errors_are_input_too_large_or_deep(arena, monkeypatch, error, words):
    # What a recipe too large or too deep for some library's parser does to it.
    def explode(*args, **kwargs):
        raise error()
    monkeypatch.setattr("sdbake.runner.sources.load_any", explode)
    arena.write("r.toml", recipe())
    arena.sdbake("canonical", "r.toml", code=1, expect=words, max_s=10)


@pytest.mark.parametrize("switch", ["flag", "environment"])
def test_debug_shows_the_traceback(arena, monkeypatch, capsys, switch):
    arena.write("r.toml", "version = [")
    from sdbake.runner.cli import main
    if switch == "environment":
        monkeypatch.setenv("SDBAKE_DEBUG", "1")
    capsys.readouterr()
    assert main(["canonical", "r.toml", *(["--debug"] if switch == "flag" else [])]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RecipeError" in err and err.rstrip().splitlines()[-1].startswith("r.toml:")


def test_a_closed_pipe_exits_quietly(arena):
    # Far more output than a pipe buffer holds, so the write after the reader has gone must fail.
    from hostile_helpers import embedded, plain_recipe_document, sdbake_png
    arena.write("img.png", sdbake_png(embedded(plain_recipe_document(name="x" * (2 << 20)))))
    reader = subprocess.Popen([sys.executable, "-m", "sdbake.runner.cli", "show", "img.png", "--format", "json"],
                              cwd=arena.work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
    reader.stdout.read(10)
    reader.stdout.close()                         # `sdbake show ... | head -c 10`
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 141, stderr
    assert stderr == ""
