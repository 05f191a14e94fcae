"""A1111's inpaint colour correction: match the LAB histogram of the original, keep the result's luminosity."""
from __future__ import annotations

import numpy as np

_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) floats in [0, 1] (sRGB) -> CIE LAB."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _RGB_TO_XYZ.T / _D65
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f ** 3 > 216 / 24389, f ** 3, (116 * f - 16) / (24389 / 27)) * _D65
    linear = xyz @ _XYZ_TO_RGB.T
    rgb = np.where(linear > 0.0031308, 1.055 * np.clip(linear, 0, None) ** (1 / 2.4) - 0.055, 12.92 * linear)
    return np.clip(rgb, 0.0, 1.0)


def match_histogram(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-channel histogram matching by quantiles (the method of skimage.exposure.match_histograms)."""
    matched = np.empty_like(source)
    for c in range(source.shape[-1]):
        src = source[..., c].ravel()
        ref = reference[..., c].ravel()
        _src_values, src_index, src_counts = np.unique(src, return_inverse=True, return_counts=True)
        ref_values, ref_counts = np.unique(ref, return_counts=True)
        src_quantiles = np.cumsum(src_counts) / src.size
        ref_quantiles = np.cumsum(ref_counts) / ref.size
        matched[..., c] = np.interp(src_quantiles, ref_quantiles, ref_values)[src_index].reshape(source.shape[:-1])
    return matched


def color_correct(result: np.ndarray, original: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1]: the result's colours matched to the original's, with the result's lightness."""
    result_lab = rgb_to_lab(result)
    corrected = match_histogram(result_lab, rgb_to_lab(original))
    corrected[..., 0] = result_lab[..., 0]        # luminosity blend: keep the output's L
    return lab_to_rgb(corrected)
