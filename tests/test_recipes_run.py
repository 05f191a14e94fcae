"""Every example recipe renders (on the tiny model), and the mission's chain of stages is among them."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p for p in (ROOT / "recipes").iterdir() if p.suffix in (".toml", ".yaml", ".yml"))
SDXL_RECIPES = sorted((ROOT / "recipes" / "sdxl").glob("*.toml"))

pytest.importorskip("torch")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_example_recipe_renders_on_the_tiny_model(tmp_path, tiny_model_dir, path):
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    names = list(load_recipe(path).recipe.models)
    loaded = load_recipe(path, [f"models.{name}.checkpoint={tiny_model_dir}" for name in names])
    result = render(loaded, output_root=tmp_path / "out", no_cache=True, threads=1)
    assert result.outputs and all(p.is_file() for p in result.outputs)


@pytest.mark.parametrize("path", SDXL_RECIPES, ids=lambda p: p.name)
def test_sdxl_twin_renders_on_the_tiny_sdxl_models(tmp_path, tiny_sdxl, tiny_sdxl_refiner, tiny_sdxl_inpaint, path):
    """Each SDXL twin, at 64 px on the tiny base, refiner and 9-channel inpainting models."""
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    tiny = {"base": tiny_sdxl[0], "refiner": tiny_sdxl_refiner[0], "inpaint": tiny_sdxl_inpaint[0]}
    names = list(load_recipe(path).recipe.models)
    overrides = [f"models.{name}.checkpoint={tiny[name]}" for name in names] + [
        "defaults.width=64", "defaults.height=64"]
    loaded = load_recipe(path, overrides)
    result = render(loaded, output_root=tmp_path / "out", no_cache=True, threads=1)
    assert result.outputs and all(p.is_file() for p in result.outputs)
    from PIL import Image
    infotext = Image.open(result.outputs[-1]).text["parameters"]
    assert f"Model: {tiny['base'].name}" in infotext
    if "refiner" in names and any(s.type == "sample" and s.model == "refiner" for s in loaded.recipe.stages):
        assert "Refiner: tiny-refiner [" in infotext and "Refiner switch at: 0.8" in infotext


def test_every_example_kind_has_an_sdxl_twin():
    assert {p.stem for p in RECIPES if p.suffix == ".toml"} <= {p.stem for p in SDXL_RECIPES}


def test_the_mission_chain_exists_in_the_examples():
    from sdbake.schemas.loader import load_recipe
    chains = [[s.type for s in load_recipe(p).recipe.stages] for p in RECIPES]
    wanted = ["encode", "sample", "intervene", "sample", "hires", "inpaint", "save"]
    assert any(chain == wanted or all(t in chain for t in wanted) for chain in chains)
