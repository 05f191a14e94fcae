"""Score the demo model: does it draw the named shape in the named colour?

    .venv/bin/python bench/eval_demo_model.py [--seeds 50] [--steps 20] [--cfg 9]

Renders every prompt "a <colour> <shape>" of the set for each seed, then checks each picture:
colour = the named colour nearest to the median of the shape region (pixels unlike their row's
background at both edges), shape = a tiny CNN trained on the same procedural pictures
(bench/demo_classifier/). Prints "colour accuracy: 0.93" and "shape accuracy: 0.81" (fractions).
"""

import argparse
import sys
import time
from functools import lru_cache
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "models" / "demo"
DEFAULT_CFG = 9.0


# --- rendering: the one place that knows how pictures are made (to become sdbake's runner) ---

@lru_cache(maxsize=1)
def demo_pipeline(model_dir: Path = MODEL_DIR):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render_batch(prompt: str, seeds: list[int], steps: int = 20, cfg: float = DEFAULT_CFG, size: int = 64,
                 model_dir: Path = MODEL_DIR):
    """One picture per seed; each equals what render(prompt, seed) gives alone."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return demo_pipeline(model_dir)(prompt=[prompt] * len(seeds), generator=generators, num_inference_steps=steps,
                           guidance_scale=cfg, height=size, width=size).images


def render(prompt: str, seed: int, steps: int = 20, cfg: float = DEFAULT_CFG, size: int = 64):
    """The picture the demo model makes for `prompt` from `seed` (PIL.Image)."""
    return render_batch(prompt, [seed], steps=steps, cfg=cfg, size=size)[0]


# --- scoring ---

sys.path.insert(0, str(REPO / "models"))
sys.path.insert(0, str(REPO / "bench" / "demo_classifier"))
from classifier import SHAPES, classify_shapes, load_classifier
from dataset import COLOURS
from scoring import shape_colour


def prompt_set(every_pair: bool) -> list[tuple[str, str]]:
    """(colour, shape) pairs: all 32, or 16 where each shape meets four colours and each colour two shapes."""
    colours = list(COLOURS)
    if every_pair:
        return [(c, s) for s in SHAPES for c in colours]
    return [(colours[(2 * k + j) % len(colours)], shape) for k, shape in enumerate(SHAPES) for j in range(4)]


def evaluate(seeds: int, steps: int, cfg: float, every_pair: bool, size: int = 64, model_dir: Path = MODEL_DIR,
             batch: int = 25):
    classifier = load_classifier()
    colour_hits = shape_hits = total = 0
    per_prompt = []
    for colour, shape in prompt_set(every_pair):
        prompt = f"a {colour} {shape}"
        images = []
        for start in range(0, seeds, batch):
            images += render_batch(prompt, list(range(start, min(seeds, start + batch))), steps, cfg, size,
                                   model_dir)
        colour_ok = sum(shape_colour(image) == colour for image in images)
        shape_ok = sum(predicted == shape for predicted in classify_shapes(classifier, images))
        per_prompt.append((prompt, colour_ok / len(images), shape_ok / len(images)))
        colour_hits, shape_hits, total = colour_hits + colour_ok, shape_hits + shape_ok, total + len(images)
    return colour_hits / total, shape_hits / total, per_prompt


def main(argv=None):
    parser = argparse.ArgumentParser(description="Score the demo model's colour and shape accuracy.")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=DEFAULT_CFG)
    parser.add_argument("--size", type=int, default=64, help="128 checks the model at 2x")
    parser.add_argument("--model", type=Path, default=MODEL_DIR, help="a demo-model folder")
    parser.add_argument("--all-pairs", action="store_true", help="all 32 colour x shape prompts, not 16")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    colour, shape, per_prompt = evaluate(args.seeds, args.steps, args.cfg, args.all_pairs, args.size, args.model)
    for prompt, c, s in per_prompt:
        print(f"  {prompt:<20} colour {c:.2f}  shape {s:.2f}")
    print(f"{len(per_prompt)} prompts x {args.seeds} seeds, {args.steps} steps, cfg {args.cfg}, "
          f"{args.size}px, {time.time() - started:.0f} s")
    print(f"colour accuracy: {colour:.2f}")
    print(f"shape accuracy: {shape:.2f}")


if __name__ == "__main__":
    main()
