"""A `[matrix]` expands into validated recipes, one per point, ordered so that neighbours share stages."""
from __future__ import annotations

import copy

import pytest
from sdbake.runner.sweep.axes import build_axis, kind_of, resolve_path
from sdbake.runner.sweep.matrix import (
    expand,
    first_stage_changed,
    has_matrix,
    load_sweep,
    matrix_entries,
    parse_cli_matrix,
)
from sdbake.schemas.errors import RecipeError
from sdbake.schemas.loader import load_recipe


def base_document(**matrix) -> dict:
    return {
        "version": 1, "name": "sweep",
        "models": {"base": {"checkpoint": "models/tiny"}},
        "defaults": {"model": "base", "seed": 42, "width": 64, "height": 64, "steps": 4, "cfg": 5.0},
        "stages": [{"type": "encode", "prompt": "a red cat", "negative": "blurry cat"},
                   {"type": "sample"},
                   {"type": "hires", "scale": 2.0, "denoise": 0.5, "steps": 2},
                   {"type": "save", "path": "out/{{ seed }}.png"}],
        "matrix": dict(matrix),
    }


def test_seed_by_cfg_gives_six_concrete_recipes():
    document = base_document(seed="1-3", **{"defaults.cfg": [5.0, 7.0]})
    points = expand(document)
    assert len(points) == 6
    seen = {(p.loaded.recipe.defaults.seed, p.loaded.recipe.stages[1].cfg) for p in points}
    assert seen == {(s, c) for s in (1, 2, 3) for c in (5.0, 7.0)}
    for point in points:
        assert "matrix" not in point.document
        assert point.loaded.recipe.matrix == {}
        seed, cfg = point.coordinates["seed"], point.coordinates["defaults.cfg"]
        assert point.index == ((1, 2, 3).index(seed), (5.0, 7.0).index(cfg))
        assert point.loaded.recipe.stages[0].seed == seed        # inherited by the encode stage
        assert point.loaded.recipe.stages[2].cfg == cfg          # and by hires
    assert document["matrix"] and document["defaults"]["seed"] == 42      # the input is left alone


def test_points_run_with_the_axis_of_later_stages_varying_fastest():
    # the cfg axis is X (first key) but it changes a later stage than the seed: seed varies slowest
    document = base_document(**{"defaults.cfg": "5, 7", "seed": "1-2"})
    order = [(p.coordinates["seed"], p.coordinates["defaults.cfg"]) for p in expand(document)]
    assert order == [(1, 5.0), (1, 7.0), (2, 5.0), (2, 7.0)]


def test_hires_denoise_axis_varies_fastest_after_a_seed_axis():
    document = base_document(**{"stages.hires.denoise": "0.2-0.8 [4]", "seed": "1, 2"})
    points = expand(document)
    assert [p.coordinates["seed"] for p in points] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [p.loaded.recipe.stages[2].denoise for p in points[:4]] == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_first_stage_changed_by_each_kind_of_key():
    document = base_document()
    index = {key: first_stage_changed(document, build_axis(document, key, spec)) for key, spec in
             [("seed", "1"), ("cfg", "5"), ("stages.hires.denoise", "0.5"), ("models.base.checkpoint", "a"),
              ("prompt_sr", "red, blue"), ("name", "x")]}
    assert index == {"seed": 0, "cfg": 1, "stages.hires.denoise": 2, "models.base.checkpoint": 0,
                     "prompt_sr": 0, "name": 4}


def test_axis_type_comes_from_the_schema_field():
    document = base_document()
    kinds = {key: kind_of(resolve_path(document, key)[1]) for key in
             ["seed", "defaults.steps", "cfg", "stages.hires.denoise", "stages.encode.prompt", "sampler",
              "models.base.checkpoint", "stages.sample.end", "stages.hires.tiled", "defaults.loras"]}
    assert kinds == {"seed": "int", "defaults.steps": "int", "cfg": "float", "stages.hires.denoise": "float",
                     "stages.encode.prompt": "str", "sampler": "str", "models.base.checkpoint": "str",
                     "stages.sample.end": "int", "stages.hires.tiled": "bool", "defaults.loras": "any"}


def test_an_invalid_point_fails_the_whole_sweep_naming_its_coordinates():
    document = base_document(seed="1-2", **{"defaults.cfg": "50-150 (+50)"})
    with pytest.raises(RecipeError) as caught:
        expand(document)
    text = str(caught.value)
    assert "2 of 6 sweep points are invalid" in caught.value.message
    assert "sweep point [seed=1, defaults.cfg=150.0]" in text and "must be <= 100" in text
    assert "defaults.cfg=100.0" not in text


def test_bad_range_and_unknown_keys_name_the_matrix_key():
    with pytest.raises(RecipeError, match="matrix `seed`"):
        expand(base_document(seed="1-5 (2)"))
    with pytest.raises(RecipeError, match="did you mean `denoise`"):
        expand(base_document(**{"stages.hires.denoize": "0.5"}))
    with pytest.raises(RecipeError, match="no stage `inpaint`"):
        expand(base_document(**{"stages.inpaint.denoise": "0.5"}))
    with pytest.raises(RecipeError, match="did you mean `cfg`"):
        expand(base_document(cgf="5"))
    with pytest.raises(RecipeError, match="at most 3 axes"):
        expand(base_document(seed="1", cfg="5", steps="4", sampler="euler"))


def test_save_grid_is_a_switch_not_an_axis():
    entries, save_grid = matrix_entries(base_document(seed="1-2", save_grid=False))
    assert entries == {"seed": "1-2"} and save_grid is False
    assert len(expand(base_document(seed="1-2", save_grid=False))) == 2
    with pytest.raises(RecipeError, match="save_grid"):
        matrix_entries(base_document(save_grid="no"))


def test_cli_matrix_adds_and_replaces_axes():
    assert parse_cli_matrix(["seed=1-3", "defaults.cfg=5, 7"]) == {"seed": "1-3", "defaults.cfg": "5, 7"}
    with pytest.raises(RecipeError, match="KEY=VALUES"):
        parse_cli_matrix(["seed"])
    points = expand(base_document(seed="1-3"), cli_matrix=["seed=7,8", "steps=2"])
    assert sorted((p.coordinates["seed"], p.coordinates["steps"]) for p in points) == [(7, 2), (8, 2)]
    entries, save_grid = matrix_entries(base_document(), cli_matrix=["save_grid=false", "seed=1"])
    assert entries == {"seed": "1"} and save_grid is False


def test_prompt_sr_replaces_in_prompt_and_negative():
    points = expand(base_document(prompt_sr="cat, dog, fox"))
    prompts = [(p.loaded.recipe.stages[0].prompt, p.loaded.recipe.stages[0].negative) for p in points]
    assert prompts == [("a red cat", "blurry cat"), ("a red dog", "blurry dog"), ("a red fox", "blurry fox")]
    with pytest.raises(RecipeError, match="did not find 'horse'"):
        expand(base_document(prompt_sr="horse, dog"))


def test_stage_prompt_and_checkpoint_axes():
    points = expand(base_document(**{"stages.encode.prompt": '"a cat, sitting", a dog',
                                     "models.base.checkpoint": ["models/one", "models/two/"]}))
    assert len(points) == 4
    assert {p.loaded.recipe.stages[0].prompt for p in points} == {"a cat, sitting", "a dog"}
    axis = build_axis(base_document(), "models.base.checkpoint", ["models/one", "models/two/"])
    assert [axis.label(v) for v in axis.values] == ["one", "two"]      # as A1111: file name only


def test_combinatorial_prompt_becomes_an_axis():
    document = base_document(**{"stages.encode.prompt": "@combinatorial"})
    document["stages"][0]["prompt"] = "a {red|blue} {cat|dog}"
    points = expand(document)
    assert sorted(p.loaded.recipe.stages[0].prompt for p in points) == \
        ["a blue cat", "a blue dog", "a red cat", "a red dog"]


def test_load_sweep_from_a_file_reports_file_positions(tmp_path):
    recipe = tmp_path / "s.toml"
    recipe.write_text("""version = 1
name = "s"
[models.m]
checkpoint = "tiny"
[defaults]
model = "m"
width = 64
height = 64
[[stages]]
type = "encode"
[[stages]]
type = "sample"
[[stages]]
type = "save"
[matrix]
seed = "1-3"
"defaults.width" = [64, 100]
""")
    with pytest.raises(RecipeError) as caught:
        load_sweep(recipe)
    first = caught.value.errors[0]
    assert first.file == str(recipe) and first.line is not None
    assert "sweep point [seed=1, defaults.width=100]" in first.message and "multiple of 8" in first.message
    assert has_matrix(load_recipe(recipe))
    sweep = load_sweep(recipe, overrides=["defaults.steps=3"], cli_matrix=["defaults.width=64,72"])
    assert len(sweep.points) == 6 and sweep.save_grid and sweep.name == "s"
    assert {p.loaded.recipe.defaults.steps for p in sweep.points} == {3}
    assert [a.title for a in sweep.axes] == ["seed", "width"]


def test_a_point_is_independent_of_the_others():
    document = base_document(**{"stages.encode.prompt": "x, y"})
    points = expand(copy.deepcopy(document))
    points[0].document["stages"][0]["prompt"] = "changed"
    assert points[1].document["stages"][0]["prompt"] == "y"
