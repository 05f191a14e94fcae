"""Where a recipe can come from: a TOML/YAML file, an image carrying an `sdbake` chunk, or `REV:path`."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from sdbake.schemas.errors import RecipeError
from sdbake.schemas.loader import LoadedRecipe, load_recipe, load_text

IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")
MAX_EMBEDDED_BYTES = 4 << 20       # a recipe is a few KB; a bigger chunk is not one sdbake wrote
# A git revision as `git rev-parse` reads it: no option-like start, no spaces or control characters.
_GIT_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./~^@{}+-]*")


def parse_embedded(sdbake_json: str, image: Path) -> dict:
    """The `sdbake` chunk's JSON as a document with a `recipe` table; anything else is a RecipeError."""
    if len(sdbake_json) > MAX_EMBEDDED_BYTES:
        raise RecipeError(f"the embedded sdbake recipe is {len(sdbake_json)} characters, more than the "
                          f"{MAX_EMBEDDED_BYTES} an sdbake image holds: refused", file=str(image))
    try:
        document = json.loads(sdbake_json)
    except RecursionError:
        raise RecipeError("the embedded sdbake recipe is nested too deep to read", file=str(image)) from None
    except ValueError as err:
        raise RecipeError(f"the embedded sdbake recipe is not valid JSON: {err}", file=str(image)) from None
    if not isinstance(document, dict) or not isinstance(document.get("recipe"), dict):
        raise RecipeError("the embedded sdbake metadata holds no recipe table (not made by sdbake, or "
                          "damaged)", file=str(image))
    return document


def embedded_document(image: Path) -> dict:
    """The `sdbake` metadata of an image made by sdbake."""
    from sdbake.stages.output.metadata import read_metadata
    _, sdbake_json = read_metadata(image)
    if not sdbake_json:
        raise RecipeError("this image carries no sdbake recipe (was it made by sdbake?)", file=str(image))
    return parse_embedded(sdbake_json, image)


def load_image_recipe(image: Path, overrides: list[str] = ()) -> LoadedRecipe:
    document = embedded_document(image)
    recipe = dict(document["recipe"])
    # A downloaded image must not choose where sdbake writes: its output_dir is dropped, and the
    # run writes under --out or the current output root (DESIGN.md section 4, save).
    if recipe.pop("output_dir", None) is not None:
        print(f"warning: {image}: the embedded recipe's output_dir is ignored; writing under --out or "
              "./outputs", file=sys.stderr)
    # Relative paths in the embedded recipe resolve against the image's folder.
    folder = image.parent.resolve()
    return load_text(json.dumps(recipe), "yaml", label=f"{image}[sdbake]", folder=folder,
                     overrides=overrides)


def load_git_revision(spec: str, overrides: list[str] = ()) -> LoadedRecipe:
    rev, path = spec.split(":", 1)
    if not _GIT_REVISION.fullmatch(rev) or ".." in rev or not path or path.startswith("-") \
            or any(not c.isprintable() for c in path):
        raise RecipeError(f"not a git revision and path (REV:path, e.g. HEAD~1:recipe.toml): {spec!r}",
                          file=spec)
    try:
        # `--end-of-options` (git 2.24+): nothing after it is read as an option, whatever it spells.
        text = subprocess.run(["git", "show", "--end-of-options", f"{rev}:{path}"], check=True,
                              capture_output=True, text=True).stdout
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
