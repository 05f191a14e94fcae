"""Render helpers for stage tests on the tiny model."""
from __future__ import annotations

from pathlib import Path

from recipe_helpers import write


def render_text(folder: Path, text: str, name: str = "r.toml", **kwargs):
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    kwargs.setdefault("no_cache", True)
    return render(load_recipe(write(folder, name, text)), output_root=folder / "out", threads=1, quiet=True,
                  **kwargs)


def recipe(model: Path, stages: str, *, steps=8, sampler="euler", seed=3, size=64, cfg=5.0,
           prompt="a red circle", name="s") -> str:
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
scheduler = "karras"
cfg = {cfg}

[[stages]]
type = "encode"
prompt = "{prompt}"
negative = "blurry"

{stages}
'''


def count_denoiser_calls(monkeypatch) -> list[float]:
    """Patch the denoiser to record the sigma of every call (image 0)."""
    from sdbake.stages import denoiser
    seen: list[float] = []
    original = denoiser.Denoiser.__call__

    def counting(self, x, sigma):
        seen.append(float(sigma.reshape(-1)[0]))
        return original(self, x, sigma)
    monkeypatch.setattr(denoiser.Denoiser, "__call__", counting)
    return seen
