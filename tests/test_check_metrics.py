"""`sdbake check` judging: metrics (max abs diff + where, PSNR, SSIM), tolerances, goldens missing,
resized or unreadable, and --update. Cases are built from real image files; no rendering here."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
from sdbake.runner.check.metrics import (
    DEFAULT_TOLERANCES,
    Metrics,
    Tolerances,
    compare,
    gaussian_window,
    heatmap,
    judge,
    load_pixels,
    psnr,
    ssim,
)
from sdbake.runner.check.report import render_html
from sdbake.runner.check.run import Case, CheckResult, judge_output
from sdbake.schemas.errors import InputFileError
from sdbake.schemas.loader import load_recipe

RECIPE = """version = 1
name = "m"
[models.base]
checkpoint = "model"
[defaults]
model = "base"
{check}
[[stages]]
type = "encode"
[[stages]]
type = "sample"
[[stages]]
type = "save"
path = "x.png"
"""


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def picture(size=(64, 64), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def loaded_recipe(tmp_path, check=""):
    path = tmp_path / "m.toml"
    path.write_text(RECIPE.format(check=check))
    return load_recipe(path)


def make_case(tmp_path, new: np.ndarray, golden: np.ndarray | bytes | None,
              tolerances: Tolerances | None = None, exact: bool = False) -> Case:
    golden_path = tmp_path / "golden" / "m" / "x.png"
    if golden is not None:
        golden_path.parent.mkdir(parents=True, exist_ok=True)
        golden_path.write_bytes(golden if isinstance(golden, bytes) else png(golden))
    return Case(str(tmp_path / "m.toml"), "m", "x.png", golden_path=golden_path, new_bytes=png(new),
                tolerances=tolerances or Tolerances(), exact=exact)


# -- metrics ----------------------------------------------------------------------------------------

def naive_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 written out window by window: an independent reference for the vectorized one."""
    g = gaussian_window()
    window = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for channel in range(x.shape[2]):
        a, b = x[..., channel].astype(np.float64), y[..., channel].astype(np.float64)
        for top in range(a.shape[0] - 10):
            for left in range(a.shape[1] - 10):
                pa, pb = a[top:top + 11, left:left + 11], b[top:top + 11, left:left + 11]
                mu_a, mu_b = (window * pa).sum(), (window * pb).sum()
                var_a = (window * (pa - mu_a) ** 2).sum()
                var_b = (window * (pb - mu_b) ** 2).sum()
                cov = (window * (pa - mu_a) * (pb - mu_b)).sum()
                values.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                              / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_ssim_matches_the_windowed_definition():
    golden = picture((20, 16), seed=1)
    noisy = np.clip(golden.astype(int) + np.random.default_rng(2).integers(-40, 40, golden.shape), 0, 255)
    assert ssim(golden, noisy.astype(np.uint8)) == pytest.approx(naive_ssim(golden, noisy), abs=1e-9)
    assert ssim(golden, golden) == pytest.approx(1.0)
    assert ssim(golden, noisy.astype(np.uint8)) < 0.99


def test_gaussian_window_is_normalized_with_sigma_1_5():
    weights = gaussian_window()
    assert len(weights) == 11 and weights.sum() == pytest.approx(1.0)
    assert weights[5] / weights[6] == pytest.approx(math.exp(1 / (2 * 1.5 ** 2)))


def test_psnr_of_one_changed_pixel():
    golden = picture()
    new = golden.copy()
    new[10, 20, 0] = golden[10, 20, 0] ^ 0x80         # one channel of one pixel moves by 128
    mse = 128 ** 2 / golden.size
    assert psnr(golden, new) == pytest.approx(10 * math.log10(255 ** 2 / mse))
    assert math.isinf(psnr(golden, golden))


def test_compare_finds_the_largest_difference():
    golden = np.zeros((32, 48, 3), np.uint8)
    new = golden.copy()
    new[5, 7] = (3, 0, 0)
    new[20, 40] = (0, 90, 0)
    metrics = compare(golden, new)
    assert (metrics.max_abs_diff, metrics.location, metrics.differing_pixels) == (90, (40, 20), 2)
    spot = heatmap(golden, new, metrics.location)
    assert tuple(spot[20, 40]) == (255, 255, 255) and tuple(spot[0, 0]) == (0, 0, 0)


def test_tolerances_are_defaults_then_recipe_then_flags(tmp_path):
    assert Tolerances.from_recipe(loaded_recipe(tmp_path).recipe.check).effective() == DEFAULT_TOLERANCES
    stated = Tolerances.from_recipe(loaded_recipe(tmp_path, "[check]\nmin_psnr = 30.0").recipe.check)
    assert stated == Tolerances(min_psnr=30.0)
    assert stated.effective() == Tolerances(DEFAULT_TOLERANCES.max_abs_diff, DEFAULT_TOLERANCES.mean_abs_diff,
                                            30.0, DEFAULT_TOLERANCES.min_ssim)
    assert stated.overridden(Tolerances(max_abs_diff=4, min_ssim=0.9)) == Tolerances(4, None, 30.0, 0.9)
    metrics = Metrics(max_abs_diff=20, location=(1, 2), psnr=35.0, ssim=0.999, differing_pixels=1,
                      mean_abs_diff=0.01)
    assert judge(metrics, Tolerances(max_abs_diff=20, min_psnr=30.0)) == []
    assert judge(metrics, Tolerances(max_abs_diff=10, min_psnr=30.0)) == ["max abs diff 20 > 10 at pixel (x=1, y=2)"]
    assert judge(metrics, Tolerances(max_abs_diff=20)) == ["PSNR 35.00 dB < 45.0"]      # the default PSNR


def test_default_tolerances_pass_other_kernels_and_fail_real_changes():
    """The figures the defaults were chosen from (docs/reproducibility.md): AVX-512 vs AVX2 vs no-SIMD
    renders of the demo differ by one level in a few pixels; a third of an image inverted does not pass."""
    golden = np.full((64, 64, 3), 128, np.uint8)
    golden[16:48, 16:48] = (220, 60, 30)                      # a flat picture: the hardest for PSNR/SSIM
    kernels = golden.copy()
    kernels[[2, 25, 40, 59], [29, 7, 33, 27], 0] += 1         # one level in four pixels
    assert judge(compare(golden, kernels), Tolerances()) == []
    inverted = golden.copy()
    inverted[:21, :21] = 255 - inverted[:21, :21]
    assert len(judge(compare(golden, inverted), Tolerances())) == 4     # every criterion alone fails it
    magenta = golden.copy()
    magenta[:16, :16] = (255, 0, 255)
    assert judge(compare(golden, magenta), Tolerances())
    assert judge(compare(golden, kernels), Tolerances(), exact=True)


# -- judging cases ----------------------------------------------------------------------------------

def test_identical_bytes_pass(tmp_path):
    golden = picture()
    case = make_case(tmp_path, golden, golden)
    judge_output(case, loaded_recipe(tmp_path), update=False)
    assert (case.status, case.message) == ("pass", "identical bytes")


def test_one_pixel_beyond_tolerance_fails_with_its_location(tmp_path):
    golden = picture()
    new = golden.copy()
    new[33, 17] = 255 - golden[33, 17]
    case = make_case(tmp_path, new, golden, Tolerances(max_abs_diff=2))
    judge_output(case, loaded_recipe(tmp_path), update=False)
    assert case.status == "fail" and "(x=17, y=33)" in case.message
    page = render_html(CheckResult([case], [], 0.1))
    assert "pixel x=17, y=33" in page and "17, 33" in page


def test_one_pixel_within_tolerance_passes(tmp_path):
    golden = picture()
    new = golden.copy()
    new[3, 4] = np.clip(golden[3, 4].astype(int) + 2, 0, 255)
    case = make_case(tmp_path, new, golden, Tolerances(max_abs_diff=2))
    judge_output(case, loaded_recipe(tmp_path), update=False)
    assert case.status == "pass" and case.metrics.max_abs_diff <= 2
    exact = make_case(tmp_path, new, golden, exact=True)            # exact: pixels must be equal
    judge_output(exact, loaded_recipe(tmp_path), update=False)
    assert exact.status == "fail" and "comparison is exact" in exact.message


def test_psnr_and_ssim_tolerances_judge_noise(tmp_path):
    golden = picture(seed=3)
    noisy = np.clip(golden.astype(int) + np.random.default_rng(4).integers(-3, 4, golden.shape), 0, 255)
    lenient = make_case(tmp_path, noisy, golden, Tolerances(mean_abs_diff=2.0, min_psnr=35.0, min_ssim=0.9))
    judge_output(lenient, loaded_recipe(tmp_path), update=False)
    assert lenient.status == "pass"
    demanding = make_case(tmp_path, noisy, golden, Tolerances(min_psnr=60.0))
    judge_output(demanding, loaded_recipe(tmp_path), update=False)
    assert demanding.status == "fail" and "PSNR" in demanding.message


def test_missing_golden_fails_and_update_writes_it(tmp_path):
    new = picture()
    case = make_case(tmp_path, new, None)
    judge_output(case, loaded_recipe(tmp_path), update=False)
    assert case.status == "fail" and "no golden image" in case.message and "--update" in case.message
    assert not case.golden_path.exists()
    accepted = make_case(tmp_path, new, None)
    judge_output(accepted, loaded_recipe(tmp_path), update=True)
    assert accepted.status == "added" and accepted.golden_path.read_bytes() == png(new)


def test_update_rewrites_a_changed_golden_and_keeps_an_equal_one(tmp_path):
    golden, new = picture(seed=5), picture(seed=6)
    case = make_case(tmp_path, new, golden)
    judge_output(case, loaded_recipe(tmp_path), update=True)
    assert case.status == "updated" and "max abs diff" in case.message
    assert load_pixels(case.golden_path.read_bytes(), "g").tolist() == new.tolist()
    again = make_case(tmp_path, new, None)
    judge_output(again, loaded_recipe(tmp_path), update=True)
    assert again.status == "pass"


def test_golden_of_another_size_fails_with_both_sizes(tmp_path):
    case = make_case(tmp_path, picture((64, 64)), picture((32, 48)))
    judge_output(case, loaded_recipe(tmp_path), update=False)
    assert case.status == "fail" and case.message == "size differs: golden 32x48, new render 64x64"
    assert "size differs" in render_html(CheckResult([case], [], 0.1))


def test_unreadable_golden_is_a_clear_error(tmp_path):
    case = make_case(tmp_path, picture(), b"this is not a png")
    judge_output(case, loaded_recipe(tmp_path), update=False)
    assert case.status == "error" and "not a readable image" in case.message
    assert str(case.golden_path) in case.message
    with pytest.raises(InputFileError, match="not a readable image"):
        load_pixels(b"\x89PNG\r\n\x1a\n truncated", "new.png")
