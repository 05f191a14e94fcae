"""A1111's "Batch count" (`n_iter` in [defaults]): n_iter batches of batch_size images, rendered one
after another as the points of a sweep, so each batch is its own chain of cache entries and only one
batch is in memory at a time.

Batch b numbers its images on as A1111's process_images_inner does: the encode seeds start at
seed + b * batch_size, or, with a variation seed (the seed then stays the same for every image), the
subseeds do. A `-1` seed or subseed is drawn once, before the batches are made, so they continue one
another. No grid is drawn.
"""
from __future__ import annotations

from sdbake.runner.sweep.axes import Axis
from sdbake.runner.sweep.matrix import Point, Sweep
from sdbake.schemas.canonical import canonical_dict
from sdbake.schemas.errors import RecipeError
from sdbake.schemas.loader import LoadedRecipe
from sdbake.schemas.stages import EncodeParams

BATCH_AXIS = "n_iter"


def batch_count(loaded: LoadedRecipe) -> int:
    return loaded.recipe.defaults.n_iter or 1


def batch_sweep(loaded: LoadedRecipe, label: str, has_axes: bool) -> Sweep:
    """The batches of an `n_iter` recipe as a sweep of n_iter points."""
    from sdbake.runner.planning import pick_random_seed
    count = batch_count(loaded)
    if has_axes:
        raise RecipeError(f"n_iter = {count} and a [matrix] together are not supported: sweep the seed "
                          f"instead (e.g. `seed = \"1-8\"` in [matrix])", file=label)
    pick_random_seed(loaded)
    pick_random_seed(loaded, field="subseed")
    points = []
    for batch in range(count):
        recipe = loaded.recipe.model_copy(deep=True)
        recipe.defaults.n_iter = None
        for stage in recipe.stages:
            if isinstance(stage, EncodeParams):
                if stage.subseed_strength:
                    stage.subseed += batch * stage.batch_size
                else:
                    stage.seed += batch * stage.batch_size
        point_loaded = LoadedRecipe(recipe=recipe, path=loaded.path, folder=loaded.folder,
                                    positions=loaded.positions, found=loaded.found, resolved=loaded.resolved)
        points.append(Point((batch,), {"batch": batch + 1}, canonical_dict(recipe), point_loaded))
    axis = Axis(BATCH_AXIS, ("defaults", BATCH_AXIS), "int", list(range(1, count + 1)), "batch")
    return Sweep([axis], points, save_grid=False, name=loaded.recipe.name, label=label, folder=loaded.folder,
                 document=canonical_dict(loaded.recipe))
