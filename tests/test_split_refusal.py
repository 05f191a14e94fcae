"""Samplers that choose their own steps over the range they are given (SamplerInfo.whole_range: dpm_fast,
dpm_adaptive, restart) cannot keep the split promise: a sample stage that continues a run or ends
before its last step is one validate error line, and `run` stops before any stage. A slice from an
init image (img2img) is a whole run of its own and is accepted."""
from __future__ import annotations

import pytest
from recipe_helpers import write
from stage_helpers import recipe

WHOLE_RANGE = "dpm_fast"


def fix(sampler: str, label: str) -> str:
    return (f"{label} ({sampler}) chooses its own steps over the range it is given, so a split run would differ "
            "from one run: run it in one sample stage, or split with another sampler")


FIX = fix("dpm_fast", "DPM fast")


SPLIT = '[[stages]]\ntype = "sample"\nend = 4\n\n[[stages]]\ntype = "sample"\nsampler = "{second}"\n'


def validate(tmp_path, capsys, text: str) -> tuple[int, list[str]]:
    from sdbake.runner.cli import main
    code = main(["validate", str(write(tmp_path, "r.toml", text))])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("sampler,label,resolved", [("dpm_fast", "DPM fast", "dpm_fast"),
                                                    ("DPM fast", "DPM fast", "dpm_fast_a1111"),
                                                    ("dpm_adaptive", "DPM adaptive", "dpm_adaptive")])
def test_a_stage_that_ends_early_is_refused_with_the_fix(tmp_path, capsys, tiny_model_dir, sampler, label, resolved):
    text = recipe(tiny_model_dir, SPLIT.format(second="dpmpp_2m"), sampler=sampler)
    code, err = validate(tmp_path, capsys, text)
    assert code == 1
    assert err == [f"{tmp_path / 'r.toml'}:20:1: stages[1].sampler: {fix(resolved, label)}"]


def test_a_stage_that_continues_a_run_is_refused(tmp_path, capsys, tiny_model_dir):
    text = recipe(tiny_model_dir, SPLIT.format(second=WHOLE_RANGE), sampler="dpmpp_2m")
    code, err = validate(tmp_path, capsys, text)
    assert code == 1
    # the line of the second stage's own `sampler` key (the first test's stage inherits it: its table)
    assert err == [f"{tmp_path / 'r.toml'}:26:1: stages[2].sampler: {FIX}"]


def test_the_same_recipe_in_one_stage_and_an_img2img_slice_validate(tmp_path, capsys, tiny_model_dir):
    from PIL import Image
    code, err = validate(tmp_path, capsys, recipe(tiny_model_dir, '[[stages]]\ntype = "sample"\n', sampler=WHOLE_RANGE))
    assert (code, err) == (0, [])
    Image.new("RGB", (64, 64), "red").save(tmp_path / "init.png")
    text = recipe(tiny_model_dir, '[[stages]]\ntype = "sample"\n', sampler=WHOLE_RANGE).replace(
        'negative = "blurry"', f'negative = "blurry"\nimage = "{tmp_path / "init.png"}"\ndenoise = 0.5')
    code, err = validate(tmp_path, capsys, text)
    assert (code, err) == (0, [])


def test_run_stops_before_any_stage(tmp_path, capsys, tiny_model_dir):
    from sdbake.runner.cli import main
    text = recipe(tiny_model_dir, SPLIT.format(second="dpmpp_2m") + '\n[[stages]]\ntype = "save"\npath = "x.png"\n',
                  sampler=WHOLE_RANGE)
    path = write(tmp_path, "r.toml", text)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 1
    assert f"stages[1].sampler: {FIX}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))
