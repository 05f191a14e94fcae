"""The watch loop without a browser: which files it watches, and that a save of any of them (and only
of them) starts a new render."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

from sdbake.runner.watch.session import WatchSession, plan_inputs

REPO = Path(__file__).resolve().parent.parent

RECIPE = '''version = 1
name = "loop"
[models.m]
checkpoint = "{model}"
[defaults]
model = "m"
width = 64
height = 64
[[stages]]
type = "encode"
prompt = "a __colors__ circle"
image = "init.png"
[[stages]]
type = "sample"
[[stages]]
type = "inpaint"
mask = "masks/m.png"
[[stages]]
type = "save"
path = "out.png"
'''


def _recipe_folder(tmp_path: Path) -> Path:
    from PIL import Image
    (tmp_path / "masks").mkdir()
    (tmp_path / "wildcards").mkdir()
    Image.new("RGB", (64, 64), "red").save(tmp_path / "init.png")
    Image.new("L", (64, 64), 255).save(tmp_path / "masks" / "m.png")
    (tmp_path / "wildcards" / "colors.txt").write_text("red\nblue\n")
    recipe = tmp_path / "loop.toml"
    recipe.write_text(RECIPE.format(model=(REPO / "models" / "demo").as_posix()))
    return recipe


def test_watched_files_are_the_init_image_mask_and_wildcards_the_plan_read(tmp_path):
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    recipe = _recipe_folder(tmp_path)
    plan = make_plan(load_recipe(recipe), output_root=tmp_path / "o", device="cpu")
    assert [p.resolve() for p in plan_inputs(plan)] == sorted(
        [tmp_path / "init.png", tmp_path / "masks" / "m.png", tmp_path / "wildcards" / "colors.txt"])


def test_a_save_of_the_recipe_or_of_a_file_it_reads_starts_a_render_and_nothing_else_does(tmp_path):
    recipe = _recipe_folder(tmp_path)
    session = WatchSession(SimpleNamespace(recipe=str(recipe)), log=lambda line: None)
    renders = []

    def attempt():                  # stands in for plan + execute: reads what the plan would read
        renders.append(time.monotonic())
        session.inputs = [tmp_path / "masks" / "m.png"]
        return True
    session.attempt = attempt
    stop = threading.Event()
    loop = threading.Thread(target=session.run_forever, args=(stop, 0.05), daemon=True)
    loop.start()

    def renders_after(count: int, timeout_s: float = 10.0) -> int:
        deadline = time.monotonic() + timeout_s
        while len(renders) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)             # and no more than that
        return len(renders)
    try:
        assert renders_after(1) == 1                       # the first render, once (the mask found then
        (tmp_path / "unrelated.png").write_bytes(b"x")     # is not a change)
        (tmp_path / "init.png").touch()                    # not read by this (stand-in) plan
        assert renders_after(2, timeout_s=1.0) == 1
        (tmp_path / "masks" / "m.png").write_bytes((tmp_path / "masks" / "m.png").read_bytes() + b"\0")
        assert renders_after(2) == 2
        recipe.write_text(recipe.read_text() + "\n# a comment\n")
        assert renders_after(3) == 3
    finally:
        stop.set()
        loop.join(timeout=5)
