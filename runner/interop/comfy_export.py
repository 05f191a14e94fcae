"""A recipe as a ComfyUI API-format workflow (the JSON ComfyUI's /prompt endpoint queues) built from core
nodes only, plus one warning per setting that no core node expresses (never dropped silently).

Mapping (docs/interop.md): each sample stage is a KSamplerAdvanced on the same `steps`-long schedule with
start_at_step/end_at_step = start/end; noise is added by the first one only, and a stage that ends early
returns with leftover noise. A hires pass with H steps and denoise d is A1111's: LatentUpscale (or
decode, ImageScale / ImageUpscaleWithModel, encode), then a KSamplerAdvanced over total = int(H / min(d,
0.999)) steps from start_at_step total - H. An inpaint loop i is VAEEncode, SetLatentNoiseMask and a
KSamplerAdvanced with seed + i from step steps - int(min(d, 0.999) * steps) - 1, A1111's img2img start.
Node titles carry the sdbake names (model entries, exact denoise values) so that import gets them back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import cos, pi, sin
from pathlib import PurePosixPath

from sdbake.runner.interop.comfy_nodes import node_definitions
from sdbake.schemas.names import SAMPLERS as SAMPLER_TABLE
from sdbake.schemas.stages import LATENT_UPSCALERS

LATENT_METHODS = {"latent-nearest-exact": "nearest-exact", "latent-nearest": "nearest-exact",
                  "latent-bilinear": "bilinear", "latent-bicubic": "bicubic",
                  "latent-bilinear-antialiased": "bilinear", "latent-bicubic-antialiased": "bicubic"}
PIXEL_METHODS = {"lanczos": "lanczos", "nearest": "nearest-exact"}
# A1111 prompt syntax that ComfyUI's CLIPTextEncode reads as plain text.
PROMPT_SYNTAX = [(re.compile(r"\[[^\[\]]*:[^\[\]]*\]"), "prompt editing [from:to:when]"),
                 (re.compile(r"\[[^\[\]]*\|[^\[\]]*\]"), "alternation [a|b]"),
                 (re.compile(r"\bBREAK\b"), "BREAK"),
                 (re.compile(r"__[^_\s]+__|\{[^{}]*\|[^{}]*\}"), "wildcards")]
# sdbake samplers and schedulers ComfyUI's KSampler lacks (A1111's): the nearest one the export writes
# instead, and how it differs.
SCHEDULER_STAND_INS = {
    "polyexponential": ("exponential", "the same schedule at A1111's rho 1, up to rounding"),
    "align_your_steps": ("kl_optimal", ("the same paper's analytic schedule; ComfyUI's AlignYourStepsScheduler "
                                        "node, for SamplerCustomAdvanced, interpolates other levels")),
}
SAMPLER_STAND_INS = {
    "plms": ("ipndm", ("the same Adams-Bashforth steps after an Euler first step, where A1111's PLMS takes a "
                       "pseudo improved Euler step with two model calls")),
    "dpm_fast_a1111": ("dpm_fast", ("A1111's DPM fast runs with eta 1, fresh noise each step; ComfyUI's dpm_fast "
                                    "with eta 0, which gives another image")),
    "restart": ("heun", "Restart's Heun steps without its restart segments: the same run below 20 steps"),
    "dpm_adaptive_a1111": ("dpm_adaptive", ("A1111's DPM adaptive runs with eta 1, fresh noise each step; "
                                            "ComfyUI's dpm_adaptive with eta 0, which gives another image")),
    "ddim_cfg_pp": ("euler_cfg_pp", ("the same CFG++ steps, with cfg written as A1111's / 12.5; A1111 starts "
                                     "txt2img from unit noise in the variance-preserving latent")),
}
AND = re.compile(r"\s*\bAND\b\s*")
AND_WEIGHT = re.compile(r"^(.*?)\s*:\s*(-?\d+(?:\.\d+)?)\s*$", re.DOTALL)


@dataclass
class Export:
    workflow: dict                                  # API format: node id -> {class_type, inputs, _meta}
    warnings: list[str] = field(default_factory=list)


def input_name(path: str) -> str:
    """A recipe's file as ComfyUI's LoadImage names it: relative to ComfyUI's input folder, so a path
    inside the recipe's folder keeps its subfolders and any other path keeps its file name."""
    posix = PurePosixPath(path.replace("\\", "/"))
    return str(posix) if not posix.is_absolute() and ".." not in posix.parts else posix.name


def loop_denoises(denoise, loops: int, curve: str) -> list[float]:
    """A1111 loopback: loop i's denoise runs from the first value to the last along the curve."""
    first, last = denoise if isinstance(denoise, list) else (denoise, denoise)
    shape = {"linear": lambda p: p, "aggressive": lambda p: sin(p * pi / 2), "lazy": lambda p: 1 - cos(p * pi / 2)}
    return [first + (last - first) * shape[curve](i / (loops - 1) if loops > 1 else 0.0) for i in range(loops)]


def img2img_start(steps: int, denoise: float) -> int:
    """A1111 img2img: t_enc = int(min(denoise, 0.999) * steps) steps, walked from sigmas[steps - t_enc - 1]."""
    return steps - int(min(denoise, 0.999) * steps) - 1


def hires_total(steps: int, denoise: float) -> int:
    return int(steps / min(denoise, 0.999))


class _Exporter:
    def __init__(self, loaded, outputs: dict[str, list[str]] | None):
        self.recipe, self.folder, self.outputs = loaded.recipe, loaded.folder, outputs or {}
        self.nodes: dict[str, dict] = {}
        self.warnings: list[str] = []
        self.cache: dict[tuple, list] = {}
        self.encode = None
        self.latent = self.pixels = None
        self.fresh = False                  # the latent is clean: the next sampler adds noise
        self.vae = None
        self.size = (0, 0)

    def add(self, class_type: str, title: str | None = None, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs,
                               "_meta": {"title": title or node_definitions()[class_type]["display_name"]}}
        return node_id

    def warn(self, stage, message: str) -> None:
        line = f"stage {stage.id} ({stage.type}): {message}"
        if line not in self.warnings:       # a loop or a shared prompt says it once
            self.warnings.append(line)

    # models, LoRAs, clip skip and prompts: built once per distinct combination
    def checkpoint(self, name: str) -> tuple[list, list, list]:
        if ("ckpt", name) not in self.cache:
            entry = self.recipe.models[name]
            if entry.merge is not None:
                ckpt = f"{name}.safetensors"
                self.warnings.append(f"model {name}: a checkpoint merge; write it with `sdbake models merge` "
                                     f"as {ckpt} (merge nodes are not exported)")
            else:
                ckpt = PurePosixPath(entry.checkpoint.replace("\\", "/")).name
                if (self.folder / entry.checkpoint).is_dir() or not PurePosixPath(ckpt).suffix:
                    self.warnings.append(f"model {name}: {entry.checkpoint} is a diffusers folder; ComfyUI's "
                                         f"CheckpointLoaderSimple loads one file: save it as {ckpt}.safetensors")
                    ckpt += ".safetensors"
            node = self.add("CheckpointLoaderSimple", f"Load Checkpoint: {name}", ckpt_name=ckpt)
            vae = [node, 2]
            if entry.vae:
                vae = [self.add("VAELoader", f"Load VAE: {name}", vae_name=PurePosixPath(entry.vae).name), 0]
            self.cache[("ckpt", name)] = [[node, 0], [node, 1], vae]
        return tuple(self.cache[("ckpt", name)])

    def model_clip(self, name: str, loras: list, clip_skip: int) -> tuple[list, list]:
        key = ("model", name, tuple((l.name, l.weight) for l in loras), clip_skip)
        if key not in self.cache:
            model, clip, _vae = self.checkpoint(name)
            for lora in loras:
                file = PurePosixPath(lora.name).name
                file += "" if PurePosixPath(file).suffix else ".safetensors"
                node = self.add("LoraLoader", model=model, clip=clip, lora_name=file,
                                strength_model=lora.weight, strength_clip=lora.weight)
                model, clip = [node, 0], [node, 1]
            if clip_skip > 1:      # ComfyUI counts layers from the end: A1111 clip skip 2 = -2
                clip = [self.add("CLIPSetLastLayer", clip=clip, stop_at_clip_layer=-clip_skip), 0]
            self.cache[key] = [model, clip]
        return tuple(self.cache[key])

    def text(self, stage, clip: list, text: str) -> list:
        key = ("text", tuple(clip), text)
        if key not in self.cache:
            for pattern, what in PROMPT_SYNTAX:
                if pattern.search(text):
                    self.warn(stage, f"{what} in {text!r} has no ComfyUI core equivalent: sent as plain text")
            conditioning = None
            for part in AND.split(text):
                weighted = AND_WEIGHT.match(part) if len(AND.split(text)) > 1 else None
                if weighted and float(weighted.group(2)) != 1.0:
                    self.warn(stage, f"AND weight {weighted.group(2)} has no ComfyUI core equivalent: left out")
                encoded = [self.add("CLIPTextEncode", text=weighted.group(1) if weighted else part, clip=clip), 0]
                conditioning = encoded if conditioning is None else \
                    [self.add("ConditioningCombine", conditioning_1=conditioning, conditioning_2=encoded), 0]
            self.cache[key] = conditioning
        return self.cache[key]

    def sampler_inputs(self, stage, seed: int, steps: int) -> dict:
        """The inputs every KSamplerAdvanced of `stage` shares: model, prompts, seed, sampler settings."""
        entry = self.recipe.models[stage.model]
        model, clip = self.model_clip(stage.model, [*entry.loras, *(stage.loras or [])], self.encode.clip_skip)
        self.vae = self.checkpoint(stage.model)[2]
        prompt = stage.prompt if stage.prompt is not None else self.encode.prompt
        negative = stage.negative if stage.negative is not None else self.encode.negative
        if stage.sdxl is not None:
            self.warn(stage, "SDXL micro-conditioning needs CLIPTextEncodeSDXL: left out")
        if getattr(stage, "regions", None):   # ConditioningSetArea weighs areas otherwise than Latent Couple
            self.warn(stage, "regional prompts have no ComfyUI core equivalent with the same weighting: left out")
        if getattr(stage, "tome_ratio", None):
            self.warn(stage, "token merging (tome_ratio) is ComfyUI's TomePatchModel, not a core node: left out")
        scale = SAMPLER_TABLE[stage.sampler].cfg_scale       # DDIM CFG++: A1111's cfg / 12.5 is ComfyUI's cfg
        return {"model": model, "noise_seed": seed, "steps": steps, "cfg": stage.cfg * scale if scale != 1 else stage.cfg,
                "sampler_name": self.stand_in(stage, "sampler", SAMPLER_STAND_INS),
                "scheduler": self.stand_in(stage, "scheduler", SCHEDULER_STAND_INS),
                "positive": self.text(stage if stage.prompt is not None else self.encode, clip, prompt),
                "negative": self.text(stage if stage.negative is not None else self.encode, clip, negative)}

    def stand_in(self, stage, field_name: str, stand_ins: dict) -> str:
        """The stage's sampler or scheduler, or (with a warning) what stands in for one KSampler lacks."""
        value = getattr(stage, field_name)
        if value not in stand_ins:
            return value
        stand_in, why = stand_ins[value]
        self.warn(stage, f"{field_name} {value} is not one of ComfyUI's KSampler {field_name}s: "
                         f"exported as {stand_in} ({why})")
        return stand_in

    def ksampler(self, title: str, common: dict, *, start: int, end: int = 10000, leftover: bool = False) -> None:
        node = self.add("KSamplerAdvanced", title, add_noise="enable" if self.fresh else "disable", **common,
                        latent_image=self.latent, start_at_step=start, end_at_step=end,
                        return_with_leftover_noise="enable" if leftover else "disable")
        self.latent, self.pixels, self.fresh = [node, 0], None, False

    def decoded(self) -> list:
        if self.pixels is None:
            self.pixels = [self.add("VAEDecode", samples=self.latent, vae=self.vae), 0]
        return self.pixels

    def encoded(self, pixels: list) -> list:
        self.pixels = pixels
        return [self.add("VAEEncode", pixels=pixels, vae=self.vae), 0]

    # one method per stage kind
    def stage_encode(self, stage) -> None:
        self.encode, self.size = stage, (stage.width, stage.height)
        if getattr(stage, "subseed_strength", None):
            self.warn(stage, "A1111's variation seed (subseed) has no ComfyUI core equivalent: left out")
        if getattr(self.recipe.defaults, "n_iter", None) and self.recipe.defaults.n_iter > 1:
            self.warn(stage, f"batch count n_iter = {self.recipe.defaults.n_iter}: the workflow renders one "
                             f"batch (queue it {self.recipe.defaults.n_iter} times with the seed counting up)")
        self.vae = self.checkpoint(stage.model)[2]
        if stage.image:
            image = [self.add("LoadImage", image=input_name(stage.image)), 0]
            image = [self.add("ImageScale", image=image, upscale_method="lanczos", width=stage.width,
                              height=stage.height, crop="disabled"), 0]
            self.latent = self.encoded(image)
        else:
            self.latent = [self.add("EmptyLatentImage", width=stage.width, height=stage.height,
                                    batch_size=stage.batch_size), 0]
            self.pixels = None
        self.fresh = True

    def stage_sample(self, stage) -> None:
        common = self.sampler_inputs(stage, stage.seed, stage.steps)
        self.ksampler(f"{stage.id}: steps {stage.start}-{stage.end} of {stage.steps}", common,
                      start=stage.start, end=stage.end, leftover=stage.end < stage.steps)

    def stage_intervene(self, stage) -> None:
        self.warn(stage, "editing the clean estimate mid-sampling has no ComfyUI core equivalent: left out "
                         "(the next stage continues from the latent before it)")

    def stage_hires(self, stage) -> None:
        width, height = stage.target_size(*self.size)
        self.size = (width, height)
        common = self.sampler_inputs(stage, stage.seed, 0)
        if stage.upscaler in LATENT_UPSCALERS:
            if stage.upscaler in ("latent-nearest", "latent-bilinear-antialiased", "latent-bicubic-antialiased"):
                self.warn(stage, f"upscaler {stage.upscaler}: ComfyUI's LatentUpscale has "
                                 f"{LATENT_METHODS[stage.upscaler]} (no antialiasing, no plain nearest)")
            self.latent = [self.add("LatentUpscale", samples=self.latent, upscale_method=LATENT_METHODS[stage.upscaler],
                                    width=width, height=height, crop="disabled"), 0]
        else:
            pixels = self.decoded()
            method = PIXEL_METHODS.get(stage.upscaler)
            if method is None:      # an upscaler model, then down to the target size as A1111 does
                loader = self.add("UpscaleModelLoader", model_name=PurePosixPath(stage.upscaler).name)
                pixels = [self.add("ImageUpscaleWithModel", upscale_model=[loader, 0], image=pixels), 0]
                method = "lanczos"
            pixels = [self.add("ImageScale", image=pixels, upscale_method=method, width=width, height=height,
                               crop="disabled"), 0]
            self.latent = self.encoded(pixels)
        if stage.tiled:
            self.warn(stage, "tiled VAE: ComfyUI's VAEDecode and VAEEncode choose tiling themselves")
        total = hires_total(stage.steps, stage.denoise)
        common["steps"] = total
        self.fresh = True
        self.ksampler(f"{stage.id}: hires {stage.steps} steps at denoise {stage.denoise:g}", common,
                      start=total - stage.steps)

    def stage_inpaint(self, stage) -> None:
        for name, value, fallback in (("color_correction", stage.color_correction, False),
                                      ("area", stage.area, "whole"), ("blur", stage.blur, 0)):
            if value != fallback:
                self.warn(stage, f"{name} = {value!r} has no ComfyUI core equivalent: left out")
        mask = self.mask(stage)
        for loop, denoise in enumerate(loop_denoises(stage.denoise, stage.loops, stage.curve)):
            common = self.sampler_inputs(stage, stage.seed + loop, stage.steps)
            latent = self.encoded(self.decoded())
            self.latent = [self.add("SetLatentNoiseMask", samples=latent, mask=mask), 0]
            self.fresh = True
            self.ksampler(f"{stage.id}: inpaint loop {loop + 1} of {stage.loops} at denoise {denoise:g}", common,
                          start=img2img_start(stage.steps, denoise))

    def mask(self, stage) -> list:
        width, height = self.size
        if stage.mask:
            mask = [self.add("LoadImageMask", image=input_name(stage.mask), channel="red"), 0]
        else:
            mask = [self.add("SolidMask", value=0.0, width=width, height=height), 0]
        for x, y, w, h in stage.rects:
            rect = [self.add("SolidMask", value=1.0, width=w, height=h), 0]
            mask = [self.add("MaskComposite", destination=mask, source=rect, x=x, y=y, operation="add"), 0]
        return mask

    def stage_save(self, stage) -> None:
        rendered = self.outputs.get(stage.id)
        prefix = str(PurePosixPath(rendered[0]).with_suffix("")) if rendered else f"{self.recipe.name}/{stage.id}"
        if stage.format not in (None, "png") or (rendered and not rendered[0].endswith(".png")):
            self.warn(stage, "ComfyUI's SaveImage writes PNG only")
        self.add("SaveImage", filename_prefix=prefix, images=self.decoded())


def export_comfyui(loaded, outputs: dict[str, list[str]] | None = None) -> Export:
    """The workflow for `loaded` (a resolved recipe); `outputs`: each save stage's rendered paths (from
    the plan), whose first one, less its extension, becomes the SaveImage filename prefix."""
    exporter = _Exporter(loaded, outputs)
    for stage in loaded.recipe.stages:
        getattr(exporter, f"stage_{stage.type}")(stage)
    return Export(exporter.nodes, exporter.warnings)


def save_outputs(plan) -> dict[str, list[str]]:
    return {inv.id: list(inv.outputs) for inv in plan.invocations if inv.outputs}


__all__ = ["Export", "export_comfyui", "hires_total", "img2img_start", "input_name", "loop_denoises", "save_outputs"]
