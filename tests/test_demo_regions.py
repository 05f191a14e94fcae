"""Regional prompts on the demo model (a smaller bench/regional.py): recipes/regional.toml puts a red
shape on the left half and a blue one on the right, with a rect and with a mask file, where the plain
prompt does not."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

pytest.importorskip("torch")
regional = pytest.importorskip("regional")

SEEDS = 3


@pytest.mark.slow       # about a minute: three renders of 3 images of 128x128 at 20 steps
def test_regions_put_red_left_and_blue_right_where_the_plain_prompt_does_not(tmp_path):
    forms = regional.variants()
    assert len(forms) == 3
    shipped, rects, plain = (regional.measure(text, SEEDS, 0, tmp_path / str(n))
                             for n, text in enumerate(forms.values()))
    assert shipped == rects == [("red", "blue")] * SEEDS        # a mask file and the same rect: one area
    assert all(halves != ("red", "blue") for halves in plain)
