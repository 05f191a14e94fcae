"""A1111's variation seed (subseed, subseed_strength) and seed resize: the noise bit for bit against a
re-implementation of A1111 v1.10's modules/rng.py written out here, the batch numbering, the cache key
of a strength of 0, -1 subseeds, and the infotext fields."""
from __future__ import annotations

import pytest
from recipe_helpers import write
from stage_helpers import recipe, render_text

torch = pytest.importorskip("torch")


# ---- A1111 v1.10 modules/rng.py, restated (randn_source "CPU", eta_noise_seed_delta 0) -------------------

def a1111_randn(seed, shape, generator=None):
    # rng.randn: the global generator re-seeded, then a draw (from `generator` when one is given)
    torch.manual_seed(seed)
    return torch.randn(shape, device="cpu", generator=generator)


def a1111_slerp(val, low, high):
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def a1111_first_noise(shape, seeds, subseeds, strength, resize_h, resize_w):
    """ImageRNG(shape, seeds, subseeds, strength, resize_h, resize_w).first(), and its generators after it."""
    generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
    noise_shape = shape if resize_h <= 0 or resize_w <= 0 else (shape[0], resize_h // 8, resize_w // 8)
    xs = []
    for i, (seed, generator) in enumerate(zip(seeds, generators)):
        subnoise = None
        if subseeds is not None and strength != 0:
            subseed = 0 if i >= len(subseeds) else subseeds[i]
            subnoise = a1111_randn(subseed, noise_shape)
        if noise_shape != shape:
            noise = a1111_randn(seed, noise_shape)
        else:
            noise = a1111_randn(seed, shape, generator=generator)
        if subnoise is not None:
            noise = a1111_slerp(strength, noise, subnoise)
        if noise_shape != shape:
            x = a1111_randn(seed, shape, generator=generator)
            dx = (shape[2] - noise_shape[2]) // 2
            dy = (shape[1] - noise_shape[1]) // 2
            w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
            h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
            tx = max(dx, 0)
            ty = max(dy, 0)
            dx = max(-dx, 0)
            dy = max(-dy, 0)
            x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
            noise = x
        xs.append(noise)
    return torch.stack(xs), generators


def ours(shape, seeds, subseeds, strength, resize_h, resize_w):
    from sdbake.stages.samplers import ImageNoise, SeedVariation
    resize = (resize_h // 8, resize_w // 8) if resize_h > 0 and resize_w > 0 else None
    variations = [SeedVariation(subseed if strength else None, strength, resize) for subseed in subseeds]
    return ImageNoise(seeds, shape, variations=variations)


CASES = [  # (seeds, subseeds, strength, resize from h, w) on a (4, 8, 12) latent = 96x64 pixels
    ([7, 7], [100, 101], 0.3, 0, 0),
    ([7], [3], 1.0, 0, 0),
    ([7], [3], 0.05, 0, 0),
    ([2**32 - 2, 2**32 - 2], [12345, 12346], 0.75, 0, 0),
    ([7, 8], [5, 6], 0.0, 40, 48),            # resize only, smaller: pasted centred
    ([7], [5], 0.5, 40, 48),                  # both
    ([7], [5], 0.5, 104, 136),                # larger: cropped, odd differences round as A1111
    ([9], [5], 0.5, 88, 64),                  # larger one way, smaller the other
    ([9], [5], 0.5, 64, 96),                  # the same size: no resize
    ([11], [11], 0.4, 0, 0),                  # subseed = seed: A1111's linear fallback (cosine > 0.9995)
]


@pytest.mark.parametrize("seeds,subseeds,strength,resize_h,resize_w", CASES)
def test_first_noise_equals_a1111_bit_for_bit(seeds, subseeds, strength, resize_h, resize_w):
    shape = (4, 8, 12)
    expected, generators = a1111_first_noise(shape, seeds, subseeds, strength, resize_h, resize_w)
    noise = ours(shape, seeds, subseeds, strength, resize_h, resize_w)
    assert torch.equal(noise.draw(), expected)
    # ImageRNG.next() after the first: plain draws from the image generators (ancestral noise)
    later = torch.stack([torch.randn(shape, generator=g) for g in generators])
    assert torch.equal(noise.draw(), later)


def test_linear_fallback_weights_are_a1111s():
    from sdbake.stages.samplers import slerp
    low = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(1))
    high = low * 1.0000001
    assert torch.equal(slerp(0.25, low, high), low * 0.25 + high * 0.75)


# ---- recipes ---------------------------------------------------------------------------------------------

def variation_recipe(model, extra: str = "", *, batch_size=1, sampler="euler") -> str:
    text = recipe(model, '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "{{ seed }}.png"\n',
                  steps=4, sampler=sampler)
    return text.replace("cfg = 5.0\n", f"cfg = 5.0\nbatch_size = {batch_size}\n{extra}")


def plan_keys(tmp_path, text: str, name: str) -> list[str]:
    from sdbake.runner.planning import PlanOptions, plan_recipe
    from sdbake.schemas.loader import load_recipe
    plan = plan_recipe(load_recipe(write(tmp_path, name, text)), PlanOptions(output_root=tmp_path / "o"))
    return [inv.key for inv in plan.invocations]


def pixels(path):
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(path))


def infotext(path) -> str:
    from PIL import Image
    return Image.open(path).info["parameters"]


def test_strength_zero_is_the_same_recipe_key_and_image_as_no_variation(tmp_path, tiny_model_dir):
    import numpy as np
    plain = variation_recipe(tiny_model_dir)
    zero = variation_recipe(tiny_model_dir, "subseed = 5\nsubseed_strength = 0.0\nseed_resize_from_w = 0\n")
    assert plan_keys(tmp_path, zero, "zero.toml") == plan_keys(tmp_path, plain, "plain.toml")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = render_text(tmp_path / "a", plain).outputs[0]
    second = render_text(tmp_path / "b", zero).outputs[0]
    assert np.array_equal(pixels(first), pixels(second))
    assert "Variation seed" not in infotext(second) and "Seed resize from" not in infotext(second)


def test_a_variation_changes_the_key_image_and_infotext(tmp_path, tiny_model_dir):
    import numpy as np
    plain = variation_recipe(tiny_model_dir)
    varied = variation_recipe(tiny_model_dir, "subseed = 5\nsubseed_strength = 0.3\n")
    assert plan_keys(tmp_path, varied, "v.toml")[0] != plan_keys(tmp_path, plain, "p.toml")[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    base = render_text(tmp_path / "a", plain).outputs[0]
    result = render_text(tmp_path / "b", varied).outputs[0]
    assert not np.array_equal(pixels(base), pixels(result))
    assert "Seed: 3, Size: 64x64, " in infotext(result)
    assert "Variation seed: 5, Variation seed strength: 0.3" in infotext(result)


def test_in_a_batch_the_seed_stays_and_the_subseed_counts_up_as_a1111(tmp_path, tiny_model_dir):
    # A1111 process_images_inner: all_seeds = seed (not seed + i) when the strength is not 0, and
    # all_subseeds = subseed + i; image 1 of the batch is the single render with subseed + 1.
    import numpy as np
    for folder in "ab":
        (tmp_path / folder).mkdir()
    text = variation_recipe(tiny_model_dir, "subseed = 5\nsubseed_strength = 0.5\n", batch_size=2,
                            sampler="euler_ancestral")
    outputs = {path.name: path for path in render_text(tmp_path / "a", text).outputs}
    batch = [outputs["3.png"], outputs["3-1.png"]]       # one template, two images: the second is numbered
    single = render_text(tmp_path / "b", variation_recipe(tiny_model_dir, "subseed = 6\nsubseed_strength = 0.5\n",
                                                          sampler="euler_ancestral")).outputs[0]
    assert len(batch) == 2
    assert ["Seed: 3," in infotext(p) for p in batch] == [True, True]
    assert "Variation seed: 5," in infotext(batch[0]) and "Variation seed: 6," in infotext(batch[1])
    assert np.array_equal(pixels(batch[1]), pixels(single))


def test_seed_resize_is_recorded_as_a1111_writes_it(tmp_path, tiny_model_dir):
    import numpy as np
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = render_text(tmp_path / "a", variation_recipe(tiny_model_dir)).outputs[0]
    resized = render_text(tmp_path / "b", variation_recipe(
        tiny_model_dir, "seed_resize_from_w = 48\nseed_resize_from_h = 40\n")).outputs[0]
    assert "Seed resize from: 48x40" in infotext(resized) and "Variation seed" not in infotext(resized)
    assert not np.array_equal(pixels(plain), pixels(resized))


def test_subseed_minus_one_is_picked_once_and_recorded(tmp_path, tiny_model_dir, capsys):
    import re
    result = render_text(tmp_path, variation_recipe(tiny_model_dir, "subseed = -1\nsubseed_strength = 0.2\n"))
    picked = re.search(r"subseed -1: picked subseed (\d+)", capsys.readouterr().err)
    assert picked
    assert f"Variation seed: {picked.group(1)}, Variation seed strength: 0.2" in infotext(result.outputs[0])


def test_a_strength_without_a_subseed_draws_one_as_a1111(tmp_path, tiny_model_dir, capsys):
    result = render_text(tmp_path, variation_recipe(tiny_model_dir, "subseed_strength = 0.2\n"))
    assert "subseed -1: picked subseed" in capsys.readouterr().err
    assert "Variation seed strength: 0.2" in infotext(result.outputs[0])


def test_out_of_range_strength_is_a_recipe_error(tmp_path, tiny_model_dir):
    from sdbake.schemas.errors import RecipeError
    with pytest.raises(RecipeError, match=r"subseed_strength: .*1"):
        render_text(tmp_path, variation_recipe(tiny_model_dir, "subseed_strength = 1.5\n"))


def test_points_with_their_own_subseeds_batched_render_what_they_render_alone(tmp_path, tiny_model_dir):
    # a sweep over subseeds: the sample stages of the points run as one batched call, each image with its
    # own variation seed, and the images equal the point-by-point run
    from farm_helpers import pixels_by_name, write_sweep
    from sdbake.runner.executors import ExecutorOptions
    from sdbake.runner.sweep.run import run_sweep
    path = write_sweep(tmp_path, tiny_model_dir, '"defaults.subseed" = [5, 6]\n"defaults.seed_resize_from_w" = '
                       '[48, 80]', steps=2)
    path.write_text(path.read_text().replace("cfg = 6.0\n", "cfg = 6.0\nsubseed_strength = 0.4\n"
                                             "seed_resize_from_h = 40\n"))
    outcomes = {name: run_sweep(path, output_root=tmp_path / name, cache_dir=tmp_path / f"c-{name}", threads=1,
                                executor=executor)
                for name, executor in (("plain", None), ("batched", ExecutorOptions(max_batch=8, quiet=True)))}
    assert outcomes["batched"].farm.summary["batched_calls"] == 1
    assert len(pixels_by_name(tmp_path / "plain")) == 5                 # 4 points and the grid
    assert pixels_by_name(tmp_path / "batched") == pixels_by_name(tmp_path / "plain")


def test_the_lock_keeps_a_drawn_subseed_and_run_locked_uses_it_again(tmp_path, tiny_model_dir, capsys):
    from sdbake.runner.cli import main
    from sdbake.runner.lock import lock_path, read_lock
    path = write(tmp_path, "v.toml", variation_recipe(tiny_model_dir, "subseed = -1\nsubseed_strength = 0.2\n"))
    out = ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main(["lock", str(path), *out]) == 0
    drawn = read_lock(lock_path(path))["random_subseed"]
    capsys.readouterr()
    assert main(["run", str(path), "--locked", *out]) == 0
    assert f"picked subseed {drawn}" in capsys.readouterr().err
    images = sorted((tmp_path / "out").glob("*.png"))
    assert images and all(f"Variation seed: {drawn}," in infotext(image) for image in images)
