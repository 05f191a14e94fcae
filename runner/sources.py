"""Where a recipe can come from: a TOML/YAML file, an image carrying an `sdbake` chunk, or `REV:path`."""
from __future__ import annotations

from pathlib import Path

from schemas.loader import LoadedRecipe, load_recipe


def load_any(source: str, overrides: list[str] = ()) -> LoadedRecipe:
    return load_recipe(Path(source), overrides)
