"""Where a recipe can come from: a TOML/YAML file, an image carrying an `sdbake` chunk, or `REV:path`."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sdbake.schemas.errors import RecipeError
from sdbake.schemas.loader import LoadedRecipe, load_recipe, load_text

IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")


def embedded_document(image: Path) -> dict:
    """The `sdbake` metadata of an image made by sdbake."""
    from sdbake.stages.output.metadata import read_metadata
    _, sdbake_json = read_metadata(image)
    if not sdbake_json:
        raise RecipeError("this image carries no sdbake recipe (was it made by sdbake?)", file=str(image))
    try:
        return json.loads(sdbake_json)
    except ValueError as err:
        raise RecipeError(f"the embedded sdbake recipe is not valid JSON: {err}", file=str(image)) from None


def load_image_recipe(image: Path, overrides: list[str] = ()) -> LoadedRecipe:
    document = embedded_document(image)
    # Relative paths in the embedded recipe resolve against the image's folder.
    folder = image.parent.resolve()
    return load_text(json.dumps(document["recipe"]), "yaml", label=f"{image}[sdbake]", folder=folder,
                     overrides=overrides)


def load_git_revision(spec: str, overrides: list[str] = ()) -> LoadedRecipe:
    rev, path = spec.split(":", 1)
    try:
        text = subprocess.run(["git", "show", f"{rev}:{path}"], check=True, capture_output=True,
                              text=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        stderr = getattr(err, "stderr", "") or str(err)
        raise RecipeError(f"cannot read {spec} from git: {stderr.strip().splitlines()[-1] if stderr else err}",
                          file=spec) from None
    fmt = "toml" if path.endswith(".toml") else "yaml"
    return load_text(text, fmt, label=spec, folder=Path(path).parent.resolve(), overrides=overrides)


def load_any(source: str, overrides: list[str] = ()) -> LoadedRecipe:
    path = Path(source)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return load_image_recipe(path, overrides)
    if not path.exists() and ":" in source and not source.startswith(("/", ".")):
        return load_git_revision(source, overrides)
    return load_recipe(path, overrides)


def report_reproduction(image: Path, written: list[tuple[str, Path]]) -> int:
    """After `sdbake run IMAGE`: say whether the new pixels equal the image's."""
    from PIL import Image
    with Image.open(image) as original:
        want = original.convert("RGB").tobytes()
    for _, path in written:
        with Image.open(path) as new:
            if new.convert("RGB").tobytes() == want:
                print(f"reproduced: {path} has the same pixels as {image}")
                return 0
    print(f"differs: no output of this run has the same pixels as {image}")
    return 1
