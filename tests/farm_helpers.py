"""Sweeps for the executor tests: a recipe writer and comparisons of what two runs produced."""
from __future__ import annotations

from pathlib import Path

from PIL import Image


def write_sweep(folder: Path, model_dir, matrix: str, *, name: str = "farm", steps: int = 3, size: int = 64,
                hires: bool = False, sampler: str = "euler") -> Path:
    hires_stage = """
[[stages]]
type = "hires"
scale = 1.5
upscaler = "latent-bicubic-antialiased"
denoise = 0.5
steps = 2
""" if hires else ""
    path = folder / f"{name}.toml"
    path.write_text(f"""version = 1
name = "{name}"
[models.m]
checkpoint = "{model_dir}"
[defaults]
model = "m"
seed = 1
width = {size}
height = {size}
steps = {steps}
sampler = "{sampler}"
scheduler = "karras"
cfg = 6.0
[[stages]]
type = "encode"
prompt = "a large red circle in the center, blue background"
[[stages]]
type = "sample"
{hires_stage}
[[stages]]
type = "save"
path = "farm/{{{{ seed }}}}-{{{{ cfg }}}}.png"
[matrix]
{matrix}
""")
    return path


def pixels_by_name(root: Path) -> dict[str, bytes]:
    """Every image under `root` (grids included) by its relative path: its decoded pixels."""
    found = {}
    for path in sorted(root.rglob("*.png")):
        with Image.open(path) as image:
            found[path.relative_to(root).as_posix()] = image.convert("RGB").tobytes()
    return found


def entry_count(cache: Path) -> int:
    return sum(1 for _ in (cache / "objects").glob("*/*/entry.json"))
