"""Prompts -> the embeddings each denoiser call uses, chosen per call as A1111's denoiser does.

A1111 splits `AND` sub-prompts first, schedules each over the sampler's model calls (second-order
samplers count two calls per step) and, at call c, uses the first schedule entry with c <= end.
Each distinct text is encoded once per text encoder; the memo of texts -> embeddings, one per model
(a base -> refiner run conditions each model with its own encoders), travels in the state.

SDXL (A1111's sd_models_xl, sd_hijack_clip): CLIP ViT-L and OpenCLIP bigG each encode the text in
75-token chunks with emphasis (penultimate layer, no final norm); their outputs are concatenated
per token, and the pooled output of bigG's first chunk goes with the size micro-conditioning into
the UNet's added embedding. A refiner has bigG only and takes an aesthetic score instead of the
target size. An empty negative prompt is all zeros on SDXL (A1111 force-zeroes it).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from sdbake.stages.denoiser import Cond, GuidedInputs
from sdbake.stages.prompts.extra_networks import strip_tags
from sdbake.stages.prompts.parser import schedule, split_and
from sdbake.stages.state import Packed

Schedule = list[tuple[int, str]]
Memo = dict[str, Cond]

# A1111's defaults: sdxl_crop_top/left 0, refiner aesthetic scores 6.0 (positive) and 2.5 (negative).
DEFAULT_AESTHETIC_SCORE = 6.0
DEFAULT_NEGATIVE_AESTHETIC_SCORE = 2.5


def prompt_schedules(prompt: str, steps: int, hires_steps: int | None = None) -> list[tuple[float, Schedule]]:
    """[(AND weight, [(end_at_call, text), ...]), ...] for one prompt. Its `<lora:...>` tags are cut out
    first, as A1111 does before AND and scheduling (the runner applies the LoRAs they name)."""
    return [(weight, schedule(text, steps, hires_steps)) for text, weight in split_and(strip_tags(prompt))]


def negative_schedule(negative: str, steps: int, hires_steps: int | None = None) -> Schedule:
    return schedule(negative, steps, hires_steps)


# Encode cannot know the step counts of the stages after it (its key must not depend on them): it
# encodes the texts a schedule of this many steps switches between, and the sampling stages encode
# whatever text their own schedules add (a switch at step 200, say). 150 is A1111's largest UI value.
KNOWN_TEXT_STEPS = 150


def texts_of(prompts: list[str], negatives: list[str], pairs: list[list]) -> list[str]:
    """Every text the prompts' schedules use, for each [steps, hires_steps] pair."""
    texts: set[str] = set()
    for steps, hires in pairs:
        for prompt in prompts:
            for _, entries in prompt_schedules(prompt, steps, hires):
                texts.update(text for _, text in entries)
        for negative in negatives:
            texts.update(text for _, text in negative_schedule(negative, steps, hires))
    return sorted(texts)


def known_texts(prompts: list[str], negatives: list[str]) -> list[str]:
    return texts_of(prompts, negatives, [[KNOWN_TEXT_STEPS, None]])


def text_encoders(model, clip_skip: int, embedding_files: dict | None = None) -> list:
    """The model's text encoders as the prompt encoder wants them (SD1: one; SDXL: ViT-L then bigG;
    a refiner: bigG)."""
    from sdbake.stages.prompts.encoding import TextEncoder
    files = dict(embedding_files or {})
    if model.family != "sdxl":
        return [TextEncoder(model.tokenizer, model.text_encoder, clip_skip=clip_skip, embedding_files=files)]
    encoders = []
    if model.text_encoder is not None:
        encoders.append(TextEncoder(model.tokenizer, model.text_encoder, embedding_files=files, penultimate=True,
                                    embedding_key="clip_l"))
    encoders.append(TextEncoder(model.tokenizer_2, model.text_encoder_2, embedding_files=files, penultimate=True,
                                pad_id=0, embedding_key="clip_g"))
    return encoders


def encode_one(encoders: list, text: str) -> Cond:
    """One text through every encoder: token embeddings side by side, the last encoder's pooled output."""
    from sdbake.stages.prompts.encoding import encode_text_pooled
    outputs = [encode_text_pooled(encoder, text) for encoder in encoders]
    context = torch.cat([z for z, _ in outputs], dim=-1) if len(outputs) > 1 else outputs[0][0]
    pooled = outputs[-1][1]
    return Cond(context.float().cpu(), None if pooled is None else pooled.float().cpu())


def encode_texts(model, texts: list[str], clip_skip: int, memo: Memo,
                 embedding_files: dict | None = None) -> Memo:
    """The memo with every text of `texts` encoded."""
    missing = [t for t in texts if t not in memo]
    if not missing:
        return memo
    encoders = text_encoders(model, clip_skip, embedding_files)
    memo = dict(memo)
    with torch.no_grad():
        for text in missing:
            memo[text] = encode_one(encoders, text)
    return memo


def memo_id(model, clip_skip: int) -> str:
    """Which encoders a memo belongs to: the model's file hashes, the LoRAs active on its text
    encoders (a stage whose prompt or `loras` name another set encodes its texts again), and clip
    skip where it applies."""
    parts = [sha for _, sha in model.files]
    parts += [f"lora {path} {te!r}" for path, te, _unet in getattr(model, "active_loras", ()) if te]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"{model.family}:{digest}:{clip_skip if model.family != 'sdxl' else 1}"


def pack_memo(memo: Memo, model, clip_skip: int, previous: Packed | None = None) -> Packed:
    """All models' memos in stored form, with `memo` as the one of (model, clip_skip)."""
    memos = _unpack_all(previous)
    memos[memo_id(model, clip_skip)] = memo
    tensors: dict[str, Any] = {}
    entries = []
    for n, (ident, texts_memo) in enumerate(sorted(memos.items())):
        texts = sorted(texts_memo)
        for i, text in enumerate(texts):
            tensors[f"m{n}.e{i}"] = texts_memo[text].context
            if texts_memo[text].pooled is not None:
                tensors[f"m{n}.p{i}"] = texts_memo[text].pooled
        entries.append({"id": ident, "texts": texts})
    return tensors, {"memos": entries}


def _unpack_all(packed: Packed | None) -> dict[str, Memo]:
    if packed is None:
        return {}
    tensors, meta = packed
    if "memos" not in meta:
        return {}
    return {entry["id"]: {text: Cond(tensors[f"m{n}.e{i}"], tensors.get(f"m{n}.p{i}"))
                          for i, text in enumerate(entry["texts"])}
            for n, entry in enumerate(meta["memos"])}


def unpack_memo(packed: Packed | None, model, clip_skip: int) -> Memo:
    """The memo of this model's encoders (empty when the state holds none for them)."""
    return _unpack_all(packed).get(memo_id(model, clip_skip), {})


def _pick(entries: Schedule, call: int) -> str:
    for end_at, text in entries:
        if call <= end_at:
            return text
    return entries[-1][1]


def guided_inputs(prompts: list[str], negatives: list[str], steps: int, hires_steps: int | None,
                  memo: Memo, device, dtype, *, zero_empty_negative: bool = False,
                  regions: list[tuple[str, float, torch.Tensor]] = ()) -> Callable[[int], GuidedInputs]:
    """A function of the model-call index giving each image's uncond and weighted conds. Each of
    `regions` (prompt, weight, area on the latent grid) adds its AND parts to every image's conds after
    the prompt's, with weight = AND weight x region weight, applied only over its area (stages/regions.py)."""
    region_parts = [(and_weight * weight, entries, area) for prompt, weight, area in regions
                    for and_weight, entries in prompt_schedules(prompt, steps, hires_steps)]
    cond_schedules = [prompt_schedules(p, steps, hires_steps) + [(w, entries) for w, entries, _ in region_parts]
                      for p in prompts]
    areas = [[None] * (len(image) - len(region_parts)) + [area for *_, area in region_parts]
             for image in cond_schedules]
    uncond_schedules = [negative_schedule(n, steps, hires_steps) for n in negatives]
    on_device: dict[tuple[str, bool], Cond] = {}

    def embedding(text: str, negative: bool = False) -> Cond:
        key = (text, negative and zero_empty_negative and text == "")
        if key not in on_device:
            cond = memo[text]
            context = cond.context.to(device=device, dtype=dtype)
            pooled = None if cond.pooled is None else cond.pooled.to(device=device, dtype=dtype)
            if key[1]:
                context = torch.zeros_like(context)
                pooled = None if pooled is None else torch.zeros_like(pooled)
            on_device[key] = Cond(context, pooled)
        return on_device[key]

    def for_call(call: int) -> GuidedInputs:
        return GuidedInputs(
            uncond=[embedding(_pick(s, call), negative=True) for s in uncond_schedules],
            conds=[[(embedding(_pick(entries, call)), weight) for weight, entries in image]
                   for image in cond_schedules],
            areas=areas if regions else None)
    return for_call


def added_time_ids(model, width: int, height: int, micro=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """SDXL's micro-conditioning for the cond and uncond rows, or None for models without it.

    Base: (original h, w, crop top, left, target h, w); A1111 sets original = target = the image
    size being sampled and crop (0, 0). Refiner: (original h, w, crop top, left, aesthetic score),
    the score 6.0 for the prompt and 2.5 for the negative. `micro` (the recipe's `sdxl` table)
    overrides any of them; sizes in it are [width, height], the crop [left, top].
    """
    config = model.unet.config
    if getattr(config, "addition_embed_type", None) != "text_time":
        return None

    def pick(name, default):
        value = getattr(micro, name, None) if micro is not None else None
        return default if value is None else value
    original_w, original_h = pick("original_size", [width, height])
    crop_left, crop_top = pick("crop", [0, 0])
    target_w, target_h = pick("target_size", [width, height])
    head = [original_h, original_w, crop_top, crop_left]
    if model.aesthetic_score:
        cond = head + [pick("aesthetic_score", DEFAULT_AESTHETIC_SCORE)]
        uncond = head + [pick("negative_aesthetic_score", DEFAULT_NEGATIVE_AESTHETIC_SCORE)]
    else:
        cond = uncond = head + [target_h, target_w]
    return torch.tensor(cond, dtype=torch.float32), torch.tensor(uncond, dtype=torch.float32)
