"""A1111 infotext -> recipe data: `sdbake import IMAGE|TEXTFILE`. No torch here.

The text is read as A1111 v1.10's parse_generation_parameters reads it (modules/infotext_utils.py): the
prompt, `Negative prompt:` and what follows, and a last line of `Key: value` pairs that counts as parameters
only with at least 3 of them; quoted values are JSON strings; a `WxH` value of any key becomes `Key-1` and
`Key-2`; an old `First pass size` is turned into a size plus a hires resize. Each key is then mapped onto
the recipe: txt2img (encode, sample, save), hires fix (a hires stage with its own sampler, prompt, steps,
checkpoint), img2img (an init image on encode) and inpainting (an inpaint stage after encode). A key that
has no sdbake equivalent is returned as an unmapped note, never dropped.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from sdbake.runner.interop.a1111_params import Imported, ParamMapper, a1111_version
from sdbake.runner.interop.a1111_stages import (
    base_stages,
    extra_stages,
    model_entries,
    resolve_lora_tags,
    token_merging,
    variation_seed,
)
from sdbake.runner.interop.model_names import ModelResolver
from sdbake.schemas.errors import InputFileError
from sdbake.stages.output.infotext import parse_infotext

SAVE_PATH = "{{ name }}/{{ seed }}-{{ prompt | words(6) }}.png"
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
# Keys that only say how the image was made, or that A1111's own defaults fill: nothing to render.
INFORMATIONAL = {"Version", "User", "Lora hashes", "TI hashes", "Init image hash"}
MAX_INFOTEXT_CHARS = 1 << 20


def read_infotext(source: Path) -> str:
    """The infotext of an image (PNG `parameters`, JPEG/WebP EXIF UserComment) or of a text file."""
    from sdbake.stages.output.metadata import read_metadata
    if source.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        infotext, _ = read_metadata(source)
        if not infotext:
            raise InputFileError("no A1111 infotext in this image (no PNG `parameters` chunk, no EXIF "
                                 "UserComment)", file=str(source))
        return infotext
    try:
        if source.stat().st_size > MAX_INFOTEXT_CHARS:
            raise InputFileError(f"more than {MAX_INFOTEXT_CHARS} bytes: not an infotext", file=str(source))
        return source.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputFileError("no such file", file=str(source)) from None
    except UnicodeDecodeError as err:
        raise InputFileError(f"not UTF-8 text ({err.reason} at byte {err.start})", file=str(source)) from None


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative, params) with A1111's key rewrites: `Size: 512x768` -> Size-1, Size-2."""
    prompt, negative, raw = parse_infotext(text)
    params: dict[str, str] = {}
    for key, value in raw.items():
        size = _IMAGE_SIZE.match(value)
        if size:
            params[f"{key}-1"], params[f"{key}-2"] = size.group(1), size.group(2)
        else:
            params[key] = value
    if "First pass size-1" in params:        # hires fix before A1111 1.0: Size was the final size
        first_w, first_h = int(params.pop("First pass size-1")), int(params.pop("First pass size-2"))
        width, height = int(params.get("Size-1", 512)), int(params.get("Size-2", 512))
        if first_w == 0 or first_h == 0:      # A1111's old automatic first pass: about 512x512 pixels
            scale = (512 * 512 / (width * height)) ** 0.5
            first_w, first_h = math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64
        params.update({"Size-1": str(first_w), "Size-2": str(first_h), "Hires resize-1": str(width),
                       "Hires resize-2": str(height)})
    return prompt, negative, params


def import_infotext(text: str, *, name: str, resolver: ModelResolver, source: str = "infotext",
                    init_image: str | None = None, mask: str | None = None) -> Imported:
    """The recipe that renders the settings of an A1111 infotext."""
    prompt, negative, params = parse_parameters(text)
    if not params:
        raise InputFileError("no A1111 parameters found: the last line must hold at least 3 `Key: value` pairs "
                             "(Steps: 20, Sampler: Euler a, ...)", file=source)
    mapper = ParamMapper(params, source)
    imported = Imported(recipe={})
    version = a1111_version(mapper.params.get("Version"))
    original_model = f"{mapper.params.get('Model', '')} {mapper.params.get('Refiner', '')}"
    models = model_entries(mapper, resolver)
    defaults = {"model": "base", **_defaults(mapper, version, imported), **variation_seed(mapper)}
    stages = base_stages(mapper, prompt, negative, imported, init_image=init_image, mask=mask)
    stages = extra_stages(mapper, defaults, models, resolver, version, stages)
    resolve_lora_tags(stages, mapper, resolver)
    token_merging(stages, mapper)
    stages.append({"type": "save", "path": SAVE_PATH})
    for key in list(mapper.params):
        mapper.leave(key, "A1111 writes this as information only" if key in INFORMATIONAL else "")
    imported.recipe = {"version": 1, "name": name, "models": models, "defaults": defaults, "stages": stages}
    imported.unmapped = mapper.unmapped
    imported.header.insert(0, f"Imported from the A1111 infotext of {source} by `sdbake import`. Check it: "
                              "`sdbake validate`; render it: `sdbake run`.")
    if _looks_sdxl(original_model, defaults):
        imported.header.append("An SDXL image (its size or model name): the checkpoint must be an SDXL one; SDXL "
                               "micro-conditioning takes A1111's defaults (original and target size = the size).")
    return imported


def _looks_sdxl(model_names: str, defaults: dict) -> bool:
    """An SDXL model's name says xl; its sizes are about a megapixel (SD1's 512, SD2's 768 pixels wide)."""
    area = defaults.get("width", 512) * defaults.get("height", 512)
    return "xl" in model_names.lower() or area >= 3 * 1024 * 1024 // 4


def _defaults(mapper: ParamMapper, version, imported: Imported) -> dict:
    defaults: dict = {}
    seed = mapper.number("Seed", int)
    if seed is not None:
        defaults["seed"] = seed
    width, height = mapper.number("Size-1", int), mapper.number("Size-2", int)
    if width and height:
        fixed_w, fixed_h = max(64, width // 8 * 8), max(64, height // 8 * 8)
        if (fixed_w, fixed_h) != (width, height):
            mapper.unmapped.append(f"Size: {width}x{height} (sdbake sizes are multiples of 8 from 64: "
                                   f"{fixed_w}x{fixed_h} used)")
        defaults.update(width=fixed_w, height=fixed_h)
    steps = mapper.number("Steps", int)
    if steps is not None:
        defaults["steps"] = steps
    sampling = mapper.sampler("Sampler", "Schedule type", version)
    if sampling:
        defaults["sampler"], defaults["scheduler"] = sampling
        defaults["sampler"], note = mapper.sampler_eta(defaults["sampler"])
        imported.header += [note] if note else []
    cfg = mapper.number("CFG scale")
    if cfg is not None:
        defaults["cfg"] = cfg
    clip_skip = mapper.number("Clip skip", int)
    if clip_skip is not None and clip_skip > 1:
        defaults["clip_skip"] = clip_skip
    rng = mapper.take("RNG")
    if rng is None and not mapper.made_by_sdbake:       # sdbake always draws noise as A1111's `RNG: CPU`
        imported.header.append("A1111 drew this image's noise on the GPU (no `RNG: CPU`): sdbake draws it on the "
                               "CPU, so the same settings give another image.")
    elif rng is not None and rng.upper() != "CPU":
        mapper.unmapped.append(f"RNG: {rng} (sdbake draws noise with torch's CPU generator, A1111's `CPU`)")
    return defaults
