"""docs/recipes.md is generated from the schema and must be current; its worked examples validate."""
from __future__ import annotations

from pathlib import Path

import pytest
from sdbake.runner.reference import EXAMPLES, recipe_reference_markdown, template_variable_names

REPO = Path(__file__).resolve().parent.parent
HEADER = '''version = 1
name = "example"
[models.base]
checkpoint = "../models/demo"
[defaults]
model = "base"
steps = 20
'''
BEFORE = {"encode": "", "sample": '[[stages]]\ntype = "encode"\n',
          "intervene": '[[stages]]\ntype = "encode"\n[[stages]]\ntype = "sample"\nend = 10\n',
          "hires": '[[stages]]\ntype = "encode"\n[[stages]]\ntype = "sample"\n',
          "inpaint": '[[stages]]\ntype = "encode"\n[[stages]]\ntype = "sample"\n',
          "save": '[[stages]]\ntype = "encode"\n[[stages]]\ntype = "sample"\n'}


def test_docs_recipes_md_is_current():
    current = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert current == recipe_reference_markdown(), "docs/recipes.md is stale: run `sdbake schema --markdown " \
                                                   "--write docs/recipes.md`"


def test_the_reference_names_every_field_stage_sampler_upscaler_and_variable():
    from sdbake.schemas.names import SAMPLERS, SCHEDULERS
    from sdbake.schemas.stages import LATENT_UPSCALERS, PIXEL_UPSCALERS, STAGE_TYPES
    text = recipe_reference_markdown()
    for kind, cls in STAGE_TYPES.items():
        assert f"## Stage `{kind}`" in text
        for field in cls.model_fields:
            assert f"| `{field}` |" in text, (kind, field)
    from sdbake.schemas.jsonschema import recipe_json_schema
    for name in recipe_json_schema()["$defs"]:
        assert f'<a id="{name.lower()}"></a>' in text, name
    for op in ("paste", "image", "adjust", "blur", "fill"):
        assert f"## intervene op `{op}`" in text
    for name in (*SAMPLERS, *SCHEDULERS, *LATENT_UPSCALERS, *PIXEL_UPSCALERS, *template_variable_names()):
        assert f"`{name}`" in text, name
    assert "## Wildcard folders" in text and "words(n)" in text


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_worked_example_validates(kind, tmp_path):
    from sdbake.schemas.loader import load_text
    loaded = load_text(HEADER + BEFORE[kind] + EXAMPLES[kind], "toml", label="example.toml", folder=tmp_path)
    assert kind in [stage.type for stage in loaded.recipe.stages]
    assert f"```toml\n{EXAMPLES[kind].rstrip()}\n```" in recipe_reference_markdown()
