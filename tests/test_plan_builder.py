"""One plan builder: the CLI, the Python API and sweeps plan a recipe the same way, with the same options."""
from __future__ import annotations

import argparse

import pytest
from recipe_helpers import txt2img, write


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SDBAKE_THREADS", "1")
    monkeypatch.setenv("SDBAKE_HASH_INDEX", str(tmp_path / "hash-index.json"))
    monkeypatch.setenv("SDBAKE_CACHE", str(tmp_path / "cache"))


def cli_args(*argv: str) -> argparse.Namespace:
    from sdbake.runner.cli import build_parser
    return build_parser().parse_args([str(a) for a in argv])


def test_cli_and_api_give_the_same_plan_for_the_same_options(tmp_path, tiny_model_dir):
    from sdbake.runner.api import make_plan
    from sdbake.runner.commands.run import prepare
    from sdbake.schemas.loader import load_recipe
    recipe = write(tmp_path, "r.toml", txt2img(tiny_model_dir, steps=3))
    cli_plan, _ = prepare(cli_args("run", recipe, "--no-half-vae", "--compile", "--out", tmp_path / "o"))
    api_plan = make_plan(load_recipe(recipe), no_half_vae=True, compile=True, output_root=tmp_path / "o")
    assert cli_plan.numerics == api_plan.numerics
    assert cli_plan.numerics.vae_fp32 and cli_plan.numerics.compile
    assert [inv.key for inv in cli_plan.invocations] == [inv.key for inv in api_plan.invocations]
    plain = make_plan(load_recipe(recipe), output_root=tmp_path / "o")
    assert [inv.key for inv in plain.invocations] != [inv.key for inv in api_plan.invocations]


def test_a_misspelled_option_is_an_error_not_ignored(tmp_path, tiny_model_dir):
    from sdbake.runner.api import make_plan, render
    from sdbake.runner.sweep.run import run_sweep
    from sdbake.schemas.loader import load_recipe
    recipe = write(tmp_path, "r.toml", txt2img(tiny_model_dir, steps=3))
    for call in (lambda: make_plan(load_recipe(recipe), no_half_vea=True),
                 lambda: render(recipe, untill="encode"),
                 lambda: run_sweep(recipe, cli_matrix=["seed=1,2"], refrsh={"encode"})):
        with pytest.raises(TypeError, match="unexpected option"):
            call()


def test_a_sweep_honours_until_and_compile(tmp_path, tiny_model_dir, capsys):
    from sdbake.runner.cli import main
    from sdbake.runner.sweep.run import plan_sweep
    recipe = write(tmp_path, "r.toml", txt2img(tiny_model_dir, steps=3))
    assert main(["run", str(recipe), "--matrix", "seed=1,2", "--until", "encode", "--out",
                 str(tmp_path / "o")]) == 0
    assert not (tmp_path / "o").exists()               # stopped before any save: no image, no grid
    capsys.readouterr()
    # both points' encode stages are cached, nothing after them
    assert main(["plan", str(recipe), "--matrix", "seed=1,2", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "already cached: 2 of 6" in capsys.readouterr().out
    compiled = plan_sweep(recipe, cli_matrix=["seed=1,2"], compile=True)
    plain = plan_sweep(recipe, cli_matrix=["seed=1,2"])
    assert compiled.keys[0][1] != plain.keys[0][1]     # --compile reaches every point's numerics


def test_a_sweep_with_locked_refuses_points_that_differ_from_the_lock(tmp_path, tiny_model_dir, capsys):
    from sdbake.runner.cli import main
    recipe = write(tmp_path, "r.toml", txt2img(tiny_model_dir, steps=2, prompt="a cat"))
    assert main(["lock", str(recipe), "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    code = main(["run", str(recipe), "--locked", "--matrix", "stages.encode.prompt=a cat,a dog",
                 "--out", str(tmp_path / "o2")])
    assert code == 1
    err = capsys.readouterr().err
    assert "resolved prompts differ from the lock" in err and "a dog" in err
    assert not (tmp_path / "o2").exists()              # refused before any point rendered
