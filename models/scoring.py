"""Measure what a demo-model picture shows: where the shape is and which named colour it has.

The demo pictures have plain or top-to-bottom gradient backgrounds, so each row's background
colour can be read at its two ends; the shape is what differs from both.
"""

import numpy as np
from dataset import COLOURS
from PIL import Image

SHAPE_DISTANCE = 60.0  # RGB distance from the row's background that marks a shape pixel
MIN_SHAPE_PIXELS = 12  # at 64x64; scaled with the picture's area


def shape_mask(image: Image.Image) -> np.ndarray:
    """Boolean (H, W): pixels that differ from their row's colour at both the left and right edge."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    left = pixels[:, :2].mean(axis=1, keepdims=True)
    right = pixels[:, -2:].mean(axis=1, keepdims=True)
    far_from_left = np.linalg.norm(pixels - left, axis=2) > SHAPE_DISTANCE
    far_from_right = np.linalg.norm(pixels - right, axis=2) > SHAPE_DISTANCE
    return far_from_left & far_from_right


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    distances = [np.linalg.norm(rgb - np.array(COLOURS[name], dtype=np.float32)) for name in names]
    return names[int(np.argmin(distances))]


def shape_colour(image: Image.Image) -> str | None:
    """The named colour of the shape region (median of its pixels), or None when no shape is found."""
    mask = shape_mask(image)
    if mask.sum() < MIN_SHAPE_PIXELS * (mask.size / 4096):
        return None
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)[mask]
    return nearest_colour(np.median(pixels, axis=0))
