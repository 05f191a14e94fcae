"""GPU speed (issue 12): diffusers' pipeline vs sdbake txt2img, eager and compiled, on the same components.

Full-size SD1.5 (UNet, VAE, CLIP text encoder) and the SDXL UNet are built from the shipped configs
in runner/configs/ with random fp16 weights on the GPU: nothing is downloaded. In one process, with
the same components and settings, it measures diffusers' StableDiffusionPipeline (Euler, CFG 7),
sdbake's txt2img recipe, sdbake with [performance] compile + channels_last (compile time apart),
each at batch 1 and 4; an SDXL CFG step loop at 1024px; SDXL base -> refiner at 1024px, diffusers'
two pipelines (denoising_end / denoising_start) next to sdbake's two-stage recipe (bench/gpu_sdxl.py);
a 2x hires pass; a tiled 2048x2048 VAE decode; and the peak GPU memory of each. Achieved TFLOP/s counts the UNet's FLOPs only
(torch.utils.flop_counter on one CFG step). `--tiny` runs the same on the CPU with the tiny test
components (64px, few steps), so the script is developed and checked without a GPU.

Usage: python bench/gpu.py [--json table.json]        # CUDA, about 5 minutes on an H100
       python bench/gpu.py --tiny [--json table.json] # CPU, a few minutes
       python bench/gpu.py --cpu-mid                  # CPU, SD1.5 UNet at 256px: per-step overhead as a ratio
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, lowres"
AMORTISED_IMAGES = 100            # compile time is spread over this many images in the table
import torch
from timing import Meter, Row, print_table


@dataclass
class Settings:
    tiny: bool
    device: str
    dtype: torch.dtype
    size: int                     # SD1.5 image side
    steps: int
    cfg: float
    batches: tuple[int, ...]
    repeats: int
    hires_steps: int
    decode_size: int              # side of the tiled decode
    sdxl_size: int
    compile: bool
    sdxl: bool

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


# -- components -------------------------------------------------------------------------------------

TINY_SIZES = {"size": 64, "steps": 8, "hires_steps": 4, "decode_size": 256, "sdxl_size": 128}
CPU_MID_SIZES = {"size": 256, "steps": 4, "hires_steps": 0, "decode_size": 0, "sdxl_size": 0}
FULL_SIZES = {"size": 512, "steps": 20, "hires_steps": 10, "decode_size": 2048, "sdxl_size": 1024}


def settings_from(args) -> Settings:
    if args.cpu_mid:
        # Compute dominates (about a second per CFG step), so sdbake's per-step overhead shows as a ratio.
        return Settings(False, "cpu", torch.float32, cfg=7.0, batches=(1,), repeats=args.repeats or 3, compile=False,
                        sdxl=False, **CPU_MID_SIZES)
    if not args.tiny and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --tiny or --cpu-mid on a CPU machine")
    sizes = TINY_SIZES if args.tiny else FULL_SIZES
    return Settings(args.tiny, "cpu" if args.tiny else "cuda", torch.float32 if args.tiny else torch.float16,
                    cfg=7.0, batches=(1, 4), repeats=args.repeats or (5 if args.tiny else 3),
                    compile=not args.no_compile, sdxl=not args.no_sdxl, **sizes)


def build_sd1(settings: Settings):
    """SD1.5 as a diffusers pipeline: the tiny test model, or the full architecture with random weights."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    if settings.tiny:
        import tiny_models
        pipe = tiny_models.build_tiny_pipeline(0)
    else:
        from sdbake.runner.models import components
        configs = ROOT / "runner" / "configs" / "sd1"
        torch.manual_seed(0)
        with torch.device(settings.device):          # initialise on the GPU: seconds, not minutes
            unet = components.unet_from_config(components.read_json(configs / "unet" / "config.json"))
            vae = components.vae_from_config(components.read_json(configs / "vae" / "config.json"))
            text_encoder = components.text_encoder_from_config(
                components.read_json(configs / "text_encoder" / "config.json"))
        scheduler = EulerDiscreteScheduler.from_config(
            components.read_json(configs / "scheduler" / "scheduler_config.json"))
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, unet=unet, scheduler=scheduler,
                                       tokenizer=components.load_tokenizer(configs / "tokenizer", 77),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(settings.device, settings.dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def share_with_sdbake(pipe, folder: Path, settings: Settings) -> None:
    """Save the pipeline as a diffusers folder (the recipe's checkpoint), then make sdbake's registry
    hold the very modules diffusers uses, so both sides run the same weights in the same memory."""
    from sdbake.runner.models.registry import ModelSpec, default_registry
    pipe.save_pretrained(str(folder))
    loaded = default_registry().get(ModelSpec(checkpoint=folder, device=settings.device, dtype=settings.dtype))
    loaded.unet, loaded.vae, loaded.text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
    if settings.device.startswith("cuda"):
        torch.cuda.empty_cache()


# -- the measured calls -----------------------------------------------------------------------------

def recipe_text(model_dir: Path, settings: Settings, batch: int, *, compile: bool = False, hires: bool = False) -> str:
    from recipe_helpers import txt2img
    hires_stage = (f'[[stages]]\ntype = "hires"\nscale = 2.0\nsteps = {settings.hires_steps}\ndenoise = 0.5\n'
                   if hires else "")
    performance = "\n[performance]\ncompile = true\nchannels_last = true\n" if compile else ""
    return txt2img(model_dir, sampler="euler", scheduler="normal", steps=settings.steps, seed=1, size=settings.size,
                   cfg=settings.cfg, prompt=PROMPT, negative=NEGATIVE, path="{{ batch_index }}.png",
                   extra_stages=hires_stage, batch_size=batch, name="gpu-bench") + performance


def sdbake_call(recipe_path: Path, out_root: Path, settings: Settings, results: list | None = None,
                cold_caches: Path | None = None):
    """One render of the recipe, uncached, or with cold_caches in a new cache folder under it per call (every
    stage misses and is stored); its RunResult is appended to `results` when given."""
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    threads = 1 if settings.device == "cpu" else None
    calls = iter(range(1_000_000))

    def call():
        # A new output folder per call: every call writes (and fsyncs) its files, as diffusers' baseline
        # writes its PNGs each time; into the same folder, sdbake would find identical files and skip them.
        n = next(calls)
        cache_dir = cold_caches / str(n) if cold_caches is not None else None
        result = render(load_recipe(recipe_path), output_root=out_root / str(n),
                        no_cache=cache_dir is None, cache_dir=cache_dir, device=settings.device,
                        dtype=settings.dtype_name, threads=threads, quiet=True)
        if results is not None:
            results.append(result)
        return result
    return call


def stage_split(results: list) -> str:
    """Where the last render spent its time, stage by stage."""
    return " + ".join(f"{r.id} {r.seconds:.3f}" for r in results[-1].reports) + " s"


def host_sync_sites(call) -> list[str]:
    """Our source lines that made the GPU wait for the host during one call (torch's sync debug mode).

    The sample stage should show none inside its step loop; moving the final latent to the CPU and the
    save stage's image transfer are expected.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = {f"{Path(w.filename).relative_to(ROOT)}:{w.lineno}" for w in caught
             if "synchroniz" in str(w.message) and Path(w.filename).is_relative_to(ROOT)}
    return sorted(sites)


def diffusers_call(pipe, settings: Settings, batch: int, png_dir: Path | None):
    def call():
        images = pipe(prompt=[PROMPT] * batch, negative_prompt=[NEGATIVE] * batch, height=settings.size,
                      width=settings.size, num_inference_steps=settings.steps, guidance_scale=settings.cfg,
                      generator=torch.Generator(settings.device).manual_seed(1), output_type="pil").images
        if png_dir is not None:        # sdbake writes PNG files: so does this baseline
            for index, image in enumerate(images):
                image.save(png_dir / f"{index}.png")
        return images
    return call


def unet_cfg_flops(unet, latent: torch.Tensor, context: torch.Tensor, **added) -> int:
    """FLOPs of one CFG step: one UNet call on the uncond+cond batch."""
    from torch.utils.flop_counter import FlopCounterMode
    timestep = torch.tensor(500.0, device=latent.device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        unet(latent, timestep, encoder_hidden_states=context, return_dict=False, **added)
    return counter.get_total_flops()


def sd1_flops(pipe, settings: Settings, batch: int, size: int) -> int:
    side = size // pipe.vae_scale_factor
    latent = torch.randn(2 * batch, 4, side, side, device=settings.device, dtype=settings.dtype)
    context = torch.randn(2 * batch, 77, pipe.unet.config.cross_attention_dim, device=settings.device,
                          dtype=settings.dtype)
    return unet_cfg_flops(pipe.unet, latent, context)


def finite_fp16_decode(pipe, settings: Settings) -> bool:
    """Whether the VAE decodes a sampled latent without NaN in the model dtype (else sdbake's guard
    redoes the decode in float32, as A1111 does, and pays for it in these timings)."""
    latents = pipe(prompt=PROMPT, height=settings.size, width=settings.size, num_inference_steps=2,
                   output_type="latent").images
    with torch.inference_mode():
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return bool(torch.isfinite(image).all())


def sd1_rows(pipe, model_dir: Path, work: Path, settings: Settings, meter: Meter) -> tuple[list[Row], list[str]]:
    rows, notes = [], []
    for batch in settings.batches:
        flops = settings.steps * sd1_flops(pipe, settings, batch, settings.size)
        common = {"batch": batch, "size": settings.size, "steps": settings.steps}
        png_dir = work / f"diffusers-{batch}"
        png_dir.mkdir()
        recipe = work / f"sdbake-{batch}.toml"
        recipe.write_text(recipe_text(model_dir, settings, batch), encoding="utf-8")
        results = []
        call = sdbake_call(recipe, work / f"out-{batch}", settings, results)
        timed = meter.side_by_side({"diffusers pipeline": diffusers_call(pipe, settings, batch, None),
                                    "diffusers pipeline + PNG": diffusers_call(pipe, settings, batch, png_dir),
                                    "sdbake txt2img": call, "sdbake txt2img, cache on": sdbake_call(
                                        recipe, work / f"out-cached-{batch}", settings, cold_caches=work / f"cache-{batch}")})
        base_s, base_cpu = timed["diffusers pipeline + PNG"][1], timed["diffusers pipeline + PNG"][3]
        for name, (_, seconds, peak, cpu_s) in timed.items():
            note = stage_split(results) + "; " if name == "sdbake txt2img" else \
                "every stage a miss, stored in a new cache; " if name.endswith("cache on") else ""
            rows.append(Row(name, seconds=seconds, ratio=seconds / base_s, tflops=flops / seconds / 1e12,
                            peak_gb=peak, note=f"{note}CPU time ratio {cpu_s / base_cpu:.3f}", **common))
        if meter.cuda and batch == settings.batches[0]:
            sites = host_sync_sites(call)
            notes.append(f"host syncs in sdbake code during one render: {', '.join(sites[:12]) or 'none'}")
        if settings.compile:
            recipe = work / f"sdbake-compile-{batch}.toml"
            recipe.write_text(recipe_text(model_dir, settings, batch, compile=True), encoding="utf-8")
            results = []
            first_s, fast_s, fast_peak = meter.measure(sdbake_call(recipe, work / f"out-c-{batch}", settings, results))
            compile_s = first_s - fast_s
            amortised = (compile_s + AMORTISED_IMAGES * fast_s / batch) / AMORTISED_IMAGES
            saved = base_s / batch - fast_s / batch
            break_even = f", pays off after {compile_s / saved:.0f} images" if saved > 0 else ", never pays off"
            rows.append(Row("sdbake --compile", seconds=fast_s, ratio=fast_s / base_s, tflops=flops / fast_s / 1e12,
                            peak_gb=fast_peak, note=f"compile {compile_s:.1f} s; {amortised:.3f} s/image over "
                                                    f"{AMORTISED_IMAGES} images{break_even}; {stage_split(results)}",
                            **common))
    return rows, notes


def hires_row(pipe, model_dir: Path, work: Path, settings: Settings, meter: Meter) -> Row:
    recipe = work / "sdbake-hires.toml"
    recipe.write_text(recipe_text(model_dir, settings, 1, hires=True), encoding="utf-8")
    _, seconds, peak = meter.measure(sdbake_call(recipe, work / "out-hires", settings))
    flops = settings.steps * sd1_flops(pipe, settings, 1, settings.size) + \
        settings.hires_steps * sd1_flops(pipe, settings, 1, 2 * settings.size)
    return Row(f"sdbake txt2img + hires 2x ({2 * settings.size}px)", 1, settings.size,
               settings.steps + settings.hires_steps, seconds, tflops=flops / seconds / 1e12, peak_gb=peak,
               note=f"{settings.steps} + {settings.hires_steps} steps")


def decode_row(pipe, settings: Settings, meter: Meter) -> Row:
    from sdbake.stages.vae import VaeOptions, vae_decode
    side = settings.decode_size // pipe.vae_scale_factor
    latent = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(3)).to(settings.device)
    retried = []
    _, seconds, peak = meter.measure(lambda: retried.append(vae_decode(pipe, latent, VaeOptions(tiled=True))[1]))
    note = "tiled; " + ("NaN in fp16: decoded again in float32" if any(retried) else "no float32 retry")
    if peak is not None:
        note += f"; {'fits' if peak <= 12 else 'does NOT fit'} in 12 GB"
    return Row(f"tiled VAE decode {settings.decode_size}px", 1, settings.decode_size, 0, seconds, peak_gb=peak,
               note=note)


def sdxl_row(settings: Settings, meter: Meter) -> Row:
    """The SDXL UNet at its native size: a bare Euler loop with CFG in one batch (no pipeline)."""
    from diffusers import EulerDiscreteScheduler
    from sdbake.runner.models import components
    configs = ROOT / "runner" / "configs" / "sdxl"
    torch.manual_seed(0)
    if settings.tiny:
        import tiny_models
        unet = tiny_models.build_tiny_sdxl_pipeline(0).unet
    else:
        with torch.device(settings.device):
            unet = components.unet_from_config(components.read_json(configs / "unet" / "config.json"))
    unet = unet.to(settings.device, settings.dtype).eval()
    scheduler = EulerDiscreteScheduler.from_config(components.read_json(configs / "scheduler" / "scheduler_config.json"))
    config = unet.config
    side = settings.sdxl_size // 8
    on = {"device": settings.device, "dtype": settings.dtype}
    latent = torch.randn(1, 4, side, side, **on)
    context = torch.randn(2, 77, config.cross_attention_dim, **on)
    pooled_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    added = {"text_embeds": torch.randn(2, pooled_dim, **on),
             "time_ids": torch.tensor([[settings.sdxl_size] * 2 + [0, 0] + [settings.sdxl_size] * 2] * 2, **on)}

    def loop():
        scheduler.set_timesteps(settings.steps, device=settings.device)
        x = latent * scheduler.init_noise_sigma
        with torch.inference_mode():
            for t in scheduler.timesteps:
                model_in = scheduler.scale_model_input(torch.cat([x, x]), t)
                eps = unet(model_in, t, encoder_hidden_states=context, added_cond_kwargs=added, return_dict=False)[0]
                eps_uncond, eps_cond = eps.chunk(2)
                x = scheduler.step(eps_uncond + settings.cfg * (eps_cond - eps_uncond), t, x, return_dict=False)[0]
        return x

    flops = settings.steps * unet_cfg_flops(unet, torch.cat([latent, latent]), context, added_cond_kwargs=added)
    _, seconds, peak = meter.measure(loop)
    return Row("SDXL UNet bare CFG loop", 1, settings.sdxl_size, settings.steps, seconds,
               tflops=flops / seconds / 1e12, peak_gb=peak, note="eager; UNet only")


# -- report -----------------------------------------------------------------------------------------

def device_name(settings: Settings) -> str:
    if settings.device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny components, 64px")
    parser.add_argument("--cpu-mid", action="store_true", help="CPU, the SD1.5 architecture (random weights) at "
                        "256px, 4 steps, batch 1: txt2img rows only")
    parser.add_argument("--repeats", type=int, help="timed calls per row after one warm-up (default: 3 on a "
                        "GPU, 5 with --tiny)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--no-sdxl", action="store_true", help="skip the SDXL rows")
    parser.add_argument("--json", type=Path, help="also write the table as JSON to this path")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    settings = settings_from(args)
    if settings.device == "cpu":
        torch.set_num_threads(1)          # the CPUs are shared; sdbake renders with threads=1 too
    meter = Meter(settings)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        work = Path(tmp)
        os.environ["SDBAKE_HASH_INDEX"] = str(work / "hash-index.json")
        pipe = build_sd1(settings)
        model_dir = work / "sd1"
        share_with_sdbake(pipe, model_dir, settings)
        notes = []
        if not finite_fp16_decode(pipe, settings):
            notes.append("the random-weight VAE gives NaN in fp16: sdbake's guard decodes again in float32")
        rows, sd1_notes = sd1_rows(pipe, model_dir, work, settings, meter)
        notes += sd1_notes
        from sdbake.runner.models.registry import default_registry
        if default_registry().loads != 1:
            notes.append(f"sdbake's registry loaded {default_registry().loads} models: it did not reuse the shared "
                         "components, so sdbake ran on its own copy of the same weights")
        if settings.hires_steps:
            rows.append(hires_row(pipe, model_dir, work, settings, meter))
        if settings.decode_size:
            rows.append(decode_row(pipe, settings, meter))
        del pipe
        if settings.sdxl:
            default_registry().clear()           # the SD1.5 modules leave the GPU before the SDXL UNet comes
            if settings.device.startswith("cuda"):
                torch.cuda.empty_cache()
            rows.append(sdxl_row(settings, meter))
            from gpu_sdxl import sdxl_rows  # the whole SDXL pipeline: base -> refiner, diffusers and sdbake
            rows += sdxl_rows(settings, meter, work, sdbake_call, stage_split, Row)
    header = (f"{device_name(settings)}; torch {torch.__version__}; {settings.dtype_name}; Euler, CFG {settings.cfg}; "
              f"{'tiny components' if settings.tiny else 'full SD1.5 / SDXL architectures, random weights'}"
              f"{f' at {settings.size}px, {settings.steps} steps' if settings.device == 'cpu' and not settings.tiny else ''}; "
              f"median of {settings.repeats} after one warm-up")
    print_table(rows, header, notes)
    print(f"whole benchmark: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": header, "notes": notes, "rows": [
            {**dataclasses.asdict(r), "per_image_s": r.per_image_s, "it_per_s": r.it_per_s if r.steps else None}
            for r in rows]}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
