"""A1111's batch count (`n_iter`): n_iter batches of batch_size, numbered as A1111 numbers them, each
image the single render of its seed; rendered by `sdbake run` as the points of a sweep."""
from __future__ import annotations

import re

import pytest
from recipe_helpers import write
from sdbake.runner.cli import main
from stage_helpers import recipe, render_text

torch = pytest.importorskip("torch")


def batch_recipe(model, extra: str = "", *, path="{{ seed }}.png", batch_size=2, sampler="euler_ancestral") -> str:
    text = recipe(model, f'[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "{path}"\n',
                  steps=3, sampler=sampler)
    return text.replace("cfg = 5.0\n", f"cfg = 5.0\nbatch_size = {batch_size}\n{extra}")


def pixels(path):
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(path))


def infotext(path) -> str:
    from PIL import Image
    return Image.open(path).info["parameters"]


def run(tmp_path, text: str, *extra: str) -> int:
    path = write(tmp_path, "b.toml", text)
    return main(["run", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet", *extra])


def test_three_batches_of_two_write_six_images_seeded_on_each_the_single_render(tmp_path, tiny_model_dir):
    assert run(tmp_path, batch_recipe(tiny_model_dir, "n_iter = 3\n")) == 0
    written = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in written] == [f"{seed}.png" for seed in range(3, 9)]
    for path in written:
        assert f"Seed: {path.stem}," in infotext(path)
    # batch 2 is the batch of seed 5 rendered alone, bit for bit
    (tmp_path / "alone").mkdir()
    alone = render_text(tmp_path / "alone", batch_recipe(tiny_model_dir).replace("seed = 3\n", "seed = 5\n")).outputs
    assert sorted(p.name for p in alone) == ["5.png", "6.png"]
    for path in alone:
        assert (pixels(path) == pixels(tmp_path / "out" / path.name)).all()
    # and each image is the single render of its seed (batched CPU kernels round apart by about 1e-6
    # of the latent: at most 1 level of 255 in a pixel)
    for seed in (4, 7):
        (tmp_path / str(seed)).mkdir()
        single = render_text(tmp_path / str(seed), batch_recipe(tiny_model_dir, batch_size=1).replace(
            "seed = 3\n", f"seed = {seed}\n")).outputs[0]
        difference = pixels(single).astype(int) - pixels(tmp_path / "out" / f"{seed}.png").astype(int)
        assert abs(difference).max() <= 1


def test_with_a_variation_seed_the_subseeds_count_on_across_batches(tmp_path, tiny_model_dir):
    text = batch_recipe(tiny_model_dir, "n_iter = 2\nsubseed = 50\nsubseed_strength = 0.5\n",
                        path="{{ seed }}-{{ batch_index }}.png")
    assert run(tmp_path, text) == 0
    texts = [infotext(p) for p in sorted((tmp_path / "out").rglob("*.png"), key=lambda p: p.stat().st_mtime_ns)]
    assert len(texts) == 4 and all("Seed: 3," in text for text in texts)
    assert sorted(int(re.search(r"Variation seed: (\d+),", text).group(1)) for text in texts) == [50, 51, 52, 53]


def test_a_random_seed_is_drawn_once_for_every_batch(tmp_path, tiny_model_dir, capsys):
    text = batch_recipe(tiny_model_dir, "n_iter = 2\n").replace("seed = 3\n", "seed = -1\n")
    assert run(tmp_path, text) == 0
    seed = int(re.search(r"seed -1: picked seed (\d+)", capsys.readouterr().err).group(1))
    assert sorted(int(p.stem) for p in (tmp_path / "out").glob("*.png")) == [seed, seed + 1, seed + 2, seed + 3]


def test_a_second_run_writes_nothing_new(tmp_path, tiny_model_dir):
    text = batch_recipe(tiny_model_dir, "n_iter = 2\n", path="out.png", batch_size=1)
    assert run(tmp_path, text) == 0
    first = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert run(tmp_path, text) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == first and len(first) == 2


def test_n_iter_with_a_matrix_or_in_lock_is_a_clear_error(tmp_path, tiny_model_dir, capsys):
    text = batch_recipe(tiny_model_dir, "n_iter = 2\n")
    assert run(tmp_path, text, "--matrix", "defaults.cfg=4,5") == 1
    assert "n_iter = 2 and a [matrix] together are not supported" in capsys.readouterr().err
    assert main(["lock", str(tmp_path / "b.toml")]) == 1
    assert "n_iter = 2 renders 2 batches" in capsys.readouterr().err


def test_n_iter_out_of_range_is_a_recipe_error(tmp_path, tiny_model_dir, capsys):
    path = write(tmp_path, "b.toml", batch_recipe(tiny_model_dir, "n_iter = 0\n"))
    assert main(["validate", str(path)]) == 1
    assert re.search(r"b\.toml:\d+:\d+: defaults\.n_iter: .*1", capsys.readouterr().err)
