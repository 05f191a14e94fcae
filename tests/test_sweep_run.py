"""Sweeps on the tiny model: shared stages run once, grids are right, interrupted sweeps continue."""
from __future__ import annotations

import pytest
from PIL import Image, ImageChops
from sdbake.runner.sweep.grid import BACKGROUND, caption, layout_grid
from sdbake.runner.sweep.matrix import load_sweep
from sdbake.runner.sweep.run import plan_sweep, run_sweep

HIRES = """
[[stages]]
type = "hires"
scale = 1.5
denoise = 0.5
steps = 2
"""


def write_recipe(folder, model_dir, matrix: str, hires: bool = False, name: str = "sweep"):
    path = folder / f"{name}.toml"
    path.write_text(f"""version = 1
name = "{name}"
[models.m]
checkpoint = "{model_dir}"
[defaults]
model = "m"
seed = 42
width = 64
height = 64
steps = 2
sampler = "euler"
cfg = 5.0
[[stages]]
type = "encode"
prompt = "a red circle"
negative = "blurry"
[[stages]]
type = "sample"
{HIRES if hires else ""}
[[stages]]
type = "save"
path = "out/{{{{ seed }}}}-{{{{ cfg }}}}.png"
[matrix]
{matrix}
""")
    return path


@pytest.fixture(scope="module")
def seed_cfg_sweep(tmp_path_factory, tiny_model_dir):
    """A 3 x 2 seed x cfg sweep rendered once for the tests below: (recipe, outcome, output root, cache)."""
    folder = tmp_path_factory.mktemp("seed-cfg")
    recipe = write_recipe(folder, tiny_model_dir, 'seed = "1-3"\n"defaults.cfg" = [5.0, 7.0]')
    out, cache = folder / "outputs", folder / "cache"
    return recipe, run_sweep(recipe, output_root=out, cache_dir=cache), out, cache


def statuses(outcome) -> list[dict[str, str]]:
    return [{r.id: r.status for r in run.result.reports} for run in outcome.runs]


def test_plan_counts_shared_stages_of_a_hires_denoise_sweep(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, '"stages.hires.denoise" = [0.2, 0.4, 0.6, 0.8]', hires=True)
    plan = plan_sweep(recipe, output_root=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert (plan.points, plan.stages_per_point, plan.naive) == (4, 4, 16)
    assert plan.needed == 1 + 1 + 4 + 4                     # encode and sample once; hires and save per point
    assert plan.shared == ["encode", "sample"] and plan.cached == 0
    assert "10 needed, 16 naive" in "\n".join(plan.lines())


def test_seed_by_cfg_sweep_renders_six_images_and_a_labelled_grid(seed_cfg_sweep):
    recipe, outcome, out, cache = seed_cfg_sweep
    assert len(outcome.images) == 6 and len(set(outcome.images)) == 6
    assert [g.name for g in outcome.grids] == ["sweep-grid.png"]
    assert all(s["sample"] == "ran" for s in statuses(outcome))
    assert sum(s["encode"] == "ran" for s in statuses(outcome)) == 3      # one encode per seed

    with Image.open(outcome.grids[0]) as grid:
        grid.load()
        labels_x = [caption("seed", v) for v in ("1", "2", "3")]
        labels_y = [caption("cfg", v) for v in ("5.0", "7.0")]
        layout, _, _, _ = layout_grid([(64, 64)], 3, 2, labels_x, labels_y, None)
        assert grid.size == layout.size
        assert "X Type: seed" in grid.text["parameters"]
        by_cell = {run.point.index: run.image for run in outcome.runs}
        for (ix, iy), image_path in by_cell.items():
            x, y = layout.cell_origin(ix, iy)
            with Image.open(image_path) as cell:
                assert grid.crop((x, y, x + 64, y + 64)).tobytes() == cell.convert("RGB").tobytes()
            header = grid.crop((x, layout.z_band, x + 64, layout.top))
            assert ImageChops.difference(header, Image.new("RGB", header.size, BACKGROUND)).getbbox()
        corner = grid.crop((0, 0, layout.left, layout.top))
        assert not ImageChops.difference(corner, Image.new("RGB", corner.size, BACKGROUND)).getbbox()

    again = run_sweep(recipe, output_root=out, cache_dir=cache)
    assert all(status == "hit" for s in statuses(again) for status in s.values())
    assert again.grids == outcome.grids and again.images == outcome.images


def test_hires_denoise_sweep_samples_the_base_image_once(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, '"stages.hires.denoise" = "0.2-0.8 [4]"', hires=True)
    outcome = run_sweep(recipe, output_root=tmp_path / "out", cache_dir=tmp_path / "cache")
    ran = [s for s in statuses(outcome)]
    assert sum(s["sample"] == "ran" for s in ran) == 1
    assert sum(s["encode"] == "ran" for s in ran) == 1
    assert sum(s["hires"] == "ran" for s in ran) == 4
    assert len(outcome.images) == 4 and len(outcome.grids) == 1


class Interrupted(Exception):
    pass


def test_an_interrupted_sweep_continues_with_hits_and_gives_the_same_grid(tmp_path, seed_cfg_sweep):
    recipe, uninterrupted, _, _ = seed_cfg_sweep
    out, cache = tmp_path / "outputs", tmp_path / "cache"

    def stop_after_two(done, total, point, result):
        if done == 2:
            raise Interrupted()

    with pytest.raises(Interrupted):
        run_sweep(recipe, output_root=out, cache_dir=cache, on_point=stop_after_two)
    assert len(list(out.rglob("*.png"))) == 2 and not list(out.glob("*grid*"))
    resumed = run_sweep(load_sweep(recipe), output_root=out, cache_dir=cache)
    all_hits = [all(status == "hit" for status in s.values()) for s in statuses(resumed)]
    assert all_hits == [True, True, False, False, False, False]
    assert resumed.grids[0].read_bytes() == uninterrupted.grids[0].read_bytes()


def test_save_grid_false_writes_only_the_images(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, 'seed = "1, 2"\nsave_grid = false')
    outcome = run_sweep(recipe, output_root=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert len(outcome.images) == 2 and outcome.grids == []
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == sorted(p.name for p in outcome.images)


def test_a_z_axis_writes_one_grid_per_z_value(tmp_path, tiny_model_dir, monkeypatch):
    """Grid composition alone: each point 'renders' a flat colour made from its coordinates."""
    import json

    import sdbake.runner.execute
    from sdbake.runner.execute import RunResult, StageReport

    def flat_execute(plan, store, options):
        d = plan.recipe.defaults
        path = plan.output_root / "out" / f"{d.seed}-{d.cfg}-{d.steps}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (d.seed * 40, int(d.cfg * 20), d.steps * 30)).save(path)
        return RunResult([StageReport("encode", "ran"), StageReport("sample", "ran"),
                          StageReport("save", "ran", files=[("written", path)])])

    monkeypatch.setattr(sdbake.runner.execute, "execute", flat_execute)
    recipe = write_recipe(tmp_path, tiny_model_dir, 'seed = "1-3"\ncfg = "5, 7"\nsteps = "2, 3"')
    outcome = run_sweep(recipe, output_root=tmp_path / "out")
    assert len(outcome.images) == 12
    assert [g.name for g in outcome.grids] == ["sweep-grid-z1.png", "sweep-grid-z2.png"]
    layout, _, _, _ = layout_grid([(64, 64)], 3, 2, [caption("seed", v) for v in "123"],
                                  [caption("cfg", v) for v in ("5.0", "7.0")], "steps: 3")
    with Image.open(outcome.grids[1]) as grid:
        assert grid.size == layout.size
        for ix, seed in enumerate((1, 2, 3)):
            for iy, cfg in enumerate((5.0, 7.0)):
                assert grid.getpixel(layout.cell_origin(ix, iy)) == (seed * 40, int(cfg * 20), 3 * 30)
        meta = json.loads(grid.text["sdbake"])
    assert [a["key"] for a in meta["sweep"]["axes"]] == ["seed", "cfg", "steps"]
    assert list(meta["recipe"]["matrix"]) == ["seed", "cfg", "steps"] and meta["sweep"]["z"] == "3"
    assert meta["sweep"]["cells"][0] == ["out/1-5.0-3.png", "out/2-5.0-3.png", "out/3-5.0-3.png"]
    again = run_sweep(recipe, output_root=tmp_path / "out")
    assert again.grids == outcome.grids                      # same bytes: left alone, not numbered
