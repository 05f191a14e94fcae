"""Every example recipe renders (on the tiny model), and the mission's chain of stages is among them."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p for p in (ROOT / "recipes").iterdir() if p.suffix in (".toml", ".yaml", ".yml"))

pytest.importorskip("torch")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_example_recipe_renders_on_the_tiny_model(tmp_path, tiny_model_dir, path):
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    names = list(load_recipe(path).recipe.models)
    loaded = load_recipe(path, [f"models.{name}.checkpoint={tiny_model_dir}" for name in names])
    result = render(loaded, output_root=tmp_path / "out", no_cache=True, threads=1)
    assert result.outputs and all(p.is_file() for p in result.outputs)


def test_the_mission_chain_exists_in_the_examples():
    from sdbake.schemas.loader import load_recipe
    chains = [[s.type for s in load_recipe(p).recipe.stages] for p in RECIPES]
    wanted = ["encode", "sample", "intervene", "sample", "hires", "inpaint", "save"]
    assert any(chain == wanted or all(t in chain for t in wanted) for chain in chains)
