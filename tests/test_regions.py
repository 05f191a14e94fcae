"""Regional prompts (Latent Couple semantics): AND composition where a region covers everything, no
effect at weight 0, regions = [] is no regions (same key, same pixels), mask files and rects give the
same latent areas, validate errors, keys and infotext."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sdbake.runner.cli import main
from stage_helpers import recipe, render_text

torch = pytest.importorskip("torch")

SAVE = '[[stages]]\ntype = "save"\npath = "{name}.png"\n'


def sample(extra: str = "", name: str = "out") -> str:
    return f'[[stages]]\ntype = "sample"\n{extra}\n' + SAVE.format(name=name)


def regions(*entries: str) -> str:
    return "regions = [\n" + "".join(f"  {{ {entry} }},\n" for entry in entries) + "]\n"


def render(tmp_path, model, stages: str, *, prompt="a red circle", name="r.toml", cfg=5.0):
    result = render_text(tmp_path, recipe(model, stages, prompt=prompt, cfg=cfg), name)
    return result


def pixels(tmp_path, name="out") -> np.ndarray:
    return np.asarray(Image.open(tmp_path / "out" / f"{name}.png").convert("RGB"))


def test_a_region_over_the_whole_image_equals_the_and_composition(tmp_path, tiny_model_dir):
    render(tmp_path, tiny_model_dir, sample(regions('rect = [0, 0, 64, 64], prompt = "blue sky", weight = 0.7'),
                                            name="region"))
    Image.new("L", (64, 64), 255).save(tmp_path / "white.png")
    render(tmp_path, tiny_model_dir, sample(regions('mask = "white.png", prompt = "blue sky", weight = 0.7'),
                                            name="mask"), name="m.toml")
    render(tmp_path, tiny_model_dir, sample(name="and"), prompt="a red circle AND blue sky :0.7", name="a.toml")
    assert np.array_equal(pixels(tmp_path, "region"), pixels(tmp_path, "and"))
    assert np.array_equal(pixels(tmp_path, "mask"), pixels(tmp_path, "and"))


def test_a_region_of_weight_zero_changes_nothing_and_a_weight_does(tmp_path, tiny_model_dir):
    render(tmp_path, tiny_model_dir, sample(name="plain"))
    render(tmp_path, tiny_model_dir, sample(regions('rect = [0, 0, 32, 64], prompt = "blue sky", weight = 0.0'),
                                            name="zero"), name="z.toml")
    render(tmp_path, tiny_model_dir, sample(regions('rect = [0, 0, 32, 64], prompt = "blue sky", weight = 1.0'),
                                            name="one"), name="o.toml")
    assert np.array_equal(pixels(tmp_path, "zero"), pixels(tmp_path, "plain"))
    assert not np.array_equal(pixels(tmp_path, "one"), pixels(tmp_path, "plain"))


def test_empty_regions_are_no_regions_same_key_and_pixels(tmp_path, tiny_model_dir):
    from recipe_helpers import write
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    plain = write(tmp_path, "p.toml", recipe(tiny_model_dir, sample(name="plain")))
    empty = write(tmp_path, "e.toml", recipe(tiny_model_dir, sample("regions = []", name="empty")))
    plain_keys = [inv.key for inv in make_plan(load_recipe(plain), threads=1).invocations[:2]]
    empty_keys = [inv.key for inv in make_plan(load_recipe(empty), threads=1).invocations[:2]]
    assert plain_keys == empty_keys
    render(tmp_path, tiny_model_dir, sample(name="plain"))
    render(tmp_path, tiny_model_dir, sample("regions = []", name="empty"), name="e2.toml")
    assert np.array_equal(pixels(tmp_path, "plain"), pixels(tmp_path, "empty"))


def test_a_mask_file_and_the_same_rect_give_the_same_image(tmp_path, tiny_model_dir):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    mask.save(tmp_path / "left.png")
    render(tmp_path, tiny_model_dir, sample(regions('rect = [0, 0, 32, 64], prompt = "blue sky"'), name="rect"))
    render(tmp_path, tiny_model_dir, sample(regions('mask = "left.png", prompt = "blue sky"'), name="mask"),
           name="m.toml")
    assert np.array_equal(pixels(tmp_path, "rect"), pixels(tmp_path, "mask"))


def test_rects_and_masks_reach_the_latent_grid_as_the_extensions_build_it():
    from sdbake.stages.regions import RegionCond
    # two-shot: rows int(h * y0 / H) .. int(h * y1 / H); a 64 px image, 16 latent rows: [10, 50) -> rows 2..11
    area = RegionCond("x", 1.0, box=(10 / 64, 0.0, 50 / 64, 0.5)).latent_area(16, 16)
    assert area[0, :, 0].nonzero().flatten().tolist() == list(range(2, 12))
    assert area[0, 5].nonzero().flatten().tolist() == list(range(8))
    # Regional Prompter's mask mode: nearest-neighbour resize; grey scales the weight
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 40:] = 0.5
    area = RegionCond("x", 1.0, mask=mask).latent_area(16, 16)
    assert area[0, 0].tolist() == [0.0] * 10 + [0.5] * 6


def test_region_prompt_weight_and_mask_content_enter_the_key(tmp_path, tiny_model_dir):
    from recipe_helpers import write
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    Image.new("L", (64, 64), 255).save(tmp_path / "m.png")

    def key(entry: str) -> str:
        path = write(tmp_path, "k.toml", recipe(tiny_model_dir, sample(regions(entry))))
        return make_plan(load_recipe(path), threads=1).invocations[1].key
    base = key('mask = "m.png", prompt = "blue sky"')
    assert key('mask = "m.png", prompt = "green sky"') != base
    assert key('mask = "m.png", prompt = "blue sky", weight = 0.5') != base
    Image.new("L", (64, 64), 128).save(tmp_path / "m.png")
    assert key('mask = "m.png", prompt = "blue sky"') != base


@pytest.mark.parametrize("entry,expected", [
    ('rect = [40, 0, 32, 64], prompt = "blue"', ("stages[1].regions[0].rect: the region rect [40, 0, 32, 64] "
                                                 "reaches outside the 64x64 image")),
    ('rect = [0, 0, 32, 64], prompt = " "', "a region needs a prompt (it is empty)"),
    ('mask = "nowhere.png", prompt = "blue"', "stages[1].regions[0].mask: mask file not found"),
    ('prompt = "blue"', "a region needs exactly one of `rect` and `mask`"),
    ('rect = [0, 0, 32, 64], prompt = "blue <lora:x:1>"', "LoRA tags are not read in region prompts"),
])
def test_validate_refuses_bad_regions(tmp_path, tiny_model_dir, capsys, entry, expected):
    from recipe_helpers import write
    path = write(tmp_path, "bad.toml", recipe(tiny_model_dir, sample(regions(entry))))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert expected in err
    assert err.startswith(f"{path}:")


def test_infotext_records_latent_couple_as_two_shot_does(tmp_path, tiny_model_dir):
    from sdbake.stages.output.infotext import parse_infotext
    render(tmp_path, tiny_model_dir, sample(regions('rect = [0, 0, 32, 64], prompt = "red", weight = 0.8',
                                                    'rect = [32, 0, 32, 64], prompt = "blue AND sky", weight = 0.8')),
           prompt="white :0.2")
    prompt, _, params = parse_infotext(Image.open(tmp_path / "out" / "out.png").info["parameters"])
    assert prompt == "white :0.2 AND red AND blue AND sky"
    assert params["Latent Couple"] == ("divisions=1:1,1:2,1:2,1:2 positions=0:0,0:0,0:1,0:1 "
                                       "weights=1,0.8,0.8,0.8 end at step=8")


def test_hires_and_masked_inpaint_take_regions(tmp_path, tiny_model_dir):
    stages = ('[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "hires"\nscale = 1.5\nsteps = 2\n'
              + regions('rect = [0, 0, 48, 96], prompt = "blue sky"')
              + '\n[[stages]]\ntype = "inpaint"\nrects = [[8, 8, 24, 24]]\narea = "masked"\nsteps = 4\n'
              + regions('rect = [0, 0, 16, 96], prompt = "green"') + "\n" + SAVE.format(name="out"))
    result = render(tmp_path, tiny_model_dir, stages)
    hires, inpaint = result.final_state.provenance[-2:]
    assert hires["Latent Couple"].startswith("divisions=1:1,1:2 positions=0:0,0:0 ")
    assert inpaint["Latent Couple"].startswith("divisions=1:1,1:6 positions=0:0,0:0 ")
    assert pixels(tmp_path).shape == (96, 96, 3)


def test_batched_points_with_regions_render_what_each_renders_alone(tmp_path, tiny_model_dir):
    from farm_helpers import pixels_by_name, write_sweep
    from sdbake.runner.executors import ExecutorOptions
    from sdbake.runner.sweep.run import run_sweep
    path = write_sweep(tmp_path, tiny_model_dir, 'seed = "1-3"')
    path.write_text(path.read_text().replace('type = "sample"\n', 'type = "sample"\n' + regions(
        'rect = [0, 0, 32, 64], prompt = "blue sky", weight = 0.8')))
    assert "regions" in path.read_text()
    for name, max_batch in (("alone", 1), ("batched", 8)):
        outcome = run_sweep(path, output_root=tmp_path / name, cache_dir=tmp_path / f"c-{name}", threads=1,
                            executor=ExecutorOptions(max_batch=max_batch, quiet=True))
    assert outcome.farm.summary["batched_calls"] == 1
    assert pixels_by_name(tmp_path / "batched") == pixels_by_name(tmp_path / "alone")
