"""inpaint: exact outside the feathered mask over loops, loopback curves, colour correction, bad masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw
from stage_helpers import recipe, render_text

torch = pytest.importorskip("torch")


def inpaint(**fields) -> str:
    body = "".join(f"{k} = {v}\n" for k, v in fields.items())
    return ('[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "save"\npath = "before.png"\n\n'
            f'[[stages]]\ntype = "inpaint"\n{body}\n[[stages]]\ntype = "save"\npath = "after.png"\n')


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_pixels_outside_the_feathered_mask_are_unchanged_across_loops(tmp_path, tiny_model_dir):
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse([20, 20, 43, 43], fill=255)
    mask.save(tmp_path / "mask.png")
    result = render_text(tmp_path, recipe(tiny_model_dir, inpaint(mask='"mask.png"', loops=3, blur=2,
                                                                  denoise="[0.8, 0.4]")))
    before, after = _pixels(tmp_path / "out" / "before.png"), _pixels(tmp_path / "out" / "after.png")
    from PIL import ImageFilter
    feathered = np.asarray(mask.filter(ImageFilter.GaussianBlur(2)))
    outside = feathered == 0
    assert outside.sum() > 2000
    assert np.array_equal(before[outside], after[outside])
    assert np.abs(before[~outside] - after[~outside]).mean() > 1.0
    assert result.final_state.provenance[-1]["Loopback denoise"] == "0.8,0.6,0.4"


@pytest.mark.parametrize("curve,shape", [("linear", lambda p: p), ("aggressive", lambda p: math.sin(p * math.pi / 2)),
                                         ("lazy", lambda p: 1 - math.cos(p * math.pi / 2))])
def test_loop_denoise_follows_the_curve(curve, shape):
    from sdbake.stages.inpaint import loop_denoise
    values = loop_denoise([0.9, 0.3], 5, curve)
    assert values == pytest.approx([0.9 + (0.3 - 0.9) * shape(i / 4) for i in range(5)])
    assert loop_denoise(0.5, 1, curve) == [0.5]


def test_colour_correction_runs_in_a_recipe(tmp_path, tiny_model_dir):
    result = render_text(tmp_path, recipe(tiny_model_dir, inpaint(rects="[[8, 8, 32, 32]]", color_correction="true")))
    assert result.final_state.provenance[-1]["Color correction"] is True


def test_a_mask_of_the_wrong_size_is_resized_with_a_warning(tmp_path, tiny_model_dir, capsys):
    Image.new("L", (32, 32), 255).save(tmp_path / "small.png")
    render_text(tmp_path, recipe(tiny_model_dir, inpaint(mask='"small.png"')))
    assert "resized to 64x64" in capsys.readouterr().err


def test_an_all_black_mask_warns_and_changes_nothing(tmp_path, tiny_model_dir, capsys):
    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    render_text(tmp_path, recipe(tiny_model_dir, inpaint(mask='"black.png"')))
    assert "all black" in capsys.readouterr().err
    assert np.array_equal(_pixels(tmp_path / "out" / "before.png"), _pixels(tmp_path / "out" / "after.png"))


def test_a_missing_mask_file_is_a_clear_error(tmp_path, tiny_model_dir):
    from sdbake.schemas.errors import InputFileError
    with pytest.raises(InputFileError, match="mask file not found"):
        render_text(tmp_path, recipe(tiny_model_dir, inpaint(mask='"nope.png"')))


def test_only_masked_area_keeps_the_rest_exact(tmp_path, tiny_model_dir):
    render_text(tmp_path, recipe(tiny_model_dir, inpaint(rects="[[40, 40, 16, 16]]", area='"masked"', padding=8,
                                                        blur=0)))
    before, after = _pixels(tmp_path / "out" / "before.png"), _pixels(tmp_path / "out" / "after.png")
    outside = np.ones((64, 64), dtype=bool)
    outside[40:56, 40:56] = False
    assert np.array_equal(before[outside], after[outside])
    assert not np.array_equal(before[~outside], after[~outside])


def test_a_9_channel_inpainting_unet_gets_the_mask_and_the_masked_image(tmp_path):
    """A 4-channel input would fail in the UNet's first conv: the run succeeding proves the 5 extra channels."""
    import tiny_models
    from diffusers import UNet2DConditionModel
    pipe = tiny_models.build_tiny_pipeline(0)
    torch.manual_seed(1)
    pipe.unet = UNet2DConditionModel(**{**tiny_models.UNET_CONFIG, "in_channels": 9})
    folder = tmp_path / "tiny-inpainting"
    pipe.save_pretrained(str(folder))
    render_text(tmp_path, recipe(folder, inpaint(rects="[[16, 16, 32, 32]]", blur=0)))
    before, after = _pixels(tmp_path / "out" / "before.png"), _pixels(tmp_path / "out" / "after.png")
    outside = np.ones((64, 64), dtype=bool)
    outside[16:48, 16:48] = False
    assert np.array_equal(before[outside], after[outside])
