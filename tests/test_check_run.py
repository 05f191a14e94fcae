"""`sdbake check` end to end on the tiny model: --update writes goldens, a clean run passes, a changed
pixel fails with its location in the report, a broken recipe is its own failing case."""
from __future__ import annotations

import argparse
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from sdbake.runner.commands import check as check_command

RECIPE = """version = 1
name = "tiny"
[models.base]
checkpoint = "{model}"
[defaults]
model = "base"
seed = 5
width = 64
height = 64
steps = 2
sampler = "euler"
cfg = {cfg}
[[stages]]
type = "encode"
prompt = "a red circle"
[[stages]]
type = "sample"
[[stages]]
type = "save"
path = "{{{{ name }}}}/{{{{ seed }}}}.png"
"""


def run_check(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    check_command.register(parser.add_subparsers())
    args = parser.parse_args(["check", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    """A recipe folder, a shared stage cache, and goldens accepted once with --update."""
    root = tmp_path_factory.mktemp("check")
    (root / "recipes").mkdir()
    (root / "recipes" / "tiny.toml").write_text(RECIPE.format(model=tiny_model_dir, cfg=7.0))
    cache = root / "cache"
    assert run_check(str(root / "recipes"), "--golden", str(root / "golden"), "--update",
                     "--cache-dir", str(cache)) == 0
    return root


def golden_copy(workspace: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(workspace / "golden", tmp_path / "golden"))


def test_update_writes_goldens_by_recipe_name_and_output_path(workspace):
    assert (workspace / "golden" / "tiny" / "tiny" / "5.png").is_file()
    recorded = json.loads((workspace / "golden" / "tiny" / "fingerprint.json").read_text())["fingerprint"]
    assert recorded["device"] == "cpu" and recorded["threads"] == 1 and recorded["cpu"]


def test_unchanged_render_passes_with_report_and_junit(workspace, tmp_path, capsys):
    code = run_check(str(workspace / "recipes"), "--golden", str(workspace / "golden"), "--cache-dir",
                     str(workspace / "cache"), "--report", str(tmp_path / "report"), "--junit", str(tmp_path / "j.xml"))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS" in out and "identical bytes" in out
    assert "comparison: exact (equal pixels): same numerics fingerprint as the goldens" in out
    assert "same numerics fingerprint" in (tmp_path / "report" / "index.html").read_text()
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "0")


def test_no_cache_render_matches_the_golden(workspace, capsys):
    assert run_check(str(workspace / "recipes"), "--golden", str(workspace / "golden"), "--no-cache") == 0


def test_one_changed_pixel_fails_with_its_location_in_the_report(workspace, tmp_path, capsys):
    from PIL import Image
    golden = golden_copy(workspace, tmp_path)
    target = golden / "tiny" / "tiny" / "5.png"
    image = Image.open(target).convert("RGB")
    r, g, b = image.getpixel((13, 21))
    image.putpixel((13, 21), (255 - r, 255 - g, 255 - b))
    image.save(target)
    report = tmp_path / "report"
    assert run_check(str(workspace / "recipes"), "--golden", str(golden), "--cache-dir", str(workspace / "cache"),
                     "--report", str(report)) == 1
    assert "FAIL" in capsys.readouterr().out
    page = (report / "index.html").read_text()
    assert "pixel x=13, y=21" in page
    difference = max(abs(255 - 2 * v) for v in (r, g, b))
    assert run_check(str(workspace / "recipes"), "--golden", str(golden), "--cache-dir", str(workspace / "cache"),
                     "--max-abs-diff", str(difference)) == 0        # within tolerance: pass


def test_missing_golden_fails(workspace, tmp_path, capsys):
    assert run_check(str(workspace / "recipes"), "--golden", str(tmp_path / "none"), "--cache-dir",
                     str(workspace / "cache")) == 1
    assert "no golden image" in capsys.readouterr().out


def test_invalid_recipe_is_a_failing_case_and_the_others_still_run(workspace, tmp_path, capsys):
    recipes = Path(shutil.copytree(workspace / "recipes", tmp_path / "recipes"))
    (recipes / "broken.toml").write_text('version = 1\nname = "broken"\nstepz = 3\n')
    junit = tmp_path / "j.xml"
    assert run_check(str(recipes), "--golden", str(workspace / "golden"), "--cache-dir", str(workspace / "cache"),
                     "--junit", str(junit)) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "broken.toml" in out and "PASS" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("errors")) == ("2", "1")


def test_changed_recipe_shows_the_recipe_diff(workspace, tmp_path, tiny_model_dir, capsys):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny.toml").write_text(RECIPE.format(model=tiny_model_dir, cfg=2.0))
    report = tmp_path / "report"
    assert run_check(str(recipes), "--golden", str(workspace / "golden"), "--cache-dir", str(workspace / "cache"),
                     "--report", str(report)) == 1
    page = (report / "index.html").read_text()
    assert "recipe changed since the golden" in page and "cfg: 7.0 -&gt; 2.0" in page
    assert "sample" in page and "re-run" in page


def test_golden_of_another_size_fails_clearly(workspace, tmp_path, capsys):
    from PIL import Image
    golden = golden_copy(workspace, tmp_path)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(golden / "tiny" / "tiny" / "5.png")
    assert run_check(str(workspace / "recipes"), "--golden", str(golden), "--cache-dir",
                     str(workspace / "cache")) == 1
    assert "size differs: golden 32x32, new render 64x64" in capsys.readouterr().out
