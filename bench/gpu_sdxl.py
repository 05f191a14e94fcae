"""The SDXL rows of bench/gpu.py: base -> refiner at SDXL's native size, diffusers next to sdbake.

diffusers: StableDiffusionXLPipeline with denoising_end, then StableDiffusionXLImg2ImgPipeline (the
refiner) with denoising_start on its latents, writing PNG files. sdbake: the same two models as one
recipe, sample steps 0..k on the base and k..n on the refiner. Full size: the SDXL base and refiner
architectures from runner/configs (random fp16 weights on the GPU, nothing downloaded); --tiny: the
tiny test models on the CPU. Both sides run the very same modules (the registry is handed diffusers'
components), so the ratio is the runner's overhead.
"""
from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, lowres"
SWITCH = 0.8                      # the refiner takes the last fifth, as A1111's default and diffusers' example


def _components(family: str, settings):
    from sdbake.runner.models import components
    configs = ROOT / "runner" / "configs" / family
    torch.manual_seed(0)
    parts = {}
    with torch.device(settings.device):          # initialise on the GPU: seconds, not minutes
        parts["unet"] = components.unet_from_config(components.read_json(configs / "unet" / "config.json"))
        parts["vae"] = components.vae_from_config(components.read_json(configs / "vae" / "config.json"))
        for name in ("text_encoder", "text_encoder_2"):
            if (configs / name).is_dir():
                parts[name] = components.text_encoder_from_config(
                    components.read_json(configs / name / "config.json"))
    for name in ("tokenizer", "tokenizer_2"):
        if (configs / name).is_dir():
            parts[name] = components.load_tokenizer(configs / name, 77)
    from diffusers import EulerDiscreteScheduler
    parts["scheduler"] = EulerDiscreteScheduler.from_config(
        components.read_json(configs / "scheduler" / "scheduler_config.json"))
    return parts


def build_sdxl(settings, refiner: bool = False):
    """The SDXL base (or refiner) as a diffusers pipeline on the bench's device and dtype."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    if settings.tiny:
        import tiny_models
        pipe = tiny_models.build_tiny_sdxl_refiner(1) if refiner else tiny_models.build_tiny_sdxl_pipeline(0)
    elif refiner:
        pipe = StableDiffusionXLImg2ImgPipeline(**_components("sdxl_refiner", settings), text_encoder=None,
                                                tokenizer=None, requires_aesthetics_score=True,
                                                force_zeros_for_empty_prompt=False)
    else:
        pipe = StableDiffusionXLPipeline(**_components("sdxl", settings))
    pipe.to(settings.device, settings.dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def share_with_sdbake(pipe, folder: Path, settings) -> None:
    """Save the pipeline as the recipe's checkpoint folder, then make sdbake's registry hold diffusers'
    very modules (as bench/gpu.py does for SD1.5)."""
    from sdbake.runner.models.registry import ModelSpec, default_registry
    pipe.save_pretrained(str(folder))
    loaded = default_registry().get(ModelSpec(checkpoint=folder, device=settings.device, dtype=settings.dtype))
    loaded.unet, loaded.vae, loaded.text_encoder_2 = pipe.unet, pipe.vae, pipe.text_encoder_2
    if pipe.text_encoder is not None:
        loaded.text_encoder = pipe.text_encoder
    if settings.device.startswith("cuda"):
        torch.cuda.empty_cache()


def switch_step(settings) -> int:
    return int(SWITCH * settings.steps)


def recipe_text(base: Path, refiner: Path, settings) -> str:
    """Base to the switch step, refiner to the end, on one schedule (as diffusers' denoising_end/start)."""
    import tomli_w
    recipe = {
        "version": 1, "name": "gpu-bench-sdxl",
        "models": {"base": {"checkpoint": str(base)}, "refiner": {"checkpoint": str(refiner)}},
        "defaults": {"model": "base", "seed": 1, "width": settings.sdxl_size, "height": settings.sdxl_size,
                     "steps": settings.steps, "sampler": "euler", "scheduler": "normal", "cfg": settings.cfg},
        "stages": [{"type": "encode", "prompt": PROMPT, "negative": NEGATIVE},
                   {"type": "sample", "end": switch_step(settings)},
                   {"type": "sample", "model": "refiner"},
                   {"type": "save", "path": "sdxl.png"}],
    }
    return tomli_w.dumps(recipe)


def diffusers_call(base, refiner, settings, png_dir: Path):
    fraction = switch_step(settings) / settings.steps

    def call():
        latents = base(prompt=PROMPT, negative_prompt=NEGATIVE, height=settings.sdxl_size, width=settings.sdxl_size,
                       num_inference_steps=settings.steps, guidance_scale=settings.cfg, denoising_end=fraction,
                       generator=torch.Generator(settings.device).manual_seed(1), output_type="latent").images
        image = refiner(prompt=PROMPT, negative_prompt=NEGATIVE, image=latents, num_inference_steps=settings.steps,
                        guidance_scale=settings.cfg, denoising_start=fraction, output_type="pil").images[0]
        image.save(png_dir / "sdxl.png")
        return image
    return call


def sdxl_rows(settings, meter, work: Path, sdbake_call, stage_split, row_type) -> list:
    """diffusers base -> refiner + PNG, and sdbake's recipe of the same, at the SDXL size."""
    base, refiner = build_sdxl(settings), build_sdxl(settings, refiner=True)
    share_with_sdbake(base, work / "sdxl-base", settings)
    share_with_sdbake(refiner, work / "sdxl-refiner", settings)
    png_dir = work / "diffusers-sdxl"
    png_dir.mkdir()
    common = {"batch": 1, "size": settings.sdxl_size, "steps": settings.steps}
    split = f"base {switch_step(settings)} + refiner {settings.steps - switch_step(settings)} steps"
    _, theirs_s, theirs_peak = meter.measure(diffusers_call(base, refiner, settings, png_dir))
    recipe = work / "sdbake-sdxl.toml"
    recipe.write_text(recipe_text(work / "sdxl-base", work / "sdxl-refiner", settings), encoding="utf-8")
    results = []
    _, ours_s, ours_peak = meter.measure(sdbake_call(recipe, work / "out-sdxl", settings, results))
    return [row_type("diffusers SDXL base -> refiner + PNG", seconds=theirs_s, ratio=1.0, peak_gb=theirs_peak,
                     note=split, **common),
            row_type("sdbake SDXL base -> refiner", seconds=ours_s, ratio=ours_s / theirs_s, peak_gb=ours_peak,
                     note=stage_split(results), **common)]
