"""Token merging (tomesd) per sample/hires stage: ratio 0 is no patch (same key, same bytes), a ratio changes
the image and the infotext, and the patch never outlives its stage (also after an error)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stage_helpers import recipe, render_text

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "recipes" / "sweeps" / "token_merging.toml"


def needs_tomesd():
    pytest.importorskip("tomesd", reason="tomesd is not installed (make install installs the `tome` extra)")


def sample(extra: str = "", end: str = "") -> str:
    return f'[[stages]]\ntype = "sample"\n{end}\n{extra}\n'


SAVE = '[[stages]]\ntype = "save"\npath = "out.png"\n'


def render(folder: Path, stages: str, **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    result = render_text(folder, stages, **kwargs)
    image = Image.open(result.outputs[-1])
    return np.asarray(image.convert("RGB")), image.info["parameters"]


def keys(folder: Path, text: str) -> list[str]:
    from recipe_helpers import write
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    return [inv.key for inv in make_plan(load_recipe(write(folder, "k.toml", text))).invocations]


def test_ratio_zero_is_no_patch_with_the_same_key_and_bytes(tmp_path, tiny_model_dir):
    needs_tomesd()
    plain = recipe(tiny_model_dir, sample() + SAVE, steps=4)
    zero = recipe(tiny_model_dir, sample("tome_ratio = 0.0\ntome_max_downsample = 2") + SAVE, steps=4)
    assert keys(tmp_path, plain) == keys(tmp_path, zero)
    assert np.array_equal(render(tmp_path / "a", plain)[0], render(tmp_path / "b", zero)[0])


def test_a_ratio_changes_the_image_its_key_and_the_infotext(tmp_path, tiny_model_dir):
    """The tiny UNet attends at full latent resolution (8x8 tokens at 64 px), so tomesd's default
    max_downsample of 1 patches it and half the tokens merge."""
    needs_tomesd()
    plain = recipe(tiny_model_dir, sample() + SAVE, steps=4)
    merged = recipe(tiny_model_dir, sample("tome_ratio = 0.5") + SAVE, steps=4)
    assert keys(tmp_path, plain)[1] != keys(tmp_path, merged)[1]
    assert keys(tmp_path, plain)[0] == keys(tmp_path, merged)[0]       # encode does not change
    before, info_before = render(tmp_path / "a", plain)
    after, info_after = render(tmp_path / "b", merged)
    assert np.abs(before.astype(int) - after).max() > 0
    assert "Token merging ratio" not in info_before
    assert "Token merging ratio: 0.5," in info_after


def test_hires_writes_token_merging_ratio_hr(tmp_path, tiny_model_dir):
    needs_tomesd()
    hires = '[[stages]]\ntype = "hires"\nscale = 1.5\nsteps = 2\ndenoise = 0.5\ntome_ratio = 0.3\n'
    _, info = render(tmp_path, recipe(tiny_model_dir, sample() + hires + SAVE, steps=3))
    assert "Token merging ratio hr: 0.3," in info and "Token merging ratio:" not in info


def test_the_patch_ends_with_its_stage(tmp_path, tiny_model_dir):
    """A stage after a patched one, in the same process on the same UNet object, equals that stage run on
    a freshly loaded UNet (the patched stage read from the cache)."""
    needs_tomesd()
    from sdbake.runner.models.registry import default_registry
    text = recipe(tiny_model_dir, sample("tome_ratio = 0.5", "end = 2") + sample() + SAVE, steps=4)
    together, _ = render(tmp_path / "one", text, no_cache=False, cache_dir=tmp_path / "cache1")
    first_only = recipe(tiny_model_dir, sample("tome_ratio = 0.5", "end = 2"), steps=4)
    render_text(tmp_path, first_only, name="first.toml", no_cache=False, cache_dir=tmp_path / "cache2")
    default_registry().clear()
    fresh, _ = render(tmp_path / "two", text, no_cache=False, cache_dir=tmp_path / "cache2")
    assert np.array_equal(together, fresh)


def test_the_patch_is_removed_after_an_error_inside_the_stage(tiny_model_dir):
    needs_tomesd()
    import torch
    from sdbake.runner.models.loading import load_model
    from sdbake.stages.token_merging import token_merging
    unet = load_model(tiny_model_dir).unet
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.randn(2, 77, 32)
    with torch.no_grad():
        before = unet(x, t, context).sample
        with pytest.raises(RuntimeError, match="inside"), token_merging(unet, 0.5, None, "sample"):
            patched = unet(x, t, context).sample
            raise RuntimeError("inside the stage")
        after = unet(x, t, context).sample
    assert not torch.equal(before, patched)
    assert torch.equal(before, after)
    assert not any(type(m).__name__ == "ToMeBlock" or hasattr(m, "_tome_info") and m._tome_info["hooks"]
                   for m in unet.modules())


def test_without_tomesd_only_a_recipe_with_a_ratio_fails_in_one_line(tmp_path, tiny_model_dir, monkeypatch):
    from sdbake.schemas.errors import SdbakeError
    from sdbake.stages import token_merging
    monkeypatch.setattr(token_merging, "tomesd_version", lambda: None)
    keys(tmp_path, recipe(tiny_model_dir, sample() + SAVE))
    with pytest.raises(SdbakeError) as caught:
        keys(tmp_path, recipe(tiny_model_dir, sample("tome_ratio = 0.4") + SAVE))
    assert "needs the tomesd package" in str(caught.value) and len(str(caught.value).splitlines()) == 1
    assert "k.toml:" in str(caught.value)


@pytest.mark.slow
def test_the_example_sweep_renders_one_image_per_ratio(tmp_path):
    """recipes/sweeps/token_merging.toml on the demo model: ratio 0 equals the unpatched render, every other
    ratio changes it."""
    needs_tomesd()
    from sdbake.runner.sweep.run import run_sweep
    outcome = run_sweep(SWEEP, output_root=tmp_path / "out", cache_dir=tmp_path / "cache", threads=1,
                        overrides=["defaults.steps=4"])
    images = [np.asarray(Image.open(run.result.outputs[0]).convert("RGB")) for run in outcome.runs]
    assert len(images) == 4
    assert all(np.abs(images[0].astype(int) - other).max() > 0 for other in images[1:])
    plain = SWEEP.read_text().replace("tome_ratio = 0.0\n", "").split("[matrix]")[0]
    plain = plain.replace('"../../models/demo"', f'"{ROOT / "models" / "demo"}"')
    unpatched, _ = render(tmp_path / "plain", plain.replace("steps = 12", "steps = 4"))
    assert np.array_equal(images[0], unpatched)


def test_export_to_comfyui_says_token_merging_is_left_out(tmp_path, capsys, tiny_model_dir):
    from recipe_helpers import write
    from sdbake.runner.cli import main
    path = write(tmp_path, "t.toml", recipe(tiny_model_dir, sample("tome_ratio = 0.5") + SAVE))
    assert main(["export", str(path), "--to", "comfyui", "-o", str(tmp_path / "w.json"), "--out",
                 str(tmp_path / "o")]) == 0
    assert "stage sample (sample): token merging (tome_ratio) is ComfyUI's TomePatchModel" in capsys.readouterr().err


@pytest.mark.slow
def test_batched_seeds_with_token_merging_equal_unbatched(tmp_path):
    """ToMe matches tokens per image (no random destinations), so batching seeds keeps every image's bytes."""
    needs_tomesd()
    from farm_helpers import pixels_by_name, write_sweep
    from sdbake.runner.executors import ExecutorOptions
    from sdbake.runner.sweep.run import run_sweep
    path = write_sweep(tmp_path, ROOT / "models" / "demo", 'seed = "1-6"', steps=4)
    path.write_text(path.read_text().replace('type = "sample"\n',
                                             'type = "sample"\ntome_ratio = 0.5\ntome_max_downsample = 2\n'))
    for name, max_batch in (("unbatched", 1), ("batched", 6)):
        outcome = run_sweep(path, output_root=tmp_path / name, cache_dir=tmp_path / f"c-{name}", threads=1,
                            executor=ExecutorOptions(max_batch=max_batch, quiet=True))
        assert outcome.farm.summary["batched_calls"] == (1 if max_batch > 1 else 0)
    assert pixels_by_name(tmp_path / "batched") == pixels_by_name(tmp_path / "unbatched")
