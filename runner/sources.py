"""Where a recipe can come from: a TOML/YAML file, an image carrying an `sdbake` chunk, or `REV:path`."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sdbake.schemas.errors import InputFileError, RecipeError
from sdbake.schemas.loader import LoadedRecipe, load_recipe, load_text

IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")
SHA256 = re.compile(r"[0-9a-f]{64}")
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


@dataclass(frozen=True)
class InputSearch:
    """Where `run IMAGE` looks for the files the image's recipe read (after the image's own folder)."""
    inputs: Path | None = None          # --inputs DIR
    recipe_dir: Path | None = None      # --recipe-dir DIR: the original recipe's folder (relative paths)
    cache_root: Path | None = None      # the cache, whose input store keeps every input file it saw


def load_image_recipe(image: Path, overrides: list[str] = (), search: InputSearch | None = None) -> LoadedRecipe:
    """The recipe prefix that made the image, for this image alone: its seed, its resolved prompts, and
    its input files found by content hash."""
    document = embedded_document(image)
    search = search or InputSearch()
    # Relative paths in the embedded recipe resolve against the original recipe's folder when given,
    # else the image's folder; a file not there is found by its hash.
    folder = Path(search.recipe_dir or image.parent).resolve()
    recipe, found = image_recipe(document, image, folder, search)
    loaded = load_text(json.dumps(recipe), "yaml", label=f"{image}[sdbake]", folder=folder, overrides=overrides)
    resolved = document.get("resolved", {})
    if not isinstance(resolved, dict) or not all(
            isinstance(texts, dict) and all(isinstance(t, list) and all(isinstance(x, str) for x in t)
                                            for t in texts.values()) for texts in resolved.values()):
        raise RecipeError("the embedded resolved prompts are damaged (want stage id -> lists of texts)",
                          file=str(image))
    loaded.found, loaded.resolved = found, resolved
    return loaded


def image_recipe(document: dict, image: Path, folder: Path, search: InputSearch) -> tuple[dict, dict[str, Path]]:
    """The image's recipe prefix, and where the files it read were found by hash."""
    recipe = copy.deepcopy(document["recipe"])
    # A downloaded image must not choose where sdbake writes: its output_dir is dropped, and the
    # run writes under --out or the current output root (DESIGN.md section 4, save).
    if recipe.pop("output_dir", None) is not None:
        print(f"warning: {image}: the embedded recipe's output_dir is ignored; writing under --out or "
              "./outputs", file=sys.stderr)
    if "resolved" not in document:       # an image made before images recorded their inputs
        return recipe, {}
    try:
        return recipe, _found_inputs(document, recipe, image, folder, search)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise RecipeError(f"the embedded record of input files is damaged ({type(err).__name__}: {err})",
                          file=str(image)) from None


def _found_inputs(document: dict, recipe: dict, image: Path, folder: Path, search: InputSearch) -> dict[str, Path]:
    """File name as the recipe writes it -> the file with the recorded sha256, wherever it was found."""
    from sdbake.runner.inputs import InputStore, find_by_hash, model_by_hash
    found: dict[str, Path] = {}
    stages = {stage["id"]: stage for stage in recipe["stages"]}
    store = InputStore(search.cache_root) if search.cache_root else None
    folders = [image.parent, search.inputs, search.recipe_dir]
    for stage_id, files in document.get("files", {}).items():
        for param, sha256 in files.items():
            if param == "upscaler":      # a model: found by name in the upscaler folders
                continue
            if not SHA256.fullmatch(str(sha256)):
                raise ValueError(f"{stage_id}.{param}: `{sha256}` is not a sha256")
            path = param.split(".")
            holder = stages[stage_id]
            for part in path[:-1]:
                holder = holder[int(part)] if isinstance(holder, list) else holder[part]
            path_found = find_by_hash(sha256, holder[path[-1]], folders, store)
            if path_found is None:
                raise InputFileError(f"stage {stage_id}: {param} `{holder[path[-1]]}` (sha256 {sha256[:12]}) is not "
                                     "next to the image, in --inputs, under --recipe-dir or in the cache's input "
                                     "store", file=str(image))
            found[holder[path[-1]]] = path_found.resolve()
    for name, identity in document.get("models", {}).items():
        entry = recipe["models"].get(name)
        # a merge entry has no checkpoint of its own: its inputs are entries of their own
        located = model_by_hash("checkpoints", entry["checkpoint"], identity["checkpoint"], folder, image) \
            if entry and entry.get("checkpoint") else None
        if located is not None:
            found[entry["checkpoint"]] = located
    found.update(_found_loras(document, recipe, stages, image, folder))
    return found


def _found_loras(document: dict, recipe: dict, stages: dict, image: Path, folder: Path) -> dict[str, Path]:
    """The LoRAs the image recorded (a model entry's and a stage's `loras`, the files of `<lora:...>` tags),
    as models are found: by the recorded hash where the name leads to another file or none."""
    from sdbake.runner.inputs import found_key, model_by_hash
    from sdbake.runner.kinds.lora_tags import resolve_tag_name
    from sdbake.runner.models.search import resolve_model_file

    def by_name(name: str, where: Path) -> Path:
        return resolve_model_file(name, "loras", where)
    wanted: dict[str, tuple[str, object]] = {}       # name as written -> (sha256, how the name resolves)
    for name, identity in document.get("models", {}).items():
        refs = (recipe["models"].get(name) or {}).get("loras") or []
        for ref, (sha256, _weight) in zip(refs, identity.get("loras") or []):
            wanted[ref["name"]] = (sha256, by_name)
    for stage_id, records in document.get("loras", {}).items():
        own = [record for record in records if "tag" not in record]   # the stage's `loras`, then its tags
        for ref, record in zip(stages[stage_id].get("loras") or [], own):
            wanted[ref["name"]] = (record["sha256"], by_name)
        for record in records:
            if "tag" in record:
                wanted[record["tag"]] = (record["sha256"], resolve_tag_name)
    found = {}
    for name, (sha256, resolve) in wanted.items():
        if not SHA256.fullmatch(str(sha256)):
            raise ValueError(f"LoRA {name}: `{sha256}` is not a sha256")
        located = model_by_hash("loras", name, sha256, folder, image, resolve)
        if located is not None:
            found[found_key("loras", name)] = located
    return found


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


def load_any(source: str, overrides: list[str] = (), search: InputSearch | None = None) -> LoadedRecipe:
    path = Path(source)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return load_image_recipe(path, overrides, search)
    from sdbake.runner.bundle import is_bundle, load_bundle
    if is_bundle(source):
        from sdbake.runner.cache import default_cache_root
        return load_bundle(path, list(overrides), (search and search.cache_root) or default_cache_root())
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
