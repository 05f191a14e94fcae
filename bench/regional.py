"""Regional prompts on the demo model: a red shape on the left half and a blue one on the right?

    .venv/bin/python bench/regional.py [--seeds 10] [--first-seed 0]

Renders recipes/regional.toml through sdbake for seeds first..first+N-1 (one batch) in three forms:
as shipped (left region a rect, right region a mask file), with both regions as rects, and without
regions, with the plain prompt "a red shape and a blue shape, white background".

The measure is a colour measure per half (the demo classifier in bench/demo_classifier names a
picture's shape, not colours or sides): shape pixels are those unlike their row's background at both
ends of the whole picture (models/scoring.py shape_mask); a half's colour is the named colour that
most of its shape pixels are nearest to (none under 6 pixels). A seed passes when the left half is
red and the right half blue. Prints one line per form. Measured (dated 2026-11-30, CPU):
seeds 0-9: regions 9/10 (rect + mask file and two rects alike), plain prompt 0/10;
seeds 10-19: regions 10/10, plain prompt 0/10.
"""

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "regional.toml"
PLAIN_PROMPT = "a red shape and a blue shape, white background"
MIN_PIXELS = 6

sys.path.insert(0, str(REPO / "models"))
from dataset import COLOURS
from scoring import shape_mask

NAMES = list(COLOURS)
TABLE = np.array([COLOURS[name] for name in NAMES], dtype=np.float32)


def half_colours(image: Image.Image) -> tuple[str | None, str | None]:
    """The named colour of the shape pixels in the left and in the right half (None: no shape there)."""
    shape = shape_mask(image)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    middle = pixels.shape[1] // 2
    found = []
    for columns in (slice(0, middle), slice(middle, None)):
        selected = pixels[:, columns][shape[:, columns]]
        if len(selected) < MIN_PIXELS:
            found.append(None)
            continue
        nearest = np.linalg.norm(selected[:, None] - TABLE[None], axis=2).argmin(axis=1)
        found.append(NAMES[Counter(nearest.tolist()).most_common(1)[0][0]])
    return found[0], found[1]


def variants() -> dict[str, str]:
    """The recipe's text in each form measured."""
    shipped = RECIPE.read_text()
    mask_line = 'mask = "masks/right-half.png"'
    assert mask_line in shipped, f"{RECIPE} no longer has its mask-file region"
    rects = shipped.replace(mask_line, "rect = [64, 0, 64, 128]")
    plain = re.sub(r"^regions = \[\n.*?^\]\n", f'prompt = "{PLAIN_PROMPT}"\n', shipped, flags=re.DOTALL | re.MULTILINE)
    assert "regions" not in plain.split("[[stages]]", 1)[1]
    return {"regions, rect + mask file": shipped, "regions, two rects": rects, f"plain prompt {PLAIN_PROMPT!r}": plain}


def measure(text: str, seeds: int, first: int, work: Path) -> list[tuple[str | None, str | None]]:
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_text
    loaded = load_text(text, "toml", label=str(RECIPE), folder=RECIPE.parent,
                       overrides=[f"defaults.seed={first}", f"defaults.batch_size={seeds}"])
    result = render(loaded, output_root=work, no_cache=True, threads=1)
    return [half_colours(Image.open(path)) for path in result.outputs]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Measure regional prompts on the demo model.")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        for n, (name, text) in enumerate(variants().items()):
            halves = measure(text, args.seeds, args.first_seed, Path(work) / str(n))
            passed = sum(h == ("red", "blue") for h in halves)
            print(f"{name}: {passed}/{len(halves)} seeds left red, right blue  "
                  f"({' '.join(f'{left}/{right}' for left, right in halves)})", flush=True)
    print(f"seeds {args.first_seed}..{args.first_seed + args.seeds - 1}, {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
