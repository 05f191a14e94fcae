"""What a `[matrix]` key names in the recipe, what type its values have, and how a value is applied.

Keys are dotted paths into the recipe document, as `--set` reads them (`stages.<stage id>.field`
addresses a stage by its id), plus two short forms:
- a bare field of `[defaults]` (`seed`, `cfg`, `steps`, `sampler`, ...) means `defaults.<field>`,
  so it changes every stage that inherits it (a stage that sets its own value keeps it);
- `prompt_sr` is A1111's "Prompt S/R": the first value is found in every `prompt` and `negative` of
  the stages and replaced by each value in turn.
The axis type (int, float, bool, text) comes from the schema field the key names.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from sdbake.runner.sweep.ranges import SearchReplace, parse_axis, parse_str_axis, prompt_sr
from sdbake.schemas.errors import RecipeError
from sdbake.schemas.recipe import Defaults, ModelEntry, Recipe
from sdbake.schemas.resolve import default_stage_ids
from sdbake.schemas.stages import STAGE_TYPES

PROMPT_SR = "prompt_sr"
COMBINATORIAL = "@combinatorial"
PROMPT_FIELDS = ("prompt", "negative")


@dataclass
class Axis:
    key: str                      # as written in [matrix] or --matrix
    path: tuple[str, ...]         # the document path it sets; () for Prompt S/R
    kind: str                     # "int" | "float" | "bool" | "str" | "any" | "sr"
    values: list
    title: str                    # the name on the grid: "seed", "cfg", "hires denoise", "Prompt S/R"

    def label(self, value: Any) -> str:
        """A value as the grid shows it (A1111: floats rounded to 8 places, checkpoint paths to file names)."""
        if isinstance(value, SearchReplace):
            return value.replace
        if isinstance(value, float):
            return str(round(value, 8))
        if isinstance(value, bool):
            return "true" if value else "false"
        if self.path[-1:] == ("checkpoint",) and isinstance(value, str):
            return os.path.basename(value.rstrip("/\\")) or value
        return str(value)


def stage_index(document: dict, stage_id: str, key: str) -> int:
    """Index of the stage with this id (explicit, or the default `<type>` / `<type>-<n>`)."""
    stages = document.get("stages")
    if not isinstance(stages, list):
        raise RecipeError(f"matrix `{key}`: the recipe has no stages")
    ids = stage_ids(document)
    if stage_id in ids:
        return ids.index(stage_id)
    if stage_id.isdigit() and int(stage_id) < len(stages):          # as --set allows
        return int(stage_id)
    raise RecipeError(f"matrix `{key}`: no stage `{stage_id}` (stages: {', '.join(ids)})")


def stage_ids(document: dict) -> list[str]:
    stages = [s if isinstance(s, dict) else {} for s in document.get("stages") or []]
    generated = default_stage_ids([str(s.get("type", "?")) for s in stages])
    return [str(s.get("id", g)) for s, g in zip(stages, generated)]


def _unknown_field(key: str, name: str, model: type[BaseModel], where: str) -> RecipeError:
    hint = difflib.get_close_matches(name, list(model.model_fields), n=1, cutoff=0.6)
    return RecipeError(f"matrix `{key}`: {where} has no field `{name}`"
                       + (f" (did you mean `{hint[0]}`?)" if hint else ""))


def resolve_path(document: dict, key: str) -> tuple[tuple[str, ...], Any]:
    """The document path a matrix key sets and the schema annotation of that field."""
    parts = tuple(key.strip().split("."))
    if not all(parts):
        raise RecipeError(f"matrix `{key}`: expected a dotted key such as stages.hires.denoise")
    if len(parts) == 1:
        if parts[0] in Defaults.model_fields:
            parts = ("defaults", parts[0])
        elif parts[0] not in Recipe.model_fields or parts[0] in ("matrix", "version", "stages", "models"):
            known = sorted(Defaults.model_fields) + [PROMPT_SR]
            hint = difflib.get_close_matches(parts[0], known, n=1, cutoff=0.6)
            raise RecipeError(f"matrix `{key}`: not a recipe field (short keys are fields of [defaults] or "
                              f"`{PROMPT_SR}`)" + (f" (did you mean `{hint[0]}`?)" if hint else ""))
    model: type[BaseModel] = Recipe
    index = 0
    while index < len(parts) - 1:
        part = parts[index]
        if model is Recipe and part == "stages":
            stage = document["stages"][stage_index(document, parts[index + 1], key)]
            model = STAGE_TYPES.get(stage.get("type")) if isinstance(stage, dict) else None
            if model is None:
                raise RecipeError(f"matrix `{key}`: stage `{parts[index + 1]}` has no known type")
            index += 2
            continue
        if model is Recipe and part == "models":
            model, index = ModelEntry, index + 2
            continue
        if part not in model.model_fields:
            raise _unknown_field(key, part, model, f"`{'.'.join(parts[:index]) or 'the recipe'}`")
        inner = _model_in(model.model_fields[part].annotation)
        if inner is None:
            raise RecipeError(f"matrix `{key}`: `{'.'.join(parts[:index + 1])}` is not a table")
        model, index = inner, index + 1
    if index != len(parts) - 1:
        raise RecipeError(f"matrix `{key}`: expected a field after `{'.'.join(parts)}`")
    name = parts[-1]
    if name not in model.model_fields or name in ("type", "id"):
        raise _unknown_field(key, name, model, f"`{'.'.join(parts[:-1])}`")
    return parts, model.model_fields[name].annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _members(annotation: Any) -> list:
    """The plain types an annotation admits: Optional, Union and Annotated unwrapped."""
    origin = get_origin(annotation)
    if hasattr(annotation, "__metadata__"):
        return _members(get_args(annotation)[0])
    if origin is Union or getattr(origin, "__name__", "") == "UnionType":
        return [m for arg in get_args(annotation) for m in _members(arg)]
    if origin is Literal:
        return [type(arg) for arg in get_args(annotation)]
    return [annotation]


def kind_of(annotation: Any) -> str:
    """How A1111 would read the axis: "int", "float", "bool", "str", or "any" (lists, tables)."""
    members = [m for m in _members(annotation) if m is not type(None)]
    for kind, python_type in (("int", int), ("float", float), ("bool", bool), ("str", str)):
        if python_type in members:
            return kind
    return "any"


def build_axis(document: dict, key: str, spec: Any, folder: Path | None = None) -> Axis:
    """One axis from a `[matrix]` entry; `folder` is where the recipe's wildcard folder is."""
    if key.strip() == PROMPT_SR:
        if not isinstance(spec, (str, list)):
            raise RecipeError(f"matrix `{key}`: give a list or a comma-separated string (got {spec!r})")
        values = parse_str_axis(spec, key) if isinstance(spec, str) else [str(v) for v in spec]
        pairs = prompt_sr(values, key)
        _require_found(document, pairs[0].find, key)
        return Axis(key, (), "sr", pairs, "Prompt S/R")
    path, annotation = resolve_path(document, key)
    kind = kind_of(annotation)
    if spec == COMBINATORIAL:
        values = _combinatorial_values(document, path, key, folder)
    else:
        values = parse_axis(kind, spec, key)
    return Axis(key, path, kind, values, _title(path))


def _title(path: tuple[str, ...]) -> str:
    if path[0] == "defaults" or len(path) == 1:
        return path[-1]
    return " ".join(path[1:])          # "hires denoise", "base checkpoint"


def prompt_texts(document: dict) -> list[tuple[dict, str]]:
    """(stage table, field) of every prompt and negative written in the stages."""
    found = []
    for stage in document.get("stages") or []:
        if isinstance(stage, dict):
            found += [(stage, name) for name in PROMPT_FIELDS if isinstance(stage.get(name), str)]
    return found


def _require_found(document: dict, find: str, key: str) -> None:
    # As A1111: Prompt S/R fails when the text is in neither the prompt nor the negative prompt.
    if not any(find in stage[name] for stage, name in prompt_texts(document)):
        raise RecipeError(f"matrix `{key}`: Prompt S/R did not find {find!r} in any prompt or negative")


def _combinatorial_values(document: dict, path: tuple[str, ...], key: str, folder: Path | None) -> list[str]:
    """Every prompt a wildcard template can produce (`{a|b}`, `__name__`), one cell each."""
    template = get_path(document, path, key)
    if not isinstance(template, str):
        raise RecipeError(f"matrix `{key}`: {COMBINATORIAL} needs a prompt text at `{key}`")
    values = _dynamicprompts_all(template, _wildcard_dirs(folder))
    if not values:
        raise RecipeError(f"matrix `{key}`: {COMBINATORIAL}: the prompt expands to nothing")
    return values


def _wildcard_dirs(folder: Path | None) -> list[Path]:
    from sdbake.runner.models.search import load_search_config  # the same folders as the plan uses
    return [(folder or Path(".")) / "wildcards", *load_search_config().folders["wildcards"]]


def _dynamicprompts_all(template: str, folders: list[Path]) -> list[str]:
    """dynamicprompts' combinatorial generator; `__name__` files come from the first wildcard folder
    that exists (the recipe's `wildcards/`, then the configured ones)."""
    from dynamicprompts.generators import CombinatorialPromptGenerator
    from dynamicprompts.wildcards import WildcardManager
    existing = [f for f in folders if f.is_dir()]
    generator = CombinatorialPromptGenerator(WildcardManager(existing[0] if existing else None))
    return list(generator.generate(template, max_prompts=None))


def get_path(document: dict, path: tuple[str, ...], key: str) -> Any:
    node: Any = document
    for index, part in enumerate(path):
        if index > 0 and path[index - 1] == "stages" and node is document.get("stages"):
            node = node[stage_index(document, part, key)]
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def apply_value(document: dict, axis: Axis, value: Any) -> None:
    """Set one axis value in a document (a private copy): as `--set`, or Prompt S/R replacement."""
    if axis.kind == "sr":
        for stage, name in prompt_texts(document):
            stage[name] = stage[name].replace(value.find, value.replace)
        return
    node: Any = document
    for index, part in enumerate(axis.path[:-1]):
        if index > 0 and axis.path[index - 1] == "stages" and node is document.get("stages"):
            node = node[stage_index(document, part, axis.key)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise RecipeError(f"matrix `{axis.key}`: `{'.'.join(axis.path[:index + 1])}` is not a table")
    if not isinstance(node, dict):
        raise RecipeError(f"matrix `{axis.key}`: `{'.'.join(axis.path[:-1])}` is not a table")
    node[axis.path[-1]] = value
