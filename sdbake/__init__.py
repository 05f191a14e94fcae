"""sdbake: declarative, cached, reproducible Stable Diffusion recipes.

The public API (none of it imports torch until a render needs it):

    import sdbake
    recipe = sdbake.load_recipe("recipes/demo.toml")
    print(sdbake.plan(recipe))            # stage keys, HIT/MISS
    result = sdbake.render(recipe, output_root="outputs")

The code lives in three subpackages, `sdbake.schemas` (recipe format, no torch), `sdbake.stages`
(one module per stage kind) and `sdbake.runner` (plan, cache, execution, CLI).
"""
from __future__ import annotations

from pathlib import Path as _Path

# An installed wheel holds runner/, stages/ and schemas/ inside this folder. A source checkout keeps
# them at the top of the repository, beside this folder: look there too, so tests and
# `python -m sdbake` in a checkout (or a second work tree) use that checkout's code.
_checkout = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "runner").is_dir() and (_checkout / "runner" / "__init__.py").is_file():
    __path__.append(str(_checkout))

__all__ = ["__version__", "load_recipe", "plan", "render"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("sdbake")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()


def load_recipe(path, overrides=()):
    """Load and validate a recipe file (TOML/YAML) or an image's embedded recipe."""
    from sdbake.runner.sources import load_any
    return load_any(str(path), list(overrides))


def plan(recipe, **options):
    """The plan of a recipe (a path or a loaded recipe): one invocation per stage, with its cache key."""
    from sdbake.runner.api import make_plan
    loaded = recipe if not isinstance(recipe, (str, _Path)) else load_recipe(recipe)
    return make_plan(loaded, **options)


def render(recipe, **options):
    """Render a recipe (a path, an image made by sdbake, or a loaded recipe); see runner.api.render."""
    from sdbake.runner.api import render as _render
    return _render(recipe, **options)
