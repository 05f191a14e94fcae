"""encode: prompts -> embeddings memo; an empty latent, or an init image VAE-encoded (img2img)."""
from __future__ import annotations

import torch
from PIL import Image
from sdbake.schemas.stages import EncodeParams
from sdbake.stages.conditioning import encode_texts, known_texts, pack_memo
from sdbake.stages.context import StageContext
from sdbake.stages.images import open_image, pil_to_tensor
from sdbake.stages.state import State
from sdbake.stages.vae import VaeOptions, vae_encode


def run(p: EncodeParams, state: State, ctx: StageContext) -> State:
    model = ctx.model(p.model)
    seeds = tuple(p.image_seeds())
    texts = known_texts(ctx.prompts, ctx.negatives)
    if model.family == "sdxl" and p.clip_skip > 1:
        ctx.warn(f"clip_skip {p.clip_skip} does not apply to SDXL ({p.model}): as A1111, its encoders always use "
                 "their penultimate layer")
    memo = encode_texts(model, texts, p.clip_skip, {}, ctx.extra.get("embedding_files"))
    embeddings = pack_memo(memo, model, p.clip_skip)
    factor = model.vae_scale_factor
    if p.image:
        init = open_image(ctx.files["image"], "init image")
        if init.size != (p.width, p.height):
            ctx.warn(f"init image is {init.size[0]}x{init.size[1]}: resized to {p.width}x{p.height}")
            init = init.convert("RGB").resize((p.width, p.height), Image.LANCZOS)
        pixels = pil_to_tensor(init)[None].expand(len(seeds), -1, -1, -1)
        latent = vae_encode(model, pixels, VaeOptions(fp32=ctx.vae_fp32)).cpu()
        kind = "image"
    else:
        latent = torch.zeros(len(seeds), model.latent_channels, p.height // factor, p.width // factor)
        kind = "empty"
    return State(
        latent=latent, latent_kind=kind, seeds=seeds, width=p.width, height=p.height, model=p.model,
        subseeds=tuple(p.image_subseeds()), subseed_strength=p.subseed_strength or 0.0,
        seed_resize_from=(p.seed_resize_from_w, p.seed_resize_from_h) if p.seed_resize_from_w else (),
        prompts=tuple(ctx.prompts), negatives=tuple(ctx.negatives), prompt_template=p.prompt,
        negative_template=p.negative, clip_skip=p.clip_skip,
        img2img_denoise=p.denoise if p.image else None, embeddings=embeddings,
        provenance=({"stage": ctx.stage_id, "type": "encode", "prompt": p.prompt, "negative": p.negative,
                     **({"Denoising strength": p.denoise} if p.image else {})},),
    )
