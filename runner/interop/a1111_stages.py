"""The parts of an A1111 import: model entries, variation seed, the base stages (txt2img, img2img, inpaint)
and the stages that follow them (refiner switch, hires fix). Keys are taken out of the mapper as they are
mapped (see a1111_infotext.py); each function reads A1111 v1.10's meaning of its keys."""
from __future__ import annotations

import math
import re

from sdbake.runner.interop.a1111_params import (
    IMG2IMG_KEYS,
    INIT_IMAGE_PLACEHOLDER,
    MASK_PLACEHOLDER,
    Imported,
    ParamMapper,
    split_title,
    upscaler_name,
)
from sdbake.runner.interop.model_names import ModelResolver
from sdbake.schemas.errors import InputFileError
from sdbake.schemas.names import automatic_scheduler, parse_sampler, parse_scheduler

HIRES_KEYS = ("Hires upscale", "Hires resize-1", "Hires upscaler", "Hires steps", "Hires sampler",
              "Hires prompt", "Hires negative prompt", "Hires checkpoint", "Hires CFG Scale", "Hires schedule type")
# What the variation seed keys become, once the recipe schema has them (another change adds them).
VARIATION_FIELDS = {"Variation seed": ("subseed", int), "Variation seed strength": ("subseed_strength", float),
                    "Seed resize from-1": ("seed_resize_from_w", int),
                    "Seed resize from-2": ("seed_resize_from_h", int)}


def model_entries(mapper: ParamMapper, resolver: ModelResolver) -> dict:
    """[models.base]: the checkpoint named by `Model` / `Model hash`, the VAE by `VAE` / `VAE hash`."""
    name, short_hash = mapper.take("Model"), mapper.take("Model hash")
    entry = {"checkpoint": resolver.resolve("checkpoints", name or short_hash or "REPLACE-ME-checkpoint",
                                            short_hash)}
    vae, vae_hash = mapper.take("VAE"), mapper.take("VAE hash")
    if vae and vae.lower() not in ("none", "automatic"):
        entry["vae"] = resolver.resolve("vae", vae, vae_hash)
    elif vae_hash:
        mapper.unmapped.append(f"VAE hash: {vae_hash} (the VAE has no name in the infotext)")
    return {"base": entry}


def variation_seed(mapper: ParamMapper) -> dict:
    """A1111's variation seed fields for [defaults], when the schema has them; else unmapped notes."""
    from sdbake.schemas.recipe import Defaults
    if not any(k in mapper.params for k in VARIATION_FIELDS):
        return {}
    if "subseed" not in Defaults.model_fields:
        for key in ("Variation seed", "Variation seed strength"):
            mapper.leave(key, "variation seeds are not in this sdbake version")
        if "Seed resize from-1" in mapper.params:
            w, h = mapper.take("Seed resize from-1"), mapper.take("Seed resize from-2")
            mapper.unmapped.append(f"Seed resize from: {w}x{h} (variation seeds are not in this sdbake version)")
        return {}
    found = {}
    for key, (field, kind) in VARIATION_FIELDS.items():
        value = mapper.number(key, kind)
        if value is not None:
            found[field] = value
    return found


def base_stages(mapper: ParamMapper, prompt: str, negative: str, imported: Imported, *,
                init_image: str | None, mask: str | None) -> list[dict]:
    """encode + sample (txt2img), encode with an init image + sample (img2img), or encode with an init image
    + inpaint (img2img with a mask: A1111 writes `Mask blur` and the other inpaint keys)."""
    encode = {"type": "encode", "prompt": prompt}
    if negative:
        encode["negative"] = negative
    # A1111 writes `Denoising strength` for img2img and for the hires pass, and inpaint keys only with a mask
    # (none for a mask with blur 0 over the whole picture: then --mask says it was an inpaint).
    img2img = not mapper.has(*HIRES_KEYS) and mapper.has("Denoising strength", *IMG2IMG_KEYS)
    inpaint = img2img and (mask is not None or mapper.has(*IMG2IMG_KEYS))
    unused = [option for option, value in (("--init-image", init_image), ("--mask", mask))
              if value is not None and not (img2img if option == "--init-image" else inpaint)]
    if unused:
        imported.notes.append(f"{' and '.join(unused)} not used: the infotext is of a "
                              f"{'img2img' if img2img else 'txt2img'} image")
    if not img2img:
        return [encode, {"type": "sample"}]
    if init_image is None:
        init_image = INIT_IMAGE_PLACEHOLDER
        imported.notes.append(f"the infotext does not hold the init image: the recipe reads `{init_image}` "
                              "(pass --init-image FILE, or edit the recipe)")
    encode["image"] = init_image
    denoise = mapper.number("Denoising strength")
    denoise = 0.75 if denoise is None else denoise       # A1111's img2img default
    if not inpaint:
        encode["denoise"] = denoise
        return [encode, {"type": "sample"}]
    if mask is None:
        mask = MASK_PLACEHOLDER
        imported.notes.append(f"the infotext does not hold the inpaint mask: the recipe reads `{mask}` "
                              "(pass --mask FILE, white = repaint)")
    # A1111 writes `Mask blur` only when it is above 0, and `Inpaint area` only for "Only masked".
    stage = {"type": "inpaint", "mask": mask, "blur": mapper.number("Mask blur", int) or 0, "denoise": denoise}
    area = mapper.take("Inpaint area", "Whole picture")
    padding = mapper.number("Masked area padding", int)
    if area.lower() == "only masked":
        stage.update(area="masked", padding=32 if padding is None else padding)
    elif area.lower() != "whole picture":
        mapper.unmapped.append(f"Inpaint area: {area} (A1111 knows 'Whole picture' and 'Only masked')")
    mapper.leave("Masked content", "sdbake inpaints from the original pixels, A1111's 'original'")
    if (mapper.params.get("Mask mode") or "").lower() == "inpaint masked":
        mapper.take("Mask mode")
    mapper.leave("Mask mode", "sdbake repaints where the mask is white: invert the mask file")
    _loopback(mapper, stage)
    return [encode, stage]


# sdbake's inpaint loopback curves (stages/inpaint.py), to tell them apart in `Loopback denoise`.
CURVES = {"linear": lambda p: p, "aggressive": lambda p: math.sin(p * math.pi / 2),
          "lazy": lambda p: 1 - math.cos(p * math.pi / 2)}


def _loopback(mapper: ParamMapper, stage: dict) -> None:
    """sdbake's own inpaint keys: `Loopback denoise` (one value per loop) and `Color correction`."""
    if mapper.take("Color correction") == "True":
        stage["color_correction"] = True
    text = mapper.params.get("Loopback denoise")
    try:
        values = [float(v) for v in text.split(",")] if text else []
    except ValueError:
        return
    if len(values) < 2:
        return
    first, last = values[0], values[-1]
    for curve, shape in CURVES.items():
        expected = [first + (last - first) * shape(i / (len(values) - 1)) for i in range(len(values))]
        if all(abs(a - b) < 1e-5 * max(1.0, abs(b)) for a, b in zip(values, expected)):
            mapper.take("Loopback denoise")
            stage.update(loops=len(values), denoise=[first, last], **({} if curve == "linear" else {"curve": curve}))
            return


def extra_stages(mapper: ParamMapper, defaults: dict, models: dict, resolver: ModelResolver, version,
                 stages: list[dict]) -> list[dict]:
    """The refiner switch (the sample stage split in two) and the hires pass, appended to stages."""
    if "Refiner" in mapper.params:
        stages = _refiner(mapper, defaults, models, resolver, version, stages)
    if mapper.has(*HIRES_KEYS):
        stages = [*stages, _hires(mapper, defaults, models, resolver)]
    return stages


def _refiner(mapper, defaults, models, resolver, version, stages):
    sample = next((s for s in stages if s["type"] == "sample"), None)
    switch = mapper.number("Refiner switch at")
    if sample is None or switch is None or not 0 < switch < 1:
        return stages
    name, short_hash = split_title(mapper.take("Refiner"))
    models["refiner"] = {"checkpoint": resolver.resolve("checkpoints", name, short_hash)}
    steps = defaults.get("steps", 20)
    at = min(max(round(switch * steps), 1), steps - 1)
    if not mapper.made_by_sdbake and (version is None or version >= (1, 8)):
        mapper.unmapped.append(f"Refiner switch at: {switch} (A1111 1.8+ switches where the sigma passes that "
                               f"fraction; sdbake switches at step {at} of {steps})")
    index = stages.index(sample)
    return [*stages[:index], {**sample, "end": at}, {"type": "sample", "start": at, "model": "refiner"},
            *stages[index + 1:]]


def _hires(mapper: ParamMapper, defaults: dict, models: dict, resolver: ModelResolver) -> dict:
    stage: dict = {"type": "hires"}
    scale = mapper.number("Hires upscale")
    width, height = mapper.number("Hires resize-1", int) or 0, mapper.number("Hires resize-2", int) or 0
    if width or height:
        stage.update({k: v for k, v in (("width", width), ("height", height)) if v})
        base_w, base_h = defaults.get("width", 512), defaults.get("height", 512)
        if width and height and width * base_h != height * base_w:
            mapper.unmapped.append(f"Hires resize: {width}x{height} (A1111 upscales to cover it and crops the "
                                   "overflow; sdbake resizes to it exactly)")
    elif scale is not None and scale > 1:
        stage["scale"] = scale
    elif scale is not None:       # A1111 allows a second pass at the same size
        stage.update(width=defaults.get("width", 512), height=defaults.get("height", 512))
    label = mapper.take("Hires upscaler")
    # A1111's default hires upscaler is "Latent", a bilinear latent resize.
    stage["upscaler"] = upscaler_name(label, resolver) if label else "latent-bilinear"
    steps = mapper.number("Hires steps", int)
    if steps:
        stage["steps"] = steps
    denoise = mapper.number("Denoising strength")
    stage["denoise"] = 0.7 if denoise is None else denoise          # A1111's txt2img default
    sampler_label, schedule = mapper.take("Hires sampler"), mapper.take("Hires schedule type")
    scheduler = None
    try:
        if sampler_label and sampler_label != "Use same sampler":
            stage["sampler"], scheduler = parse_sampler(sampler_label)
            scheduler = None if scheduler == "automatic" else scheduler
        # Without `Hires schedule type` the hires pass used the base pass's schedule (A1111 writes the key
        # only when they differ); "Automatic" is the hires sampler's own default.
        if (schedule or "").lower() == "automatic":
            scheduler = automatic_scheduler(stage.get("sampler", defaults.get("sampler")))
        elif schedule and schedule != "Use same scheduler":
            scheduler = parse_scheduler(schedule)
    except ValueError as err:
        raise InputFileError(f"A1111 hires sampler: {err}", file=mapper.source) from None
    if scheduler and scheduler != defaults.get("scheduler"):
        stage["scheduler"] = scheduler
    for key, field in (("Hires prompt", "prompt"), ("Hires negative prompt", "negative")):
        text = mapper.take(key)
        if text:
            stage[field] = text
    cfg = mapper.number("Hires CFG Scale")
    if cfg is not None and cfg != defaults.get("cfg"):
        stage["cfg"] = cfg
    checkpoint = mapper.take("Hires checkpoint")
    if checkpoint and checkpoint != "Use same checkpoint":
        name, short_hash = split_title(checkpoint)
        models["hires"] = {**models["base"], "checkpoint": resolver.resolve("checkpoints", name, short_hash)}
        stage["model"] = "hires"
    return stage


LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)((?::[^>]*)?)>")


def resolve_lora_tags(stages: list[dict], mapper: ParamMapper, resolver: ModelResolver) -> None:
    """The LoRAs that `<lora:name:...>` tags in the prompts name, found as other models are (by --model, name
    or the hash in `Lora hashes`); a tag whose file is found under another name or path is rewritten to it."""
    hashes = {}
    for item in (mapper.take("Lora hashes") or "").split(","):
        name, _, short_hash = item.rpartition(":")
        if name.strip():
            hashes[name.strip()] = short_hash.strip()
    found: dict[str, str] = {}

    def rewrite(match: re.Match) -> str:
        name = match.group(2)
        if name not in found:
            found[name] = resolver.resolve("loras", name, hashes.get(name))
        return f"<{match.group(1)}:{found[name]}{match.group(3)}>"

    for stage in stages:        # A1111 reads tags in prompts only: a negative prompt's go to CLIP as text
        if isinstance(stage.get("prompt"), str):
            stage["prompt"] = LORA_TAG.sub(rewrite, stage["prompt"])


def token_merging(stages: list[dict], mapper: ParamMapper) -> None:
    """A1111's `Token merging ratio` (the first pass) and `Token merging ratio hr` (the hires pass) as the
    stages' tome_ratio, where this sdbake has token merging; an inpaint's stays an unmapped note."""
    from sdbake.schemas.stages import SampleParams
    if "tome_ratio" not in SampleParams.model_fields:
        return
    for key, kind in (("Token merging ratio", "sample"), ("Token merging ratio hr", "hires")):
        targets = [stage for stage in stages if stage["type"] == kind]
        if key in mapper.params and targets:
            ratio = mapper.number(key)
            for stage in targets:
                stage["tome_ratio"] = ratio
