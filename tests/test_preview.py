"""Step previews (`preview_every`): files every N steps, colours that follow the render, no effect on
cache keys or on the result (splits stay exact)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stage_helpers import recipe, render_text

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo"

PREVIEWED = ('[[stages]]\ntype = "sample"\npreview_every = 5\npreview_dir = "previews"\n\n'
             '[[stages]]\ntype = "save"\npath = "final.png"\n')
PLAIN = '[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "final.png"\n'


def _pixels(path: Path, size: int | None = None) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    if size:
        image = image.resize((size, size), Image.BOX)
    return np.asarray(image, dtype=np.float64)


def test_latent_to_rgb_is_a1111_cheap_approximation():
    torch = pytest.importorskip("torch")
    from sdbake.stages.preview import a1111_projection, latent_to_rgb
    latent = torch.zeros(1, 4, 1, 2)
    latent[0, 0, 0, 0] = 1.0            # channel 0 alone: the SD1 matrix's first row
    latent[0, 3, 0, 1] = 1.0            # channel 3 alone: its last row, negative, clamps at 0 in blue
    rgb = latent_to_rgb(latent, a1111_projection("sd1"))[0].numpy()
    expected_first = np.round((np.array([0.298, 0.207, 0.208]) * 0.5 + 0.5) * 255)
    expected_last = np.round(np.clip(np.array([-0.184, -0.271, -0.473]) * 0.5 + 0.5, 0, 1) * 255)
    assert rgb[0, 0].tolist() == expected_first.tolist()
    assert rgb[0, 1].tolist() == expected_last.tolist()
    sdxl = latent_to_rgb(latent, a1111_projection("sdxl"))[0].numpy()
    assert sdxl[0, 0].tolist() == np.round((np.array([0.3448, 0.4168, 0.4395]) * 0.5 + 0.5) * 255).tolist()


def test_a_20_step_sample_with_preview_every_5_writes_4_previews_that_follow_the_final_image(tmp_path):
    pytest.importorskip("torch")
    text = recipe(DEMO, PREVIEWED, steps=20, seed=3, cfg=6.0, sampler="dpmpp_2m",
                  prompt="a large red circle in the center, blue background", name="p")
    render_text(tmp_path, text)
    previews = sorted((tmp_path / "out" / "previews").iterdir())
    assert [p.name for p in previews] == [f"sample-step{n:03d}.png" for n in (5, 10, 15, 20)]
    final = _pixels(tmp_path / "out" / "final.png", 8).reshape(-1, 3)
    for path in previews:
        preview = Image.open(path)
        assert preview.size == (64, 64)           # one latent cell -> 8x8 pixels, the render's own size
        colours = _pixels(path, 8).reshape(-1, 3)
        per_channel = [np.corrcoef(final[:, c], colours[:, c])[0, 1] for c in range(3)]
        # The demo VAE (scale factor 4) is not SD1's: its projection is fitted from the VAE itself. With
        # A1111's SD1 matrix these previews came out in inverted colours (r = -0.84 .. -0.99).
        assert min(per_channel) > 0.7, (path.name, per_channel)


def test_preview_fields_change_no_stage_key():
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_text

    def keys(stages):
        loaded = load_text(recipe(DEMO, stages, name="k"), "toml", label="k.toml", folder=REPO)
        return {inv.id: inv.key for inv in make_plan(loaded, output_root=REPO / "outputs", device="cpu").invocations}
    plain, previewed = keys(PLAIN), keys(PREVIEWED)
    assert plain["encode"] == previewed["encode"]
    assert plain["sample"] == previewed["sample"]
    assert plain["save"] == previewed["save"]           # the image does not embed the preview fields


def test_previews_leave_a_split_run_bit_exact(tmp_path, tiny_model_dir):
    pytest.importorskip("torch")
    split = ('[[stages]]\ntype = "sample"\nend = 4\npreview_every = 2\npreview_dir = "p"\n\n'
             '[[stages]]\ntype = "sample"\nstart = 4\npreview_every = 3\npreview_dir = "p"\n\n'
             '[[stages]]\ntype = "save"\npath = "final.png"\n')
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    render_text(whole, recipe(tiny_model_dir, PLAIN, steps=10, sampler="dpmpp_2m_sde"))
    render_text(parts, recipe(tiny_model_dir, split, steps=10, sampler="dpmpp_2m_sde"))
    assert np.array_equal(_pixels(whole / "out" / "final.png"), _pixels(parts / "out" / "final.png"))
    # steps are numbered along the schedule: 2 and 4 in the first part; 7 and 10 (3 and 6 done) in the second
    assert sorted(p.name for p in (parts / "out" / "p").iterdir()) == [
        "sample-1-step002.png", "sample-1-step004.png", "sample-2-step007.png", "sample-2-step010.png"]


def test_a_preview_dir_outside_the_output_root_is_refused(tmp_path):
    from sdbake.schemas.errors import RecipeError
    from sdbake.schemas.loader import load_text
    text = recipe(DEMO, PLAIN.replace('type = "sample"\n', 'type = "sample"\npreview_every = 2\n'
                                      'preview_dir = "../elsewhere"\n'), name="x")
    with pytest.raises(RecipeError) as caught:
        load_text(text, "toml", label="x.toml", folder=tmp_path)
    assert "x.toml:" in str(caught.value) and "preview_dir" in str(caught.value)
