"""What a run would trip over, found before any model loads and without torch (DESIGN.md section 11).

`validate` and every plan call `preflight`: files a recipe names exist and are regular files (models,
VAEs, LoRAs, init/mask/paste/edit images, upscaler models, embeddings), save and preview templates
render with the plan's variables, fill colours parse, intervene ops reach the image and the stage's
rect (preflight_edits.py), wildcards have files, hires sizes are within limits, and `on_exists = "error"`
does not meet a file it would refuse. Every problem is reported at once, each as
`file:line:col: path: message`, with a did-you-mean where a near name exists.
"""
from __future__ import annotations

import difflib
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from sdbake.runner.preflight_edits import edit_problems
from sdbake.runner.preflight_outputs import pattern_problems, template_problems
from sdbake.schemas.errors import (
    InputFileError,
    ModelError,
    OutputError,
    PromptError,
    RecipeError,
    SdbakeError,
    did_you_mean,
)
from sdbake.schemas.loader import LoadedRecipe, format_path
from sdbake.schemas.positions import nearest
from sdbake.schemas.stages import (
    LATENT_UPSCALERS,
    PIXEL_UPSCALERS,
    EncodeParams,
    FillOp,
    HiresParams,
    InterveneParams,
    SaveParams,
)

Problem = tuple[tuple[Any, ...], str]
MAX_SIDE = 8192                       # the schema's largest width/height; a hires target obeys it too
PLACEHOLDER_HASH = "0" * 10           # model_hash in a template, when the hash index does not know it yet


def preflight(loaded: LoadedRecipe, output_root: Path, now: datetime | None = None) -> None:
    """Raise the problem found (several: one RecipeError listing them in file order); return when none."""
    problems = find_problems(loaded, Path(output_root), now or datetime.now())
    errors = []
    for path, message, error_class in problems:
        line, column = nearest(loaded.positions, path) or (None, None)
        errors.append(error_class(f"{format_path(path)}: {message}", file=str(loaded.path), line=line,
                                  column=column))
    errors.sort(key=lambda e: (e.line or 0, e.column or 0))
    if len(errors) == 1:
        raise errors[0]                      # its own kind (a missing model is a ModelError, ...)
    if errors:
        raise RecipeError(f"{len(errors)} error(s)", errors=errors)


def _as(error_class: type[SdbakeError], problems: list[Problem]) -> list[tuple[tuple, str, type]]:
    return [(path, message, error_class) for path, message in problems]


def find_problems(loaded: LoadedRecipe, output_root: Path, now: datetime) -> list[tuple[tuple, str, type]]:
    """(recipe path, message, error class) of every problem."""
    recipe = loaded.recipe
    models = _model_problems(loaded)
    for n, lora in enumerate(recipe.defaults.loras):
        models += _model_file(loaded, ("defaults", "loras", n, "name"), lora.name, "loras", folders_ok=False)
    inputs: list[Problem] = []
    prompts: list[Problem] = []
    for index, stage in enumerate(recipe.stages):
        where = ("stages", index)
        for field, name in _image_fields(stage):
            inputs += _input_image(loaded, where + field, name)
        if where + ("loras",) in loaded.positions:       # inherited from [defaults]: checked there
            for n, lora in enumerate(stage.loras or []):
                models += _model_file(loaded, where + ("loras", n, "name"), lora.name, "loras", folders_ok=False)
        if isinstance(stage, InterveneParams):
            inputs += [(where + ("ops", n, "color"), message) for n, op in enumerate(stage.ops)
                       if isinstance(op, FillOp) and (message := colour_problem(op.color))]
        if isinstance(stage, HiresParams):
            models += _upscaler(loaded, where, stage)
        for field in ("prompt", "negative"):
            text = getattr(stage, field, None)
            if text and stage.id not in loaded.resolved:     # resolved prompts read no wildcard file
                prompts += _prompt_problems(loaded, where + (field,), text)
                if field == "prompt":                        # A1111 reads no tags in a negative prompt
                    models += _lora_tag_problems(loaded, where + (field,), text)
        for n, region in enumerate(getattr(stage, "regions", None) or []):
            prompts += _prompt_problems(loaded, where + ("regions", n, "prompt"), region.prompt)
            if "<" in region.prompt and _tag_in(region.prompt):   # it would be cut out and never applied
                prompts.append((where + ("regions", n, "prompt"),
                                "LoRA tags are not read in region prompts: put the tag in the stage's prompt"))
    sizes, outputs = _output_problems(loaded, output_root, now)
    return (_as(ModelError, models) + _as(InputFileError, inputs) + _as(PromptError, prompts)
            + _as(RecipeError, sizes) + _as(OutputError, outputs))


# ---- files ----------------------------------------------------------------------------------------

def _near_files(path: Path, wanted: str) -> str:
    """A did-you-mean among the files next to where `path` should be, spelled as the recipe spells it."""
    if not path.parent.is_dir():
        return ""
    hint = difflib.get_close_matches(path.name, sorted(p.name for p in path.parent.iterdir()), n=1, cutoff=0.6)
    return f" (did you mean `{(Path(wanted).parent / hint[0]).as_posix()}`?)" if hint else ""


def _resolve(loaded: LoadedRecipe, name: str) -> Path:
    if name in loaded.found:              # found elsewhere by its content hash (run IMAGE, bundles)
        return loaded.found[name]
    path = Path(name).expanduser()
    return path if path.is_absolute() else loaded.folder / path


def _regular_file(path: Path, name: str, what: str) -> str | None:
    if not path.exists():
        return f"{what} file not found: {path}{_near_files(path, name)}"
    if not path.is_file():
        return f"{what} `{name}` is not a regular file: {path}"
    return None


# Leading bytes of the formats images come in: recognising them needs no PIL (validate stays light).
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _input_image(loaded: LoadedRecipe, where: tuple, name: str) -> list[Problem]:
    path = _resolve(loaded, name)
    problem = _regular_file(path, name, "mask" if where[-1] == "mask" else "image")
    if problem:
        return [(where, problem)]
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as err:
        return [(where, f"cannot read {path}: {err.strerror or err}")]
    if head.startswith(IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return []
    from PIL import Image, UnidentifiedImageError  # any other format PIL knows: read its header
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - the size is what a broken header fails on
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return [(where, f"not a readable image: {path} ({err})")]
    return []


def _image_fields(stage) -> list[tuple[tuple, str]]:
    """(path inside the stage, file name) of every image or mask file a stage reads."""
    return [(param, name) for param, name, _ in stage.files_read()]


def _model_file(loaded: LoadedRecipe, where: tuple, name: str, kind: str, folders_ok: bool) -> list[Problem]:
    """A checkpoint / VAE / LoRA / upscaler named by path or by a name in the model folders."""
    from sdbake.runner.inputs import found_key
    from sdbake.runner.models.search import list_folder, load_search_config, resolve_model_file
    try:
        path = loaded.found.get(found_key(kind, name)) or resolve_model_file(name, kind, loaded.folder)
    except SdbakeError as err:
        known = [p.name for f in load_search_config().folders[kind] for p in list_folder(f, kind)]
        direct = _resolve(loaded, name)
        hint = did_you_mean(Path(name).name, known) or _near_files(direct, name)
        return [(where, f"{err.message}{hint}")]
    if path.is_dir() and not folders_ok:
        return [(where, f"{kind[:-1]} `{name}` is a folder, not a file: {path}")]
    if path.is_dir() and kind == "checkpoints" and not (path / "model_index.json").is_file():
        return [(where, f"`{name}` is a folder without model_index.json, so not a diffusers model: {path}")]
    if not path.is_dir() and not path.is_file():
        return [(where, f"{kind[:-1]} `{name}` is not a regular file: {path}")]
    return []


def _model_problems(loaded: LoadedRecipe) -> list[Problem]:
    problems = []
    for entry_name, entry in loaded.recipe.models.items():
        where = ("models", entry_name)
        if entry.merge is not None:              # its inputs are entries checked on their own
            continue
        problems += _model_file(loaded, where + ("checkpoint",), entry.checkpoint, "checkpoints", folders_ok=True)
        if entry.vae:
            problems += _model_file(loaded, where + ("vae",), entry.vae, "vae", folders_ok=True)
        for n, lora in enumerate(entry.loras):
            problems += _model_file(loaded, where + ("loras", n, "name"), lora.name, "loras", folders_ok=False)
    return problems


# ---- values ---------------------------------------------------------------------------------------

def colour_problem(colour) -> str | None:
    """What is wrong with a fill colour: '#rrggbb', a CSS colour name, or [r, g, b] (0-255)."""
    if isinstance(colour, list):
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            return f"a colour list is [r, g, b] with values 0-255 (got {colour})"
        return None
    if re.fullmatch(r"#([0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})", colour):
        return None                                       # hex needs no PIL (validate stays light)
    from PIL import ImageColor
    try:
        ImageColor.getrgb(colour)
    except ValueError:
        return (f"unknown colour {colour!r} (use '#rrggbb', a CSS colour name or [r, g, b])"
                f"{did_you_mean(colour.lower(), ImageColor.colormap)}")
    return None


def _upscaler(loaded: LoadedRecipe, where: tuple, stage: HiresParams) -> list[Problem]:
    problems = []
    if stage.upscaler not in LATENT_UPSCALERS + PIXEL_UPSCALERS:
        from sdbake.runner.models.search import upscaler_file_name
        name = upscaler_file_name(stage.upscaler, loaded.folder)
        found = _model_file(loaded, where + ("upscaler",), name, "upscalers", folders_ok=False)
        if found and name != stage.upscaler:
            problems.append((where + ("upscaler",), (f"A1111 upscaler {stage.upscaler!r} needs its model file: put "
                                                    f"{name}.pth (or .safetensors) in an upscaler folder")))
        elif found:
            hint = did_you_mean(stage.upscaler.lower(), LATENT_UPSCALERS + PIXEL_UPSCALERS)
            known = ", ".join(LATENT_UPSCALERS + PIXEL_UPSCALERS)
            problems.append((where + ("upscaler",), (f"unknown upscaler {stage.upscaler!r}: not one of {known} (or A1111's labels such as 'Latent (bicubic antialiased)'), "
                                                    f"and no upscaler model file of that name{hint}")))
    return problems


def _prompt_problems(loaded: LoadedRecipe, where: tuple, text: str) -> list[Problem]:
    """Wildcards without a file (did-you-mean among the wildcard names) and `embedding:name` with no file."""
    from sdbake.runner.models.search import load_search_config
    from sdbake.runner.plan import EMBEDDING_SUFFIXES, wildcard_dirs
    problems = []
    if "__" in text or "{" in text:
        from sdbake.stages.prompts.wildcards import WILDCARD_SUFFIXES, wildcard_files_used
        try:
            wildcard_files_used(text, wildcard_dirs(loaded))
        except PromptError as err:
            names = [p.relative_to(d).with_suffix("").as_posix() for d in wildcard_dirs(loaded) if d.is_dir()
                     for p in d.rglob("*") if p.suffix in WILDCARD_SUFFIXES]
            missing = re.search(r"wildcard __(.+?)__ not found", err.message)
            problems.append((where, err.message + (did_you_mean(missing.group(1), names) if missing else "")))
    folders = [loaded.folder / "embeddings", *load_search_config().folders["embeddings"]]
    stems = {p.stem for f in folders if f.is_dir() for p in f.rglob("*") if p.suffix.lower() in EMBEDDING_SUFFIXES}
    for name in re.findall(r"\bembedding:([\w.-]+)", text):
        if name not in stems:
            problems.append((where, (f"embedding `{name}` not found in: {', '.join(str(f) for f in folders)}"
                                    f"{did_you_mean(name, stems)}")))
    return problems


def _tag_in(text: str) -> bool:
    from sdbake.stages.prompts.extra_networks import EXTRA_NETWORK_TAG
    return EXTRA_NETWORK_TAG.search(text) is not None


def _lora_tag_problems(loaded: LoadedRecipe, where: tuple, text: str) -> list[Problem]:
    """`<lora:name:w>` tags that do not parse, or name no LoRA file (did-you-mean over the LoRA folders'
    file names); `<hypernet:...>` and other kinds are refused."""
    from sdbake.runner.kinds.lora_tags import lora_aliases, resolve_tag_name
    from sdbake.runner.models.search import list_folder, load_search_config
    from sdbake.stages.prompts.extra_networks import EXTRA_NETWORK_TAG, lora_tags
    problems: list[Problem] = []
    for match in EXTRA_NETWORK_TAG.finditer(text):
        try:
            tags = lora_tags(match.group(0))
        except PromptError as err:
            problems.append((where, err.message))
            continue
        try:
            resolve_tag_name(tags[0].name, loaded.folder)
        except SdbakeError as err:
            names = [p.stem for f in load_search_config().folders["loras"] for p in list_folder(f, "loras")]
            names += list(lora_aliases())
            problems.append((where, f"{match.group(0)}: {err.message}{did_you_mean(tags[0].name, names)}"))
    return problems


# ---- outputs --------------------------------------------------------------------------------------

class _ModelLabel:
    """What a template sees of a model (name and short hash) without hashing the weights."""

    def __init__(self, loaded: LoadedRecipe, name: str):
        from sdbake.runner.models.hashing import cached_sha256, short_hash
        from sdbake.runner.models.search import resolve_model_file
        try:
            path = resolve_model_file(loaded.recipe.models[name].checkpoint or name, "checkpoints", loaded.folder)
        except (SdbakeError, KeyError):
            path = Path(name)
        self.model_name = path.stem if path.is_file() else path.name
        known = cached_sha256(path) if path.is_file() else None
        self.model_hash = short_hash(known) if known else PLACEHOLDER_HASH
        self.vae = loaded.recipe.models[name].vae if name in loaded.recipe.models else None


def _output_problems(loaded: LoadedRecipe, output_root: Path, now: datetime) -> tuple[list[Problem], list[Problem]]:
    """Hires sizes, then save/preview templates rendered as the plan will and output collisions."""
    import hashlib

    from sdbake.runner.kinds.common import batch_job, note_a1111_facts, resolve_prompts
    from sdbake.schemas.canonical import canonical_json
    recipe = loaded.recipe
    recipe_hash = hashlib.sha256(canonical_json(recipe, indent=None).encode()).hexdigest()
    current: dict[str, Any] = {"prompts": [], "negatives": [], "seeds": [], "width": 0, "height": 0}
    sizes: list[Problem] = []
    problems: list[Problem] = []
    for index, stage in enumerate(recipe.stages):
        where = ("stages", index)
        if getattr(stage, "model", None) in recipe.models:
            current["model"] = _ModelLabel(loaded, stage.model)
        if isinstance(stage, EncodeParams):
            seeds = stage.image_seeds()
            pinned = loaded.resolved.get(stage.id)    # a recipe from an image brings its prompts
            try:
                if pinned:
                    current.update(prompts=pinned.get("prompts", []), negatives=pinned.get("negatives", []))
                else:
                    current.update(prompts=resolve_prompts(stage.prompt, seeds, loaded),
                                   negatives=resolve_prompts(stage.negative, seeds, loaded))
            except SdbakeError:
                current.update(prompts=[stage.prompt] * len(seeds), negatives=[stage.negative] * len(seeds))
            current.update(seeds=seeds, width=stage.width, height=stage.height, job=batch_job(loaded, stage))
        elif getattr(stage, "sampler", None) is not None:
            current.update(steps=stage.steps, cfg=stage.cfg, sampler=stage.sampler, scheduler=stage.scheduler)
        if isinstance(stage, HiresParams) and current["width"]:
            width, height = stage.target_size(current["width"], current["height"])
            if not (64 <= width <= MAX_SIDE and 64 <= height <= MAX_SIDE):
                sizes.append((where + ("scale",) if not (stage.width or stage.height) else where,
                                 (f"the hires target {width}x{height} is outside 64-{MAX_SIDE} pixels a side "
                                 f"(from {current['width']}x{current['height']})")))
            current.update(width=width, height=height)
        sizes += _region_problems(where, stage, current)
        if isinstance(stage, InterveneParams) and current["width"]:
            sizes += edit_problems(where, stage, current["width"], current["height"],
                                   lambda name: _resolve(loaded, name))
        note_a1111_facts(current, stage)
        if isinstance(stage, SaveParams) and stage.pattern:
            problems += pattern_problems(loaded, where, stage, current, now, output_root)
            continue
        fields = ["path"] if isinstance(stage, SaveParams) else [
            name for name in ("preview", "preview_before") if getattr(stage, name, None)]
        for field in fields:
            problems += template_problems(loaded, where + (field,), getattr(stage, field), stage, current,
                                           recipe_hash, now, output_root)
    return sizes, problems


def _region_problems(where: tuple, stage, current: dict) -> list[Problem]:
    """Region rects inside the image the stage samples (a hires stage's: its target size)."""
    width, height = current["width"], current["height"]
    if not width:
        return []
    return [(where + ("regions", n, "rect"), f"the region rect {region.rect} reaches outside the {width}x{height} image")
            for n, region in enumerate(getattr(stage, "regions", None) or [])
            if region.rect and (region.rect[0] + region.rect[2] > width or region.rect[1] + region.rect[3] > height)]
