"""Read a recipe from TOML or YAML into a validated, resolved `Recipe`, or one error line per problem."""
from __future__ import annotations

import difflib
import re
import reprlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from sdbake.schemas.errors import RecipeError, SdbakeError
from sdbake.schemas.positions import Positions, nearest, toml_positions, yaml_positions
from sdbake.schemas.recipe import Recipe
from sdbake.schemas.resolve import default_stage_ids, resolve

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # pragma: no cover
    import tomli as tomllib

RECIPE_SUFFIXES = (".toml", ".yaml", ".yml")


@dataclass(frozen=True)
class BatchJob:
    """Where a recipe sits in an A1111 batch count job (`n_iter`, rendered as sweep points): its batch, the
    number of batches, and each encode stage's seeds over the whole job (A1111's `p.all_seeds`), which
    the file name keys `[generation_number]`, `[seed_first]` and `[seed_last]` count over."""
    iteration: int                              # 0-based, A1111's p.iteration
    n_iter: int
    seeds: dict[str, list[int]]                 # encode stage id -> every image's seed, batch after batch


@dataclass
class LoadedRecipe:
    recipe: Recipe
    path: Path                      # the recipe file (or a label such as "image.png[sdbake]")
    folder: Path                    # where relative paths inside the recipe resolve
    positions: Positions = field(default_factory=dict)
    # file name as the recipe writes it -> the file found elsewhere by its content hash (`run IMAGE`,
    # bundles): the recipe keeps its own words, so what it embeds stays the same
    found: dict[str, Path] = field(default_factory=dict)
    # stage id -> {"prompts": [...], "negatives": [...]}: the prompts an image's batch used, wildcards
    # already expanded (`run IMAGE` renders them, not the templates)
    resolved: dict[str, dict] = field(default_factory=dict)
    job: BatchJob | None = None     # a batch of an `n_iter` job (runner/sweep/matrix.py batch_sweep)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> LoadedRecipe:
    path = Path(path)
    fmt = {"toml": "toml", "yaml": "yaml", "yml": "yaml"}.get(path.suffix.lower().lstrip("."))
    if fmt is None:      # before reading: an image or a folder gets this line, not a decoding error
        raise RecipeError(f"unknown recipe format `{path.suffix}` (use .toml, .yaml or .yml)", file=str(path))
    if path.exists() and not path.is_file() and not path.is_dir():
        from sdbake.schemas.files import require_regular_file
        require_regular_file(path, "recipe", RecipeError)     # a FIFO would block read_text forever
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError("no such recipe file", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read recipe: {err}", file=str(path)) from None
    return load_text(text, fmt, label=str(path), folder=path.parent.resolve(), overrides=overrides)


def load_text(text: str, fmt: str, *, label: str, folder: Path, overrides: list[str] = ()) -> LoadedRecipe:
    try:
        document, positions, problems = parse_document(text, fmt, label)
    except RecursionError:      # the TOML and YAML parsers recurse per level of nesting
        raise RecipeError("lists or tables are nested too deeply to read", file=label, line=1, column=1) from None
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
        if not document:
            return {}, {}, [_not_a_mapping(document, label)]
        return document, toml_positions(text), []
    try:
        positions, structure_problems = yaml_positions(text)
        if structure_problems:      # checked first: a recursive alias would make safe_load's result endless
            return {}, {}, [_error_at(label, positions, where, message) for where, message in structure_problems]
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        return {}, {}, [RecipeError(f"invalid YAML: {problem}", file=label, line=line, column=col)]
    if not isinstance(document, dict) or not document:
        return {}, {}, [_not_a_mapping(document, label)]
    bad = [k for k in _all_keys(document, set()) if not isinstance(k, str)]
    if bad:
        return {}, {}, [RecipeError(f"keys must be strings (got {bad[0]!r})", file=label, line=1, column=1)]
    return document, positions, []


def _not_a_mapping(document: Any, label: str) -> RecipeError:
    """The same line for an empty TOML or YAML file; YAML may also hold a list or a bare value."""
    words = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    kind = "empty" if document is None or document == {} else words.get(type(document), "not a mapping")
    return RecipeError(f"a recipe is a mapping of keys, but this document is {kind}", file=label, line=1, column=1)


def _all_keys(node: Any, visited: set[int]):
    """Every mapping key; a container shared through YAML aliases is visited once."""
    if not isinstance(node, (dict, list)) or id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _all_keys(value, visited)
    else:
        for item in node:
            yield from _all_keys(item, visited)


def validate_document(document: dict, positions: Positions, label: str) -> Recipe:
    """Field validation, then defaults/ids/cross-field checks; every problem reported at once."""
    try:
        recipe = Recipe.model_validate(document)
    except ValidationError as err:
        problems = _pydantic_problems(err, document)
        raise RecipeError(f"{len(problems)} error(s)", errors=_errors_in_file_order(label, positions, problems)) from None
    problems = resolve(recipe)
    if not problems:          # limits read resolved values (inherited sizes, stage ids)
        from sdbake.schemas.limits import resource_problems
        problems = resource_problems(recipe)
    if problems:
        raise RecipeError(f"{len(problems)} error(s)", errors=_errors_in_file_order(label, positions, problems))
    return recipe


def _errors_in_file_order(label: str, positions: Positions,
                          problems: list[tuple[tuple, str]]) -> list[RecipeError]:
    errors = [_error_at(label, positions, where, message) for where, message in problems]
    return sorted(errors, key=lambda e: (e.line or 0, e.column or 0))


def format_path(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "recipe"


def _error_at(label: str, positions: Positions, path: tuple, message: str) -> RecipeError:
    line, col = nearest(positions, path) or (None, None)
    return RecipeError(f"{format_path(path)}: {message}", file=label, line=line, column=col)


# ---- pydantic errors -> our messages ------------------------------------------------------------

# How pydantic names the members of a plain (not discriminated) union in an error location.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|(list|dict|tuple|set|function-\w+)\[.*\])$")


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
        if isinstance(node, dict) and isinstance(part, str) and part not in node and _UNION_MEMBER.match(part):
            continue                     # the same, for a mapping given where a scalar or list belongs
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
        model = _unwrap(annotation, node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(annotation: Any, node: Any) -> Any:
    """The type that the value `node` is validated against: list/dict items, Optional, Annotated,
    and for a discriminated union the member whose `type`/`op` tag the value carries."""
    while True:
        origin = get_origin(annotation)
        if origin is list or origin is dict:
            return get_args(annotation)[-1]
        args = [a for a in get_args(annotation) if a is not type(None)]
        if origin is Union or (args and origin is not None and getattr(origin, "__name__", "") == "UnionType"):
            members = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            for member in members:
                for tag in ("type", "op"):
                    if isinstance(node, dict) and tag in member.model_fields and \
                            node.get(tag) == member.model_fields[tag].default:
                        return member
            return members[0] if len(members) == 1 else (args[0] if args else None)
        if args and hasattr(annotation, "__metadata__"):
            annotation = args[0]
            continue
        return annotation


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxdict = 6
_SHORT.maxstring = _SHORT.maxother = 60


def _got(value: Any) -> str:
    if isinstance(value, (list, dict)):
        text = _SHORT.repr(value)          # bounded: a value built from YAML aliases can be huge
    else:
        text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_WORDS = {"int_type": "an integer", "float_type": "a number", "string_type": "a string",
               "bool_type": "true or false", "list_type": "a list", "dict_type": "a table",
               "model_type": "a table", "model_attributes_type": "a table", "int_from_float": "an integer",
               "finite_number": "a finite number"}


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
        expected = str(ctx.get("expected"))
        choice = "one of " if " or " in expected else ""     # `version = 2` reads "must be 1 (got 2)"
        return f"must be {choice}{expected} (got {_got(value)})"
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
            return "must not be empty" if limit == 1 else f"must have {limit} characters or more"
        if kind == "too_short" and limit == 1:
            return "must not be empty"
        word = "at least" if kind == "too_short" else "at most"
        return f"must have {word} {limit} items (got {length})"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')} (got {_got(value)})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]} (got {_got(value)})"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}"


def _pydantic_problems(err: ValidationError, document: dict) -> list[tuple[tuple, str]]:
    merged: dict[tuple, list[str]] = {}
    items = [(_clean_loc(item["loc"], document), item) for item in err.errors(include_url=False)]
    deeper = {path[:cut] for path, _ in items for cut in range(len(path))}
    for path, item in items:
        if item["type"] in _TYPE_WORDS and path in deeper:
            continue      # `float | list[float]` given a list: the list member's errors say more than "not a number"
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
        parts = key.strip().split(".")
        if not all(parts):
            raise RecipeError(f"--set {item}: expected KEY=VALUE with a dotted KEY such as "
                              f"stages.hires.denoise", file=label)
        try:
            value = yaml.safe_load(raw_value) if raw_value.strip() else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise RecipeError(f"--set {item}: the value is not a TOML/YAML scalar: {problem}", file=label) from None
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
    known = ", ".join(str(s.get("id", g)) for s, g in zip(stages, ids) if isinstance(s, dict))
    raise RecipeError(f"--set {key}: no stage `{wanted}` (stages: {known})", file=label)
