"""JSON Schema of the recipe format, for editors' YAML/TOML language servers."""
from __future__ import annotations

from sdbake.schemas.recipe import Recipe


def recipe_json_schema() -> dict:
    schema = Recipe.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "sdbake recipe"
    return schema
