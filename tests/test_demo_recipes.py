"""The demo model through sdbake itself: prompt editing and inpainting do what a user would see."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from stage_helpers import recipe, render_text

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"
sys.path.insert(0, str(REPO / "models"))

pytest.importorskip("torch")
scoring = pytest.importorskip("scoring")


def _render(tmp_path, prompt, name, extra="", seed=3, steps=12, cfg=9.0):
    stages = f'[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "{name}.png"\n{extra}'
    text = recipe(DEMO, stages, steps=steps, seed=seed, cfg=cfg, prompt=prompt, name=name)
    render_text(tmp_path, text.replace('negative = "blurry"', 'negative = ""'), f"{name}.toml")
    return np.asarray(Image.open(tmp_path / "out" / f"{name}.png").convert("RGB"), dtype=np.int16)


def test_a_prompt_edit_differs_from_both_of_its_prompts(tmp_path):
    red = _render(tmp_path, "a red circle", "red")
    blue = _render(tmp_path, "a blue circle", "blue")
    edited = _render(tmp_path, "a [red:blue:0.5] circle", "edited")
    for other in (red, blue):
        assert np.abs(edited - other).mean() > 2.0


def test_inpainting_the_shape_blue_changes_it_and_nothing_outside_the_mask(tmp_path):
    base = _render(tmp_path, "a large red circle in the center", "base", seed=5)
    shape = scoring.shape_mask(Image.fromarray(base.astype(np.uint8)))
    assert shape.sum() > 300
    mask = Image.fromarray((shape * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(5))
    mask.save(tmp_path / "shape.png")
    inpaint = ('\n[[stages]]\ntype = "inpaint"\nmask = "shape.png"\nblur = 0\ndenoise = 0.95\nprompt = "blue"\n'
               '\n[[stages]]\ntype = "save"\npath = "inpainted.png"\n')
    _render(tmp_path, "a large red circle in the center", "base", extra=inpaint, seed=5)
    result = np.asarray(Image.open(tmp_path / "out" / "inpainted.png").convert("RGB"), dtype=np.int16)
    outside = np.asarray(mask) == 0
    assert np.array_equal(result[outside], base[outside])
    assert scoring.shape_colour(Image.fromarray(result.astype(np.uint8))) == "blue"
