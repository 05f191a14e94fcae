"""Render a grid of prompts x seeds from a demo-model folder (for the model card and for looking).

    .venv/bin/python models/sample_grid.py models/demo models/samples.png [--size 64] [--cfg 9]
"""

import argparse
from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from PIL import Image

PROMPTS = [
    "a red circle",
    "a blue square",
    "a green triangle",
    "a yellow star",
    "a small purple circle on the left, white background",
    "a large orange square at the bottom, black background",
    "a white triangle at the top, blue to black gradient background",
    "a black star on the right, yellow background",
]


def grid(folder: Path, prompts, seeds: int, size: int, cfg: float, steps: int) -> Image.Image:
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, local_files_only=True,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    sheet = Image.new("RGB", (seeds * size, len(prompts) * size))
    for row, prompt in enumerate(prompts):
        generators = [torch.Generator().manual_seed(seed) for seed in range(seeds)]
        images = pipe(prompt=[prompt] * seeds, generator=generators, num_inference_steps=steps,
                      guidance_scale=cfg, height=size, width=size).images
        for column, image in enumerate(images):
            sheet.paste(image, (column * size, row * size))
    return sheet


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cfg", type=float, default=9.0)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid(args.folder, PROMPTS, args.seeds, args.size, args.cfg, args.steps).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
