"""Colour correction as A1111 does it: LAB histogram match to the original, then the result's
luminosity (blendmodes' luminosity blend), all on 8-bit pictures."""
from __future__ import annotations

import numpy as np
import pytest
from sdbake.stages.colorfix import color_correct, luma, luminosity_blend, match_histograms, rgb_to_lab8


def pictures(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A reddish original and a bluish result of the same gradients, with noise (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([xx, yy, 1 - xx * yy], -1)
    original = base * [1.0, 0.4, 0.3] + rng.normal(0, 0.05, base.shape) + [0.2, 0, 0]
    result = base[:, ::-1] * [0.3, 0.5, 1.0] + rng.normal(0, 0.08, base.shape)
    return tuple((np.clip(image, 0, 1) * 255).astype(np.uint8) for image in (result, original))


def w3c_luminosity(backdrop: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The W3C compositing spec's SetLum(Cb, Lum(Cs)) with ClipColor, one pixel at a time."""
    out = np.empty_like(backdrop)
    for index in np.ndindex(backdrop.shape[:-1]):
        cb, cs = backdrop[index], source[index]
        target = 0.299 * cs[0] + 0.587 * cs[1] + 0.114 * cs[2]
        c = cb + (target - (0.299 * cb[0] + 0.587 * cb[1] + 0.114 * cb[2]))
        lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
        low, high = min(c), max(c)
        if low < 0:
            c = lum + (c - lum) * lum / (lum - low)
        if high > 1:
            c = lum + (c - lum) * (1 - lum) / (high - lum)
        out[index] = c
    return out


def test_luminosity_blend_is_the_w3c_set_lum_with_clip_color():
    rng = np.random.default_rng(0)
    colours, target = rng.uniform(0, 1, (12, 12, 3)), rng.uniform(0, 1, (12, 12, 3))
    blended = luminosity_blend(colours, target)
    np.testing.assert_allclose(blended, w3c_luminosity(colours, target), atol=1e-12)
    assert blended.min() >= -1e-12 and blended.max() <= 1 + 1e-12
    np.testing.assert_allclose(luma(blended), luma(target), atol=1e-9)     # luma is the target's


def test_histogram_match_maps_each_quantile_to_the_reference_value_there():
    rng = np.random.default_rng(1)
    source = rng.permutation(256).astype(np.uint8).reshape(16, 16, 1)            # each value once
    reference = np.repeat(np.array([10, 20, 200, 250], np.uint8), 64).reshape(16, 16, 1)
    matched = match_histograms(source, reference)
    # the k-th smallest source value sits at quantile (k+1)/256; the reference's quantiles are
    # 1/4, 1/2, 3/4, 1 at 10, 20, 200, 250, linearly interpolated between, truncated to 8 bits
    quantile = (source.astype(float) + 1) / 256
    expected = np.interp(quantile, [0.25, 0.5, 0.75, 1.0], [10, 20, 200, 250]).astype(np.uint8)
    assert np.array_equal(matched, expected)


def test_correction_takes_the_original_colours_and_keeps_the_result_luminosity():
    result, original = pictures(2)
    corrected = color_correct(result, original)
    lab = [rgb_to_lab8(image).astype(float) for image in (result, original, corrected)]
    chroma_gap = [np.abs(lab[i][..., 1:].mean((0, 1)) - lab[1][..., 1:].mean((0, 1))).sum() for i in (0, 2)]
    assert chroma_gap[1] < 0.2 * chroma_gap[0]
    # luma is the result's up to 8-bit rounding, except where ClipColor had to pull a colour in
    assert np.median(np.abs(luma(corrected / 255.0) - luma(result / 255.0))) * 255 <= 1.0


def test_matches_a1111_computed_with_opencv_lab():
    cv2 = pytest.importorskip("cv2")
    cube = np.stack(np.meshgrid(*[np.arange(0, 256, 5)] * 3), -1).reshape(1, -1, 3).astype(np.uint8)
    assert np.array_equal(rgb_to_lab8(cube), cv2.cvtColor(cube, cv2.COLOR_RGB2LAB))
    for seed in range(3):
        result, original = pictures(seed)
        # A1111's processing.py: LAB with OpenCV, skimage's match on 8-bit LAB, back with OpenCV,
        # then the luminosity blend of the matched picture with the result, rounded
        matched = cv2.cvtColor(match_histograms(cv2.cvtColor(result, cv2.COLOR_RGB2LAB),
                                                cv2.cvtColor(original, cv2.COLOR_RGB2LAB)), cv2.COLOR_LAB2RGB)
        expected = np.clip(np.around(w3c_luminosity(matched / 255.0, result / 255.0) * 255), 0, 255)
        difference = np.abs(color_correct(result, original).astype(int) - expected.astype(int))
        # our LAB -> RGB is floating point where OpenCV's is fixed point: a code or two, rarely more
        assert difference.max() <= 6 and (difference == 0).mean() > 0.9, (difference.max(), (difference == 0).mean())
