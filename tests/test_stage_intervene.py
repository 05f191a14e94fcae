"""intervene: exact with no ops, exact outside its mask, keyed by the edited file's content."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from stage_helpers import recipe, render_text

torch = pytest.importorskip("torch")

SPLIT = '[[stages]]\ntype = "sample"\nend = 4\n\n{middle}\n[[stages]]\ntype = "sample"\nstart = 4\n\n' \
        '[[stages]]\ntype = "save"\npath = "{out}"\n'


def test_intervene_with_no_ops_equals_the_uninterrupted_run(tmp_path, tiny_model_dir):
    plain = render_text(tmp_path, recipe(tiny_model_dir, SPLIT.format(middle="", out="a.png")), "a.toml")
    middle = '[[stages]]\ntype = "intervene"\npreview = "preview.png"\n'
    edited = render_text(tmp_path, recipe(tiny_model_dir, SPLIT.format(middle=middle, out="b.png")), "b.toml")
    assert torch.equal(plain.final_state.latent, edited.final_state.latent)
    assert (tmp_path / "out" / "preview.png").is_file()       # the clean estimate, for editing by hand


def _paste_recipe(model, out, extra=""):
    middle = ('[[stages]]\ntype = "intervene"\nrect = [0, 0, 32, 32]\n'
              'ops = [{ op = "paste", image = "patch.png", at = [4, 4] }]\n' + extra)
    return recipe(model, SPLIT.format(middle=middle, out=out))


def test_masked_intervene_keeps_cells_outside_the_mask_bit_for_bit(tmp_path, tiny_model_dir):
    Image.new("RGB", (24, 24), (255, 255, 0)).save(tmp_path / "patch.png")
    before = render_text(tmp_path, _paste_recipe(tiny_model_dir, "x.png"), "x.toml", until="sample-1")
    after = render_text(tmp_path, _paste_recipe(tiny_model_dir, "x.png"), "x.toml", until="intervene")
    x_k, x_k_edited = before.final_state.latent, after.final_state.latent
    outside = torch.ones_like(x_k, dtype=torch.bool)
    outside[:, :, :4, :4] = False                     # the 32x32 pixel rect is latent cells [0:4, 0:4]
    assert torch.equal(x_k[outside], x_k_edited[outside])
    assert not torch.equal(x_k[~outside], x_k_edited[~outside])


def test_masked_intervene_changes_the_final_image_mostly_inside_the_mask(tmp_path, tiny_model_dir):
    Image.new("RGB", (24, 24), (255, 255, 0)).save(tmp_path / "patch.png")
    plain = render_text(tmp_path, recipe(tiny_model_dir, SPLIT.format(middle="", out="p.png")), "p.toml")
    edited = render_text(tmp_path, _paste_recipe(tiny_model_dir, "e.png"), "e.toml")
    import numpy as np
    a = torch.from_numpy(np.asarray(Image.open(plain.outputs[0]).convert("L"), dtype=np.float32))
    b = torch.from_numpy(np.asarray(Image.open(edited.outputs[0]).convert("L"), dtype=np.float32))
    diff = (a - b).abs()
    inside, outside = diff[:32, :32].mean(), torch.cat([diff[32:].flatten(), diff[:32, 32:].flatten()]).mean()
    assert inside > 3 * outside, (float(inside), float(outside))


def test_an_edited_file_changes_the_key_and_the_result(tmp_path, tiny_model_dir):
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    red = tmp_path / "edit.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(red)
    middle = '[[stages]]\ntype = "intervene"\nimage = "edit.png"\n'
    text = recipe(tiny_model_dir, SPLIT.format(middle=middle, out="i.png"))
    (tmp_path / "i.toml").write_text(text)
    key_red = make_plan(load_recipe(tmp_path / "i.toml"), threads=1).invocations[2].key
    first = render_text(tmp_path, text, "i.toml").final_state.latent
    image = Image.new("RGB", (64, 64), (255, 0, 0))
    ImageDraw.Draw(image).rectangle([0, 0, 31, 63], fill=(0, 0, 255))
    image.save(red)
    key_blue = make_plan(load_recipe(tmp_path / "i.toml"), threads=1).invocations[2].key
    second = render_text(tmp_path, text, "i.toml").final_state.latent
    assert key_red != key_blue
    assert not torch.equal(first, second)


def test_intervene_after_the_last_step_is_an_image_edit(tmp_path, tiny_model_dir):
    stages = ('[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "intervene"\n'
              'ops = [{ op = "fill", color = "#00ff00", rect = [0, 0, 64, 64] }]\n\n'
              '[[stages]]\ntype = "save"\npath = "g.png"\n')
    result = render_text(tmp_path, recipe(tiny_model_dir, stages))
    assert result.outputs[0].is_file()
    assert result.final_state.latent_kind == "sampled"


def test_a_missing_paste_file_is_named_with_its_place_in_the_recipe(tmp_path, tiny_model_dir):
    from sdbake.schemas.errors import InputFileError
    with pytest.raises(InputFileError) as err:
        render_text(tmp_path, _paste_recipe(tiny_model_dir, "m.png"), "m.toml")
    assert "patch.png" in str(err.value) and "m.toml:" in str(err.value)


def test_the_preview_shows_the_edit_and_preview_before_the_picture_before_it(tmp_path):
    """On the demo model (its VAE reproduces a flat colour): the fill is in the after-ops preview only."""
    import numpy as np
    demo = Path(__file__).resolve().parent.parent / "models" / "demo"
    middle = ('[[stages]]\ntype = "intervene"\nrect = [16, 16, 32, 32]\npreview = "after.png"\n'
              'preview_before = "before.png"\nops = [{ op = "fill", color = "#ff0000", rect = [16, 16, 32, 32] }]\n')
    text = recipe(demo, SPLIT.format(middle=middle, out="f.png"), prompt="a blue square, white background")
    render_text(tmp_path, text, "f.toml", until="intervene")
    after = np.asarray(Image.open(tmp_path / "out" / "after.png").convert("RGB"), dtype=np.float32)
    before = np.asarray(Image.open(tmp_path / "out" / "before.png").convert("RGB"), dtype=np.float32)
    red = np.array([255.0, 0.0, 0.0])
    inside = (slice(20, 44), slice(20, 44))                   # the rect less the VAE's blur at its edge
    assert np.abs(after[inside] - red).mean() < 40, after[inside].mean(axis=(0, 1))
    assert np.abs(before[inside] - red).mean() > 120, before[inside].mean(axis=(0, 1))
    # the rest is the same picture, up to the decoder's whole-image statistics (measured 8.6 levels)
    assert np.abs(after[48:, 48:] - before[48:, 48:]).mean() < 20
