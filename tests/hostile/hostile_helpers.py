"""The arena every hostile-input test runs in, and small makers of hostile files.

An arena is a tmp folder holding a sentinel tree (a fake home with a `tmp/` project, a photo
album laid out like a cache, a secret file) next to the work folder with the recipe and its inputs.
Each CLI call is checked for what a user sees (exit code, one error line, no traceback), for a
time bound, and for the promise that nothing outside the output root and the cache changed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

OLD_S = 3 * 86400                       # sentinel files look days old: "abandoned" to a careless gc
DUMMY_CHECKPOINT = "m.safetensors"      # planning hashes a checkpoint; it never loads it


def snapshot(root: Path, exclude: set[Path]) -> dict[str, tuple]:
    """Every path under root (but the excluded trees): kind, mode, size, mtime and content or target."""
    found: dict[str, tuple] = {}
    for folder, folders, files in os.walk(root, followlinks=False):
        here = Path(folder)
        folders[:] = [f for f in folders if here / f not in exclude]
        for name in folders + files:
            path = here / name
            if path in exclude:
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                detail = None
            # A folder's own mtime only says that an entry came or went: the entries themselves are listed.
            mtime = None if stat.S_ISDIR(info.st_mode) else info.st_mtime_ns
            found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode),
                                                  info.st_size if not stat.S_ISDIR(info.st_mode) else 0,
                                                  mtime, detail)
    return found


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float
    errors: list[str] = field(default_factory=list)     # stderr lines that are not warnings


@dataclass
class Arena:
    root: Path
    capsys: object
    work: Path = None
    out: Path = None
    cache: Path = None
    sentinel: Path = None

    def __post_init__(self):
        self.work = self.root / "work"
        self.out = self.work / "outputs"
        self.cache = self.root / "cache"
        self.sentinel = self.root / "sentinel"
        self.work.mkdir()
        (self.work / DUMMY_CHECKPOINT).write_bytes(b"not really weights")
        plant_sentinels(self.sentinel)

    def excluded(self) -> set[Path]:
        return {self.out, self.cache, self.root / "index"}

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def sdbake(self, *args, code: int, expect: str | None = None, max_s: float = 15.0,
               changes: bool = False, report: bool = False) -> Outcome:
        """Run the CLI in this process and check what the user sees (see the module docstring).
        `changes`: files outside the outputs and cache may change (the test checks them itself)."""
        from sdbake.runner.cli import main
        before = snapshot(self.root, self.excluded())
        self.capsys.readouterr()
        started = time.perf_counter()
        returned = main([str(a) for a in args])
        seconds = time.perf_counter() - started
        captured = self.capsys.readouterr()
        outcome = Outcome(returned, captured.out, captured.err, seconds,
                          [line for line in captured.err.splitlines() if not line.startswith("warning:")])
        assert returned == code, f"exit {returned}, expected {code}: {captured.err[-2000:]}"
        assert "Traceback" not in captured.err + captured.out
        if code != 0 and not report:          # `report`: a non-zero exit that is a finding, not a failure
            assert len(outcome.errors) == 1, f"expected one error line: {captured.err[-2000:]}"
        if expect is not None:
            assert expect in captured.err + captured.out, f"{expect!r} not in: {captured.err[-2000:]}"
        assert seconds < max_s, f"took {seconds:.1f}s (bound {max_s}s)"
        if not changes:
            after = snapshot(self.root, self.excluded())
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            assert not changed, f"changed outside the outputs and cache: {changed[:5]}"
        return outcome


def plant_sentinels(sentinel: Path) -> None:
    """What a careless tool could destroy: a home with tmp/, an album shaped like a cache, a secret."""
    files = {
        "home/tmp/my-project/main.c": "int main(void) { return 0; }\n",
        "home/notes.txt": "do not delete\n",
        "album/objects/ab/abc-album/pic.jpg": "\xff\xd8 a photo",
        "album/tmp/my-project/readme.md": "my project\n",
        "secret/hostname": "sentinel-host\n",
    }
    old = time.time() - OLD_S
    for rel, text in files.items():
        path = sentinel / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        os.utime(path, (old, old))
    for folder in sorted({p for rel in files for p in (sentinel / rel).parents if sentinel in p.parents},
                         key=lambda p: -len(p.parts)):
        os.utime(folder, (old, old))


def recipe(*, defaults: dict | None = None, stages: list[dict] | None = None, matrix: dict | None = None,
           checkpoint: str = DUMMY_CHECKPOINT, **top) -> str:
    """A small valid TOML recipe, with parts replaced by hostile ones."""
    document = {"version": 1, "name": "hostile", **top, "models": {"m": {"checkpoint": checkpoint}},
                "defaults": {"model": "m", "seed": 1, "width": 64, "height": 64, "steps": 2, **(defaults or {})},
                "stages": stages or [{"type": "encode", "prompt": "a cat"}, {"type": "sample"},
                                     {"type": "save", "path": "x.png"}]}
    if matrix:
        document["matrix"] = matrix
    return tomli_w.dumps(document)


def with_save_path(path_template: str) -> str:
    return recipe(stages=[{"type": "encode", "prompt": "a cat"}, {"type": "sample"},
                          {"type": "save", "path": path_template}])


def with_prompt(prompt: str, negative: str = "") -> str:
    return recipe(stages=[{"type": "encode", "prompt": prompt, "negative": negative}, {"type": "sample"},
                          {"type": "save", "path": "x.png"}])


def png_with_text(chunks: dict[str, str], size: tuple[int, int] = (8, 8), itxt: bool = True) -> bytes:
    """A small PNG carrying these text chunks (as sdbake writes them: `parameters`, `sdbake`)."""
    from PIL import Image, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        if itxt:
            info.add_itxt(key, value)
        else:
            info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def sdbake_png(document) -> bytes:
    """A PNG whose `sdbake` chunk holds this JSON document (any shape: the point is hostile ones)."""
    text = document if isinstance(document, str) else json.dumps(document)
    return png_with_text({"parameters": "a cat\nSteps: 2, Sampler: Euler, Seed: 1", "sdbake": text})


def embedded(recipe_document: dict, **extra) -> dict:
    return {"recipe": recipe_document, "seed": 1, "batch_index": 0, "prompt": "a cat", **extra}


def plain_recipe_document(**changes) -> dict:
    document = {"version": 1, "name": "from-image", "models": {"m": {"checkpoint": DUMMY_CHECKPOINT}},
                "defaults": {"model": "m", "seed": 1, "width": 64, "height": 64, "steps": 2},
                "stages": [{"type": "encode", "prompt": "a cat"}, {"type": "sample"},
                           {"type": "save", "path": "x.png"}]}
    document.update(changes)
    return document


def bring_baked_cache(arena: Arena, baked: dict) -> Path:
    """The baked cache as this arena's cache, and the recipe beside its inputs; the recipe's path."""
    shutil.copytree(baked["cache"], arena.cache, symlinks=True)
    return arena.write("r.toml", baked["text"])
