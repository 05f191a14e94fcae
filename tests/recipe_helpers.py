"""Small recipes for end-to-end tests on the tiny model."""
from __future__ import annotations

from pathlib import Path


def txt2img(model: Path, *, sampler="euler", scheduler="karras", steps=20, seed=42, size=64, cfg=5.0,
            prompt="a red circle, (blue sky:1.2), [day:night:0.5]", negative="blurry", path="out.png",
            split: int | None = None, extra_stages: str = "", batch_size: int = 1, name="t") -> str:
    sample = ('[[stages]]\ntype = "sample"\n' if split is None else
              f'[[stages]]\ntype = "sample"\nend = {split}\n\n[[stages]]\ntype = "sample"\nstart = {split}\n')
    return f'''version = 1
name = "{name}"
[models.m]
checkpoint = "{model}"
[defaults]
model = "m"
seed = {seed}
width = {size}
height = {size}
steps = {steps}
sampler = "{sampler}"
scheduler = "{scheduler}"
cfg = {cfg}
batch_size = {batch_size}

[[stages]]
type = "encode"
prompt = "{prompt}"
negative = "{negative}"

{sample}
{extra_stages}
[[stages]]
type = "save"
path = "{path}"
'''


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path
