"""The normalized recipe: defaults expanded into every stage, keys sorted, one spelling for TOML and YAML."""
from __future__ import annotations

import json
from typing import Any

from sdbake.schemas.recipe import Recipe


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def canonical_dict(recipe: Recipe) -> dict:
    return _sorted(recipe.model_dump(mode="json", exclude_none=True))


def canonical_json(recipe: Recipe, indent: int | None = 2) -> str:
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(canonical_dict(recipe), indent=indent, sort_keys=True, ensure_ascii=False,
                      separators=separators) + ("\n" if indent else "")


def dumps(recipe: Recipe, fmt: str = "toml") -> str:
    data = canonical_dict(recipe)
    if fmt == "json":
        return canonical_json(recipe)
    if fmt == "yaml":
        import yaml
        return yaml.safe_dump(data, sort_keys=True, allow_unicode=True, default_flow_style=False)
    if fmt == "toml":
        import tomli_w
        return tomli_w.dumps(data)
    raise ValueError(f"unknown format {fmt!r}")
