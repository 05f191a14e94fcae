"""Pixel metrics between a golden image and a new render: max and mean abs diff (and where), PSNR, SSIM.

Everything works on 8-bit RGB arrays (H, W, 3) with numpy; no torch.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from sdbake.schemas.errors import InputFileError

# SSIM as Wang et al. 2004 ("Image quality assessment: from error visibility to structural
# similarity") define it and their reference ssim_index.m computes it: an 11x11 gaussian window with
# sigma 1.5, K1 = 0.01, K2 = 0.03, dynamic range L = 255, the map over the 'valid' region, averaged.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PIXEL_RANGE = 255.0


def load_pixels(data: bytes, label: str) -> np.ndarray:
    """The RGB pixels of an encoded image; an unreadable file is the user's InputFileError."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputFileError(f"not a readable image ({err})", file=label) from None


def psnr(golden: np.ndarray, new: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all channels; inf for equal pixels."""
    mse = float(np.mean((golden.astype(np.float64) - new.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(PIXEL_RANGE ** 2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D normalized gaussian; the 2-D window is its outer product (it is separable)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    weights = np.exp(-(offsets ** 2) / (2.0 * sigma ** 2))
    return weights / weights.sum()


def _filter_valid(channel: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """2-D 'valid' filtering of one channel with the separable window `weights` (rows, then columns)."""
    size = len(weights)
    rows = np.lib.stride_tricks.sliding_window_view(channel, size, axis=0) @ weights
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=1) @ weights


def ssim_channel(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    c1, c2 = (SSIM_K1 * PIXEL_RANGE) ** 2, (SSIM_K2 * PIXEL_RANGE) ** 2
    mu_x, mu_y = _filter_valid(x, weights), _filter_valid(y, weights)
    var_x = _filter_valid(x * x, weights) - mu_x ** 2
    var_y = _filter_valid(y * y, weights) - mu_y ** 2
    cov = _filter_valid(x * y, weights) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def ssim(golden: np.ndarray, new: np.ndarray) -> float:
    """Mean SSIM over the RGB channels (each channel as a grey image)."""
    # An image smaller than the window gets the largest odd window that fits (same sigma).
    size = min(SSIM_WINDOW, *golden.shape[:2])
    size -= 1 - size % 2
    weights = gaussian_window(size)
    x, y = golden.astype(np.float64), new.astype(np.float64)
    return float(np.mean([ssim_channel(x[..., c], y[..., c], weights) for c in range(x.shape[2])]))


@dataclass
class Metrics:
    max_abs_diff: int            # largest per-channel difference, 0-255
    location: tuple[int, int]    # (x, y) of that pixel (the first one, in reading order)
    psnr: float
    ssim: float
    differing_pixels: int
    mean_abs_diff: float = 0.0   # per-channel difference averaged over every pixel and channel, 0-255

    def summary(self) -> str:
        psnr_text = "inf" if math.isinf(self.psnr) else f"{self.psnr:.2f}"
        return (f"max abs diff {self.max_abs_diff} at (x={self.location[0]}, y={self.location[1]}), "
                f"{self.differing_pixels} pixels differ, mean abs diff {self.mean_abs_diff:.4f}, "
                f"PSNR {psnr_text} dB, SSIM {self.ssim:.6f}")


def size_text(pixels: np.ndarray) -> str:
    return f"{pixels.shape[1]}x{pixels.shape[0]}"


def compare(golden: np.ndarray, new: np.ndarray) -> Metrics:
    """Metrics of two images of one size (the caller reports a size mismatch before this)."""
    if golden.shape != new.shape:
        raise ValueError(f"compare() needs equal sizes, got {size_text(golden)} and {size_text(new)}")
    differences = np.abs(golden.astype(np.int16) - new.astype(np.int16))
    per_pixel = differences.max(axis=2)
    y, x = np.unravel_index(int(np.argmax(per_pixel)), per_pixel.shape)
    return Metrics(max_abs_diff=int(per_pixel[y, x]), location=(int(x), int(y)), psnr=psnr(golden, new),
                   ssim=ssim(golden, new), differing_pixels=int(np.count_nonzero(per_pixel)),
                   mean_abs_diff=float(differences.mean()))


TOLERANCE_FIELDS = ("max_abs_diff", "mean_abs_diff", "min_psnr", "min_ssim")


@dataclass(frozen=True)
class Tolerances:
    """How far a render may drift from its golden when the two were not made on one numerics fingerprint.
    A field left None falls back to DEFAULT_TOLERANCES; every criterion must hold."""
    max_abs_diff: int | None = None        # largest per-channel difference, 0-255
    mean_abs_diff: float | None = None     # mean per-channel difference, 0-255
    min_psnr: float | None = None          # dB
    min_ssim: float | None = None          # 0-1

    @classmethod
    def from_recipe(cls, check) -> Tolerances:
        """The tolerances a recipe's [check] table states (the others stay None)."""
        return cls(**{name: getattr(check, name) for name in TOLERANCE_FIELDS})

    def stated(self) -> bool:
        return any(getattr(self, name) is not None for name in TOLERANCE_FIELDS)

    def overridden(self, other: Tolerances) -> Tolerances:
        """`other`'s stated fields win (command-line flags over the recipe), field by field."""
        return Tolerances(*(getattr(self, n) if getattr(other, n) is None else getattr(other, n)
                            for n in TOLERANCE_FIELDS))

    def effective(self) -> Tolerances:
        return DEFAULT_TOLERANCES.overridden(self)

    def describe(self) -> str:
        tolerances = self.effective()
        return (f"max abs diff <= {tolerances.max_abs_diff}, mean abs diff <= {tolerances.mean_abs_diff}, "
                f"PSNR >= {tolerances.min_psnr} dB, SSIM >= {tolerances.min_ssim}")


# The defaults, measured on the repo's goldens (docs/reproducibility.md has the figures): renders of
# the example recipes with AVX-512, AVX2 and no-SIMD kernels differ from each other by at most
# max abs diff 1, mean abs diff 0.0008, PSNR >= 79.4 dB, SSIM >= 0.99999; inverting a third of a
# golden gives at least max abs diff 117, mean 1.47, PSNR <= 33.6 dB, SSIM <= 0.985, and each
# criterion alone fails it.
DEFAULT_TOLERANCES = Tolerances(max_abs_diff=8, mean_abs_diff=0.5, min_psnr=45.0, min_ssim=0.995)


def judge(metrics: Metrics, tolerances: Tolerances, exact: bool = False) -> list[str]:
    """The criteria the metrics miss (empty: pass). Exact: the pixels must be equal."""
    if exact:
        if metrics.max_abs_diff == 0:
            return []
        where = f"(x={metrics.location[0]}, y={metrics.location[1]})"
        message = (f"pixels differ (max abs diff {metrics.max_abs_diff} at pixel {where}, "
                   f"{metrics.differing_pixels} pixels) and the comparison is exact")
        return [message]
    tolerances = tolerances.effective()
    missed = []
    if metrics.max_abs_diff > tolerances.max_abs_diff:
        missed.append(f"max abs diff {metrics.max_abs_diff} > {tolerances.max_abs_diff} at pixel "
                      f"(x={metrics.location[0]}, y={metrics.location[1]})")
    if metrics.mean_abs_diff > tolerances.mean_abs_diff:
        missed.append(f"mean abs diff {metrics.mean_abs_diff:.4f} > {tolerances.mean_abs_diff}")
    if metrics.psnr < tolerances.min_psnr:
        missed.append(f"PSNR {metrics.psnr:.2f} dB < {tolerances.min_psnr}")
    if metrics.ssim < tolerances.min_ssim:
        missed.append(f"SSIM {metrics.ssim:.6f} < {tolerances.min_ssim}")
    return missed


# -- the difference picture -------------------------------------------------------------------------

HEAT_STOPS = np.array([[0, 0, 0], [128, 0, 160], [230, 30, 30], [255, 200, 0], [255, 255, 255]], dtype=np.float64)


def heatmap(golden: np.ndarray, new: np.ndarray, location: tuple[int, int] | None = None) -> np.ndarray:
    """Per-pixel difference, amplified so the largest difference is full brightness, in a heat palette
    (black = equal); the largest difference is ringed in cyan so a one-pixel change is visible."""
    per_pixel = np.abs(golden.astype(np.int16) - new.astype(np.int16)).max(axis=2).astype(np.float64)
    peak = per_pixel.max()
    level = per_pixel / peak if peak > 0 else per_pixel
    position = level * (len(HEAT_STOPS) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(HEAT_STOPS) - 2)
    blend = (position - low)[..., None]
    picture = HEAT_STOPS[low] * (1 - blend) + HEAT_STOPS[low + 1] * blend
    picture = picture.round().astype(np.uint8)
    if location is not None and peak > 0:
        _ring(picture, location, radius=max(2, min(picture.shape[:2]) // 32))
    return picture


def _ring(picture: np.ndarray, location: tuple[int, int], radius: int) -> None:
    x, y = location
    height, width = picture.shape[:2]
    left, right, top, bottom = x - radius - 1, x + radius + 1, y - radius - 1, y + radius + 1
    for column in range(max(left, 0), min(right, width - 1) + 1):
        for row in (top, bottom):
            if 0 <= row < height:
                picture[row, column] = (0, 255, 255)
    for row in range(max(top, 0), min(bottom, height - 1) + 1):
        for column in (left, right):
            if 0 <= column < width:
                picture[row, column] = (0, 255, 255)


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()
