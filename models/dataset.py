"""Procedural captioned pictures of coloured shapes: the demo model's whole training set.

Every picture is one shape (circle, square, triangle or star) of a named colour, small or large,
at a named position, on a plain or a top-to-bottom gradient background of named colours. Each
picture comes with a caption such as "a small red circle on the left, blue background"; parts of
the caption are left out at random so that short prompts ("a red circle", "blue") mean something.
"""

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 130, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUND_COLOURS = {**COLOURS, "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": (0.24, 0.32), "large": (0.46, 0.58)}  # shape extent as a fraction of the side
POSITIONS = {
    "left": ((0.27, 0.5), "on the left"),
    "right": ((0.73, 0.5), "on the right"),
    "center": ((0.5, 0.5), "in the center"),
    "top": ((0.5, 0.27), "at the top"),
    "bottom": ((0.5, 0.73), "at the bottom"),
}
MIN_CONTRAST = 150.0  # RGB distance below which a shape would melt into its background
SUPERSAMPLE = 4  # draw large then downsample, for antialiased edges


@dataclass(frozen=True)
class Scene:
    """What one picture shows; the caption is derived from it."""

    shape: str
    colour: str
    size: str
    position: str
    background: tuple[str, ...]  # one name = plain, two names = gradient from top to bottom
    centre: tuple[float, float]  # fractions of the side, after jitter
    extent: float  # fraction of the side
    angle: float  # degrees; a small tilt so the model does not learn one pixel pattern


def colour_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return math.dist(a, b)


def random_scene(rng: random.Random) -> Scene:
    shape = rng.choice(SHAPES)
    colour = rng.choice(list(COLOURS))
    fitting = [name for name, rgb in BACKGROUND_COLOURS.items()
               if colour_distance(rgb, COLOURS[colour]) >= MIN_CONTRAST]
    background = (rng.choice(fitting),)
    if rng.random() < 0.25:
        second = [name for name in fitting if name != background[0]]
        background = (background[0], rng.choice(second))
    size = rng.choice(list(SIZES))
    position = rng.choice(list(POSITIONS))
    (cx, cy), _ = POSITIONS[position]
    extent = rng.uniform(*SIZES[size])
    # Large shapes cannot sit near an edge; keep them inside with a small margin.
    half = extent / 2 + 0.04
    cx = min(max(cx + rng.uniform(-0.05, 0.05), half), 1 - half)
    cy = min(max(cy + rng.uniform(-0.05, 0.05), half), 1 - half)
    return Scene(shape, colour, size, position, background, (cx, cy), extent, rng.uniform(-12, 12))


def shape_polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list:
    """Vertices of a square, triangle or star around (cx, cy), in pixels."""
    if shape == "square":
        corners = [(45 + 90 * k, radius * math.sqrt(2) * 0.72) for k in range(4)]
    elif shape == "triangle":
        # Centred on its bounding box rather than its centroid, so it fills the named position.
        corners = [(-90 + 120 * k, radius) for k in range(3)]
        cy += radius * 0.25
    elif shape == "star":
        corners = [(-90 + 36 * k, radius if k % 2 == 0 else radius * 0.45) for k in range(10)]
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    return [(cx + r * math.cos(math.radians(a + angle)), cy + r * math.sin(math.radians(a + angle)))
            for a, r in corners]


def background_array(names: tuple[str, ...], size: int) -> np.ndarray:
    top = np.array(BACKGROUND_COLOURS[names[0]], dtype=np.float32)
    bottom = np.array(BACKGROUND_COLOURS[names[-1]], dtype=np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    rows = top * (1 - t) + bottom * t
    return np.broadcast_to(rows, (size, size, 3)).round().astype(np.uint8)


def render_scene(scene: Scene, size: int = 64) -> Image.Image:
    big = size * SUPERSAMPLE
    image = Image.fromarray(background_array(scene.background, big).copy())
    draw = ImageDraw.Draw(image)
    cx, cy = scene.centre[0] * big, scene.centre[1] * big
    radius = scene.extent * big / 2
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        draw.polygon(shape_polygon(scene.shape, cx, cy, radius, scene.angle), fill=fill)
    return image.resize((size, size), Image.Resampling.BOX)


def full_caption(scene: Scene) -> str:
    return caption(scene, random.Random(0), keep_all=True)


def caption(scene: Scene, rng: random.Random, keep_all: bool = False) -> str:
    """A caption naming some or all of the scene's attributes (always true to the picture)."""
    keep = (lambda p: True) if keep_all else (lambda p: rng.random() < p)
    if not keep_all and rng.random() < 0.04:
        return scene.colour  # a bare colour word names the shape's colour (inpaint prompts)
    words = []
    if keep(0.5):
        words.append(scene.size)
    if keep(0.85):
        words.append(scene.colour)
    words.append(scene.shape if keep(0.9) else "shape")
    text = ("a " if keep(0.85) else "") + " ".join(words)
    if keep(0.5):
        text += " " + POSITIONS[scene.position][1]
    if keep(0.5):
        if len(scene.background) == 1:
            text += f", {scene.background[0]} background"
        else:
            text += f", {scene.background[0]} to {scene.background[1]} gradient background"
    return text


def make_dataset(count: int, seed: int, size: int = 64) -> tuple[np.ndarray, list[Scene]]:
    """`count` pictures as uint8 (N, size, size, 3) and their scenes, reproducible from `seed`."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    pictures = np.stack([np.asarray(render_scene(scene, size)) for scene in scenes])
    return pictures, scenes
