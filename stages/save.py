"""save: decode when needed, write images with A1111 infotext and the embedded recipe.

The runner writes the files (never overwriting, atomically) and keeps their bytes in the cache
entry; this stage only makes the bytes. It passes its input state through unchanged.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

from sdbake.schemas.names import a1111_eta, a1111_sampler_label
from sdbake.schemas.stages import SaveParams
from sdbake.stages.context import StageContext
from sdbake.stages.images import to_pil
from sdbake.stages.output.infotext import format_infotext
from sdbake.stages.output.metadata import encode_image
from sdbake.stages.state import State
from sdbake.stages.vae import vae_decode, vae_options


def _format(p: SaveParams, path: str) -> str:
    if p.format:
        return p.format
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else "png"
    return {"jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}.get(suffix, "png")


def infotext_params(state: State, index: int, ctx: StageContext) -> dict:
    """A1111's generation parameters for image `index`, from what the stages recorded."""
    params: dict = {}
    # An img2img inpaint (encode with an init image, then inpaint) has no sample stage: its inpaint samples.
    sampling = ([r for r in state.provenance if r["type"] == "sample"]
                or [r for r in state.provenance if r["type"] == "inpaint" and "sampler" in r])
    if sampling:
        last = sampling[-1]
        sampler, schedule_type = a1111_sampler_label(last["sampler"], last["scheduler"])
        params.update({"Steps": last["Steps"], "Sampler": sampler, "Schedule type": schedule_type,
                       "CFG scale": last["CFG scale"]})
        # A1111 runs DPM fast / adaptive with its eta option (1 unless the infotext says `Eta`)
        params["Eta"] = a1111_eta(last["sampler"])
    params["Seed"] = state.seeds[index]
    if state.subseeds:               # as A1111: only with a strength above 0
        params["Variation seed"] = state.subseeds[index]
        params["Variation seed strength"] = state.subseed_strength
    if state.seed_resize_from:
        params["Seed resize from"] = "{}x{}".format(*state.seed_resize_from)
    base = next((r for r in state.provenance if r["type"] == "encode"), {})
    first_pass = first_pass_record(state)       # A1111 writes a hires image's first-pass size
    params["Size"] = (f"{first_pass['width']}x{first_pass['height']}" if first_pass else
                      f"{base.get('width', state.width)}x{base.get('height', state.height)}")
    info = ctx.model_info
    params.update({"Model hash": info.get("model_hash"), "Model": info.get("model_name"),
                   "VAE hash": info.get("vae_hash"), "VAE": info.get("vae_name")})
    for record in state.provenance:
        for key, value in record.items():
            if key[:1].isupper() and key not in ("Steps", "CFG scale"):
                params[key] = value
    params["Clip skip"] = state.clip_skip
    if info.get("lora_hashes"):
        params["Lora hashes"] = info["lora_hashes"]
    params["Version"] = f"sdbake {info.get('version', '')}".strip()
    return params


def first_pass_record(state: State) -> dict | None:
    """What the (first) hires pass recorded of the image before it: size and prompts."""
    return next((r["first_pass"] for r in state.provenance if r["type"] == "hires" and "first_pass" in r), None)


def infotext_prompts(state: State, index: int) -> tuple[str, str]:
    """The prompt and negative prompt an infotext starts with: the first pass's, as A1111 writes them (the
    hires pass's own are `Hires prompt` and `Hires negative prompt`)."""
    first_pass = first_pass_record(state) or {}
    prompts = first_pass.get("prompts") or state.prompts
    negatives = first_pass.get("negatives") or state.negatives
    return (prompts[index] if prompts else ""), (negatives[index] if negatives else "")


def _encoded(p: SaveParams, state: State, index: int, ctx: StageContext, picture, retried: bool,
             relative: str) -> bytes:
    """Image `index` as file bytes with its infotext and embedded recipe."""
    prompt, negative = infotext_prompts(state, index)
    params = infotext_params(state, index, ctx)
    if retried:
        params["VAE fp32 retry"] = "True"      # recorded, as A1111 logs its revert to float32
    # A1111 with Latent Couple shows the whole AND prompt (base AND regions) of its first pass
    regions = next((r["regions"] for r in reversed(state.provenance) if r["type"] == "sample" and "regions" in r), [])
    infotext = format_infotext(" AND ".join([prompt, *regions]), negative, params)
    # No absolute paths of this machine: the same recipe rendered in another folder gives the same bytes.
    embedded = json.dumps({**ctx.embedded[index], "prompt": state.prompts[index] if state.prompts else "",
                           "negative": state.negatives[index] if state.negatives else ""},
                          sort_keys=True, ensure_ascii=False)
    return encode_image(picture, _format(p, relative), infotext, embedded, quality=p.quality)


def run(p: SaveParams, state: State, ctx: StageContext) -> State:
    if state.image is None and state.position is not None:
        ctx.warn(f"saving a latent that still holds noise (step {state.position.step} of "
                 f"{state.position.steps}); use an `intervene` preview for the clean estimate")
    model = ctx.model(state.model) if state.image is None else None
    # Image i is encoded (PNG compression, off the GIL) in a worker while image i + 1 decodes: the batch's
    # encodes no longer add up after its decodes. Each image decodes alone anyway (as A1111, so the batch
    # never changes an image), and the files are emitted in order: the bytes are those of a serial save.
    with ThreadPoolExecutor(max_workers=min(len(ctx.outputs), os.cpu_count() or 1, 8) or 1) as encoder:
        encoded = []
        for index, relative in enumerate(ctx.outputs):
            if model is None:
                images, retried = state.image[index:index + 1], False
            else:
                images, retried = vae_decode(model, state.latent[index:index + 1], vae_options(state, ctx),
                                             warn=ctx.warn)
            encoded.append(encoder.submit(_encoded, p, state, index, ctx, to_pil(images)[0], retried, relative))
        for relative, data in zip(ctx.outputs, encoded):
            ctx.emit_file(relative, data.result())
    return state       # unchanged: a save passes its input through (the cache chains its input key)
