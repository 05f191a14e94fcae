"""intervene keep_outside: after the edit, the latent outside the mask follows the unedited run exactly."""
from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from PIL import Image
from stage_helpers import recipe, render_text

torch = pytest.importorskip("torch")
DEMO = Path(__file__).resolve().parent.parent / "models" / "demo"

EDIT = ('[[stages]]\ntype = "intervene"\nrect = [0, 0, 32, 32]\n{keep}'
        'ops = [{{ op = "fill", color = "#ff0000", rect = [0, 0, 32, 32] }}]\n\n')


def _stages(edit: str, out: str, splits=(3, 4, 5, 6, 7, 8), save_at=None) -> str:
    """sample 0-3, the edit, then one sample stage per step (so every step is a stage boundary)."""
    text = f'[[stages]]\ntype = "sample"\nend = {splits[0]}\n\n{edit}'
    for start, end in pairwise(splits):
        text += f'[[stages]]\ntype = "sample"\nstart = {start}\nend = {end}\n\n'
        if end == save_at:
            text += '[[stages]]\ntype = "save"\nid = "middle"\npath = "middle.png"\n\n'
    return text + f'[[stages]]\ntype = "save"\npath = "{out}"\n'


def _recording(monkeypatch) -> dict:
    """Every stage's output state by stage id, as the runner hands it on."""
    from sdbake.runner.runtime import Runtime
    seen = {}
    original = Runtime.run_stage

    def run_stage(self, inv, state, **kwargs):
        new_state, files = original(self, inv, state, **kwargs)
        seen[inv.id] = new_state
        return new_state, files
    monkeypatch.setattr(Runtime, "run_stage", run_stage)
    return seen


OUTSIDE = torch.ones((1, 4, 8, 8), dtype=torch.bool)
OUTSIDE[:, :, :4, :4] = False                     # the 32x32 pixel rect is latent cells [0:4, 0:4]


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde", "heun", "uni_pc", "lcm"])
def test_the_latent_outside_the_mask_equals_the_unedited_run_at_every_step(tmp_path, tiny_model_dir, monkeypatch,
                                                                            sampler):
    seen = _recording(monkeypatch)
    plain = recipe(tiny_model_dir, _stages("", "p.png"), sampler=sampler)
    render_text(tmp_path, plain, "p.toml")
    unedited = dict(seen)
    edited = recipe(tiny_model_dir, _stages(EDIT.format(keep="keep_outside = true\n"), "e.png"),
                    sampler=sampler)
    render_text(tmp_path, edited, "e.toml")
    steps = [f"sample-{n}" for n in range(2, 7)]
    for stage in ["intervene", *steps]:
        a, b = unedited.get(stage, unedited["sample-1"]).latent, seen[stage].latent
        outside = OUTSIDE.expand_as(a)
        assert torch.equal(a[outside], b[outside]), (sampler, stage)
        assert not torch.equal(a[~outside], b[~outside]), (sampler, stage)
    # the twin is the unedited run itself, history included; it ends with the schedule
    assert torch.equal(seen["sample-5"].twin[0]["latent"], unedited["sample-5"].latent)
    assert seen["sample-6"].twin is None and seen["intervene"].twin is not None


def test_one_stage_after_the_edit_equals_one_stage_per_step(tmp_path, tiny_model_dir):
    """The twin's steps inside one stage and across stage boundaries (and so through the cache) agree."""
    edit = EDIT.format(keep="keep_outside = true\n")
    per_step = render_text(tmp_path, recipe(tiny_model_dir, _stages(edit, "a.png"), sampler="dpmpp_2m"),
                           "a.toml")
    whole = render_text(tmp_path, recipe(tiny_model_dir, _stages(edit, "b.png", splits=(3, 8)),
                                         sampler="dpmpp_2m"), "b.toml")
    assert torch.equal(per_step.final_state.latent, whole.final_state.latent)


def test_the_twin_travels_through_the_cache_and_a_save_between_splits(tmp_path, tiny_model_dir):
    edit = EDIT.format(keep="keep_outside = true\n")
    text = recipe(tiny_model_dir, _stages(edit, "c.png", save_at=5), sampler="euler_ancestral")
    fresh = render_text(tmp_path, text, "c.toml").final_state.latent
    cache = tmp_path / "cache"
    render_text(tmp_path, text, "c.toml", no_cache=False, cache_dir=cache, until="middle")
    resumed = render_text(tmp_path, text, "c.toml", no_cache=False, cache_dir=cache)
    statuses = [report.status for report in resumed.reports]
    assert statuses[:5] == ["hit"] * 5 and "ran" in statuses       # the later stages start from the stored twin
    assert torch.equal(resumed.final_state.latent, fresh)
    plain = render_text(tmp_path, recipe(tiny_model_dir, _stages("", "d.png", save_at=5),
                                         sampler="euler_ancestral"), "d.toml").final_state.latent
    outside = OUTSIDE.expand_as(plain)
    assert torch.equal(plain[outside], fresh[outside])


def test_keep_outside_false_is_todays_intervene_with_the_same_key(tmp_path, tiny_model_dir):
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    keys, latents = [], []
    for n, keep in enumerate(("", "keep_outside = false\n")):
        text = recipe(tiny_model_dir, _stages(EDIT.format(keep=keep), f"{n}.png", splits=(3, 8)))
        (tmp_path / f"{n}.toml").write_text(text)
        keys.append([inv.key for inv in make_plan(load_recipe(tmp_path / f"{n}.toml"), threads=1).invocations[:4]])
        latents.append(render_text(tmp_path, text, f"{n}.toml").final_state.latent)
    assert keys[0] == keys[1]
    assert torch.equal(latents[0], latents[1])


def test_keep_outside_after_the_last_step_is_an_error_naming_the_stage(tmp_path, tiny_model_dir):
    from sdbake.schemas.errors import StateError
    stages = '[[stages]]\ntype = "sample"\n\n' + EDIT.format(keep="keep_outside = true\n")
    with pytest.raises(StateError, match="keep_outside keeps the later sampling steps") as err:
        render_text(tmp_path, recipe(tiny_model_dir, stages))
    assert "intervene" in str(err.value)


def test_keep_outside_without_a_mask_or_rect_fails_validation(tmp_path, tiny_model_dir, capsys):
    from sdbake.runner.cli import main
    text = recipe(tiny_model_dir, '[[stages]]\ntype = "sample"\nend = 3\n\n[[stages]]\ntype = "intervene"\n'
                  'keep_outside = true\nops = [{ op = "blur" }]\n')
    path = tmp_path / "k.toml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and "keep_outside keeps what lies outside the mask" in err



def _pixels(path) -> torch.Tensor:
    import numpy as np
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.int16))


def _beyond_reach(model_dir: Path, size: int, rect: list[int]) -> torch.Tensor:
    """(H, W) True where a pixel is farther than the decoder's reach from the latent cells the rect touches."""
    from diffusers import AutoencoderKL
    from sdbake.stages.keep_outside import decoder_reach
    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    reach = -(-decoder_reach(vae) // factor) * factor              # whole latent cells
    x, y, w, h = rect
    x1, y1 = -(-(x + w) // factor) * factor, -(-(y + h) // factor) * factor
    beyond = torch.ones((size, size), dtype=torch.bool)
    beyond[max(0, y - reach):y1 + reach, max(0, x - reach):x1 + reach] = False
    return beyond


def _pixel_recipe(model_dir, edit: str, out: str, size: int, prompt: str) -> str:
    return recipe(model_dir, f'[[stages]]\ntype = "sample"\nend = 6\n\n{edit}[[stages]]\ntype = "sample"\nstart = 6\n\n'
                  f'[[stages]]\ntype = "save"\npath = "{out}"\n', size=size, prompt=prompt, sampler="dpmpp_2m")


@pytest.mark.parametrize("which, size", [("tiny", 256), ("demo", 128)])
def test_the_final_pixels_beyond_the_decoders_reach_equal_the_unedited_render(tmp_path, tiny_model_dir, which, size):
    model_dir = tiny_model_dir if which == "tiny" else DEMO
    prompt = "a red circle" if which == "tiny" else "a large red circle in the center, blue background"
    edit = ('[[stages]]\ntype = "intervene"\nrect = [8, 8, 16, 16]\nkeep_outside = true\n'
            'ops = [{ op = "fill", color = "#00ff00", rect = [8, 8, 16, 16] }]\n\n')
    plain = render_text(tmp_path, _pixel_recipe(model_dir, "", "p.png", size, prompt), "p.toml").outputs[0]
    edited = render_text(tmp_path, _pixel_recipe(model_dir, edit, "e.png", size, prompt), "e.toml").outputs[0]
    a, b = _pixels(plain), _pixels(edited)
    beyond = _beyond_reach(model_dir, size, [8, 8, 16, 16])
    assert beyond.float().mean() > 0.5                          # most of the image is beyond the reach
    assert torch.equal(a[beyond], b[beyond])
    assert (a[8:24, 8:24] - b[8:24, 8:24]).abs().max() > 20     # and the edit shows



def test_a_second_edit_widens_the_kept_region_and_one_without_keep_outside_ends_it(tmp_path, tiny_model_dir,
                                                                                  monkeypatch, capsys):
    seen = _recording(monkeypatch)
    second = ('[[stages]]\ntype = "intervene"\nid = "again"\nrect = [32, 32, 32, 32]\n{keep}'
              'ops = [{{ op = "fill", color = "#0000ff", rect = [32, 32, 32, 32] }}]\n\n')
    first = EDIT.format(keep="keep_outside = true\n") + '[[stages]]\ntype = "sample"\nid = "mid"\nstart = 3\nend = 5\n\n'

    def stages(keep: str, out: str) -> str:
        return (f'[[stages]]\ntype = "sample"\nend = 3\n\n{first}{second.format(keep=keep)}'
                f'[[stages]]\ntype = "sample"\nstart = 5\n\n[[stages]]\ntype = "save"\npath = "{out}"\n')
    plain = render_text(tmp_path, recipe(tiny_model_dir, _stages("", "p.png", splits=(3, 8))), "p.toml")
    widened = render_text(tmp_path, recipe(tiny_model_dir, stages("keep_outside = true\n", "w.png")), "w.toml")
    a, b = plain.final_state.latent, widened.final_state.latent
    both = OUTSIDE.clone()
    both[:, :, 4:, 4:] = False                      # the second rect's cells
    assert torch.equal(a[both.expand_as(a)], b[both.expand_as(b)])
    assert not torch.equal(a[:, :, 4:, 4:], b[:, :, 4:, 4:])
    capsys.readouterr()
    render_text(tmp_path, recipe(tiny_model_dir, stages("", "n.png")), "n.toml")
    assert seen["mid"].twin is not None and seen["again"].twin is None
    assert "the outside kept by an earlier one follows this edit" in capsys.readouterr().err
