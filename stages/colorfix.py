"""A1111's img2img/inpaint colour correction ("Apply color correction to img2img results to match
original colors"), as its modules/processing.py does it, in numpy:

1. both images (8-bit RGB) to OpenCV's 8-bit CIE L*a*b* (cv2.COLOR_RGB2LAB: L* scaled by 255/100,
   a* and b* offset by 128, D65), computed with OpenCV's fixed-point arithmetic so the codes are
   the same;
2. each LAB channel of the result histogram-matched to the original's (skimage's
   exposure.match_histograms on 8-bit data: quantile interpolation, the result truncated to 8 bits);
3. back to 8-bit RGB (cv2.COLOR_LAB2RGB; computed here in floating point, which differs from
   OpenCV's fixed-point path by a code or two on a few percent of pixels);
4. the `blendmodes` luminosity blend: the matched colours with the result's luminosity
   (W3C compositing SetLum/ClipColor, Rec.601 weights 0.299, 0.587, 0.114), rounded to 8 bits.
"""
from __future__ import annotations

import numpy as np

# OpenCV's sRGB -> XYZ matrix and D65 white point (cvtColor documentation, "RGB <-> CIE L*a*b*").
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_WHITE = np.array([0.950456, 1.0, 1.088754])
_EPSILON, _KAPPA = 0.008856, 903.3          # CIE constants as OpenCV writes them

# OpenCV's 8-bit RGB -> LAB is fixed point: linear RGB in 1/8 steps of a code (gamma table), the
# matrix in 1/4096, f(t) from a table over 3072 entries (computed in float32) in 1/32768.
_GAMMA_BITS, _MATRIX_BITS, _F_BITS = 3, 12, 15


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def _fixed_point_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = 255 * (1 << _GAMMA_BITS)
    gamma = np.rint(scale * _srgb_to_linear(np.arange(256) / 255.0)).astype(np.int64)
    matrix = np.rint((1 << _MATRIX_BITS) * _RGB_TO_XYZ / _WHITE[:, None]).astype(np.int64)
    t = np.arange(256 * 3 // 2 * (1 << _GAMMA_BITS), dtype=np.float32) / np.float32(scale)
    f = np.where(t < np.float32(_EPSILON), t * np.float32(7.787) + np.float32(16 / 116), np.cbrt(t))
    return gamma, matrix, np.rint((1 << _F_BITS) * f.astype(np.float64)).astype(np.int64)


_GAMMA_TABLE, _MATRIX, _F_TABLE = _fixed_point_tables()


def _descale(value: np.ndarray, bits: int) -> np.ndarray:
    return (value + (1 << (bits - 1))) >> bits


def rgb_to_lab8(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> OpenCV's 8-bit LAB codes (uint8)."""
    xyz = _descale(_GAMMA_TABLE[rgb.astype(np.int64)] @ _MATRIX.T, _MATRIX_BITS)
    fx, fy, fz = (_F_TABLE[xyz[..., i]] for i in range(3))
    one = 1 << _F_BITS
    lightness = _descale((116 * 255 + 50) // 100 * fy - (16 * 255 * one + 50) // 100, _F_BITS)
    a = _descale(500 * (fx - fy) + 128 * one, _F_BITS)
    b = _descale(200 * (fy - fz) + 128 * one, _F_BITS)
    return np.clip(np.stack([lightness, a, b], -1), 0, 255).astype(np.uint8)


def lab8_to_rgb(lab: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit LAB codes -> (H, W, 3) uint8 sRGB (CIE formulas, rounded to the nearest code)."""
    lab = lab.astype(np.float64)
    lightness, a, b = lab[..., 0] * (100 / 255), lab[..., 1] - 128, lab[..., 2] - 128
    dark = lightness <= _EPSILON * _KAPPA
    y = np.where(dark, lightness / _KAPPA, ((lightness + 16) / 116) ** 3)
    fy = np.where(dark, 7.787 * y + 16 / 116, (lightness + 16) / 116)
    f = np.stack([fy + a / 500, fy, fy - b / 200], -1)
    xyz = np.where(f ** 3 > _EPSILON, f ** 3, (f - 16 / 116) / 7.787)
    xyz[..., 1] = y
    linear = np.clip((xyz * _WHITE) @ np.linalg.inv(_RGB_TO_XYZ).T, 0.0, 1.0)
    return np.rint(_linear_to_srgb(linear) * 255).astype(np.uint8)


def match_histograms(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per channel of 8-bit (H, W, C) images: each source value goes to the reference value at the
    same quantile (linear interpolation between the reference's values), truncated to 8 bits."""
    matched = np.empty_like(source)
    for c in range(source.shape[-1]):
        values = source[..., c].ravel()
        source_quantiles = np.cumsum(np.bincount(values, minlength=256)) / values.size
        reference_counts = np.bincount(reference[..., c].ravel(), minlength=256)
        present = np.nonzero(reference_counts)[0]
        reference_quantiles = np.cumsum(reference_counts[present]) / reference[..., c].size
        lookup = np.interp(source_quantiles, reference_quantiles, present)
        matched[..., c] = lookup[values].reshape(source.shape[:-1]).astype(np.uint8)
    return matched


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def luminosity_blend(colours: np.ndarray, luminosity_of: np.ndarray) -> np.ndarray:
    """W3C non-separable "luminosity" on floats in [0, 1]: `colours` shifted to the luma of
    `luminosity_of`, then pulled back into range towards their own luma (ClipColor)."""
    shifted = colours + (luma(luminosity_of) - luma(colours))[..., None]
    lum = luma(shifted)[..., None]
    low, high = shifted.min(-1, keepdims=True), shifted.max(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shifted = np.where(low < 0, lum + (shifted - lum) * lum / (lum - low), shifted)
        shifted = np.where(high > 1, lum + (shifted - lum) * (1 - lum) / (high - lum), shifted)
    return shifted


def color_correct(result: np.ndarray, original: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the result's colours histogram-matched in LAB to the original's, with the
    result's luminosity (A1111's apply_color_correction with the correction set up from `original`)."""
    matched = lab8_to_rgb(match_histograms(rgb_to_lab8(result), rgb_to_lab8(original)))
    blended = luminosity_blend(matched / 255.0, result / 255.0)
    return np.clip(np.around(blended * 255), 0, 255).astype(np.uint8)
