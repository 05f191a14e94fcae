"""Read a recipe from TOML or YAML into a validated, resolved `Recipe`, or one error line per problem."""
from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from schemas.errors import RecipeError, SdbakeError
from schemas.positions import Positions, nearest, toml_positions, yaml_positions
from schemas.recipe import Recipe
from schemas.resolve import default_stage_ids, resolve
from schemas.stages import STAGE_TYPES

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # pragma: no cover
    import tomli as tomllib

RECIPE_SUFFIXES = (".toml", ".yaml", ".yml")


@dataclass
class LoadedRecipe:
    recipe: Recipe
    path: Path                      # the recipe file (or a label such as "image.png[sdbake]")
    folder: Path                    # where relative paths inside the recipe resolve
    positions: Positions = field(default_factory=dict)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> LoadedRecipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"no such recipe file", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read recipe: {err}", file=str(path)) from None
    fmt = {"toml": "toml", "yaml": "yaml", "yml": "yaml"}.get(path.suffix.lower().lstrip("."))
    if fmt is None:
        raise RecipeError(f"unknown recipe format `{path.suffix}` (use .toml, .yaml or .yml)", file=str(path))
    return load_text(text, fmt, label=str(path), folder=path.parent.resolve(), overrides=overrides)


def load_text(text: str, fmt: str, *, label: str, folder: Path, overrides: list[str] = ()) -> LoadedRecipe:
    document, positions, problems = parse_document(text, fmt, label)
    if problems:
        raise RecipeError(f"{len(problems)} error(s)", errors=problems)
    apply_overrides(document, overrides, label)
    recipe = validate_document(document, positions, label)
    return LoadedRecipe(recipe=recipe, path=Path(label), folder=folder, positions=positions)


def parse_document(text: str, fmt: str, label: str) -> tuple[dict, Positions, list[SdbakeError]]:
    """Syntax only: the plain data, where each key is, and syntax errors (file:line:col)."""
    if fmt == "toml":
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            message = str(err)
            found = re.search(r"\(at line (\d+), column (\d+)\)", message)
            line, col = (int(found.group(1)), int(found.group(2))) if found else (None, None)
            if found is None and "end of document" in message:
                line, col = text.count("\n") + 1, len(text.rsplit("\n", 1)[-1]) + 1
            message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message) or "invalid TOML"
            return {}, {}, [RecipeError(f"invalid TOML: {message}", file=label, line=line, column=col)]
        return document, toml_positions(text), []
    try:
        document = yaml.safe_load(text)
        positions, duplicates = yaml_positions(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return {}, {}, [RecipeError(f"invalid YAML: {problem}", file=label, line=line, column=col)]
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        return {}, {}, [RecipeError(f"a recipe is a mapping of keys, but this document is {kind}",
                                    file=label, line=1, column=1)]
    if not all(isinstance(k, str) for k in _all_keys(document)):
        bad = next(k for k in _all_keys(document) if not isinstance(k, str))
        return {}, {}, [RecipeError(f"keys must be strings (got {bad!r})", file=label, line=1, column=1)]
    problems = [_error_at(label, positions, where, message) for where, message in duplicates]
    return document, positions, problems


def _all_keys(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _all_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _all_keys(item)


def validate_document(document: dict, positions: Positions, label: str) -> Recipe:
    """Field validation, then defaults/ids/cross-field checks; every problem reported at once."""
    try:
        recipe = Recipe.model_validate(document)
    except ValidationError as err:
        problems = _pydantic_problems(err, document)
        raise RecipeError(f"{len(problems)} error(s)",
                          errors=[_error_at(label, positions, where, msg) for where, msg in problems]) from None
    problems = resolve(recipe)
    if problems:
        raise RecipeError(f"{len(problems)} error(s)",
                          errors=[_error_at(label, positions, where, msg) for where, msg in problems])
    return recipe


def format_path(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "recipe"


def _error_at(label: str, positions: Positions, path: tuple, message: str) -> RecipeError:
    line, col = nearest(positions, path) or (None, None)
    return RecipeError(f"{format_path(path)}: {message}", file=label, line=line, column=col)


# ---- pydantic errors -> our messages ------------------------------------------------------------

def _clean_loc(loc: tuple, document: dict) -> tuple:
    """Drop what pydantic adds to a location: discriminator tags and union member names."""
    clean: list = []
    node: Any = document
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node:
            tag = node.get("type") if clean and clean[-2:-1] == ["stages"] else node.get("op")
            if len(clean) >= 2 and isinstance(clean[-1], int) and clean[-2] in ("stages", "ops") and part == tag:
                continue
        if not isinstance(node, (dict, list)) and isinstance(part, str):
            continue                     # a union member name such as `float` or `list[float]`
        if isinstance(node, list) and not isinstance(part, int):
            continue
        clean.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(clean)


def _allowed_keys(path: tuple, document: dict) -> list[str]:
    """Field names of the model that `path` (a mapping) is validated against."""
    model: Any = Recipe
    node: Any = document
    for part in path:
        if model is None:
            return []
        annotation = model.model_fields[part].annotation if isinstance(model, type) and issubclass(
            model, BaseModel) and isinstance(part, str) and part in model.model_fields else model
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
        model = _unwrap(annotation, node, part)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(annotation: Any, node: Any, part: Any) -> Any:
    from schemas.stages import AdjustOp, BlurOp, FillOp, ImageOp, PasteOp
    ops = {"paste": PasteOp, "image": ImageOp, "adjust": AdjustOp, "blur": BlurOp, "fill": FillOp}
    while True:
        origin = get_origin(annotation)
        if origin in (list, dict) and not isinstance(part, str | int):
            return annotation
        if origin is list or origin is dict:
            return get_args(annotation)[-1] if not isinstance(node, (dict, list)) or True else annotation
        args = [a for a in get_args(annotation) if a is not type(None)]
        if origin is Union or (args and origin is not None and getattr(origin, "__name__", "") == "UnionType"):
            if isinstance(node, dict) and node.get("type") in STAGE_TYPES:
                return STAGE_TYPES[node["type"]]
            if isinstance(node, dict) and node.get("op") in ops:
                return ops[node["op"]]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            return models[0] if len(models) == 1 else (args[0] if args else None)
        if args and hasattr(annotation, "__metadata__"):
            annotation = args[0]
            continue
        return annotation


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _got(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: dict, path: tuple, document: dict) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        key = path[-1]
        allowed = _allowed_keys(path[:-1], document)
        hint = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        return f"unknown key `{key}`" + (f" (did you mean `{hint[0]}`?)" if hint else "")
    if kind == "missing":
        return "required key is missing"
    bounds = {"less_than_equal": ("<=", "le"), "less_than": ("<", "lt"), "greater_than": (">", "gt"),
              "greater_than_equal": (">=", "ge")}
    if kind in bounds:
        symbol, name = bounds[kind]
        return f"must be {symbol} {_number(ctx.get(name))} (got {_got(value)})"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx.get('multiple_of')} (got {_got(value)})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {_got(value)})"
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        expected = ctx.get("expected_tags", "")
        names = [t.strip().strip("'") for t in str(expected).split(",")]
        hint = difflib.get_close_matches(str(tag), names, n=1)
        what = "stage type" if ctx.get("discriminator") == "'type'" else "op"
        return f"unknown {what} {tag!r} (expected one of {expected})" + (
            f" (did you mean `{hint[0]}`?)" if hint else "")
    if kind == "union_tag_not_found":
        key = str(ctx.get("discriminator", "type")).strip("'")
        return f"missing `{key}` key"
    if kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        length = ctx.get("actual_length")
        if isinstance(value, str):
            return f"must not be empty" if limit == 1 else f"must have {limit} characters or more"
        if kind == "too_short" and limit == 1:
            return "must not be empty"
        word = "at least" if kind == "too_short" else "at most"
        return f"must have {word} {limit} items (got {length})"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')} (got {_got(value)})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    type_words = {"int_type": "an integer", "float_type": "a number", "string_type": "a string",
                  "bool_type": "true or false", "list_type": "a list", "dict_type": "a table",
                  "model_type": "a table", "model_attributes_type": "a table", "int_from_float": "an integer"}
    if kind in type_words:
        return f"must be {type_words[kind]} (got {_got(value)})"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}"


def _pydantic_problems(err: ValidationError, document: dict) -> list[tuple[tuple, str]]:
    merged: dict[tuple, list[str]] = {}
    for item in err.errors(include_url=False):
        path = _clean_loc(item["loc"], document)
        message = _message(item, path, document)
        if message not in merged.setdefault(path, []):
            merged[path].append(message)
    return [(path, "; or ".join(messages)) for path, messages in merged.items()]


# ---- --set key=value ----------------------------------------------------------------------------

def apply_overrides(document: dict, overrides: list[str], label: str) -> None:
    """`stages.hires.denoise=0.5`: a dotted path (stage ids name stages) and a TOML/YAML scalar."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item}: expected KEY=VALUE", file=label)
        key, raw_value = item.split("=", 1)
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
        parts = key.strip().split(".")
        node: Any = document
        for depth, part in enumerate(parts[:-1]):
            if node is document.get("stages") and isinstance(node, list):
                node = _stage_by_id(node, part, key, label)
                continue
            if isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise RecipeError(f"--set {key}: `{'.'.join(parts[:depth + 1])}` is not a table", file=label)
        if not isinstance(node, dict):
            raise RecipeError(f"--set {key}: `{'.'.join(parts[:-1])}` is not a table", file=label)
        node[parts[-1]] = value


def _stage_by_id(stages: list, wanted: str, key: str, label: str) -> dict:
    ids = default_stage_ids([s.get("type", "?") if isinstance(s, dict) else "?" for s in stages])
    for stage, generated in zip(stages, ids):
        if isinstance(stage, dict) and stage.get("id", generated) == wanted:
            return stage
    if wanted.isdigit() and int(wanted) < len(stages):
        return stages[int(wanted)]
    known = ", ".join(s.get("id", g) for s, g in zip(stages, ids) if isinstance(s, dict))
    raise RecipeError(f"--set {key}: no stage `{wanted}` (stages: {known})", file=label)
