"""The shipped demo model (models/demo/) follows prompts: these fail on random weights.

They test the weights, through a plain diffusers pipeline (bench/eval_demo_model.py), not sdbake's
code: marked slow, so `make test-fast` leaves them out and `make test` (CI) runs them.
"""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

pytest.importorskip("torch")
eval_demo_model = pytest.importorskip("eval_demo_model")
pytestmark = pytest.mark.slow

SEEDS = list(range(8))
STEPS = 12  # enough for the demo model's flat shapes; keeps each test to a few seconds


def colours_of(images) -> list:
    return [eval_demo_model.shape_colour(image) for image in images]


def test_red_circle_is_red_in_most_seeds():
    images = eval_demo_model.render_batch("a red circle", SEEDS, steps=STEPS)
    assert colours_of(images).count("red") >= 6


def test_blue_square_is_blue_in_most_seeds():
    images = eval_demo_model.render_batch("a blue square", SEEDS, steps=STEPS)
    assert colours_of(images).count("blue") >= 6


def test_blue_square_is_a_square_in_most_seeds():
    images = eval_demo_model.render_batch("a blue square", SEEDS, steps=STEPS)
    shapes = eval_demo_model.classify_shapes(eval_demo_model.load_classifier(), images)
    assert shapes.count("square") >= 5


def test_colour_word_changes_the_picture_not_just_the_noise():
    red = eval_demo_model.render("a red circle", seed=3, steps=STEPS)
    green = eval_demo_model.render("a green circle", seed=3, steps=STEPS)
    assert (eval_demo_model.shape_colour(red), eval_demo_model.shape_colour(green)) == ("red", "green")


def test_model_draws_at_twice_its_base_resolution():
    # The hires pass runs the model at 128x128; it was partly trained there.
    images = eval_demo_model.render_batch("a yellow triangle", SEEDS[:4], steps=STEPS, size=128)
    assert colours_of(images).count("yellow") >= 3
