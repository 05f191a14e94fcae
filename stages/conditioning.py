"""Prompts -> the embeddings each denoiser call uses, chosen per call as A1111's denoiser does.

A1111 splits `AND` sub-prompts first, schedules each over the sampler's model calls (second-order
samplers count two calls per step) and, at call c, uses the first schedule entry with c <= end.
Each distinct text is encoded once; the texts' embeddings are a memo the state carries.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from sdbake.stages.denoiser import GuidedInputs
from sdbake.stages.prompts.parser import schedule, split_and
from sdbake.stages.state import Packed

Schedule = list[tuple[int, str]]


def prompt_schedules(prompt: str, steps: int, hires_steps: int | None = None) -> list[tuple[float, Schedule]]:
    """[(AND weight, [(end_at_call, text), ...]), ...] for one prompt."""
    return [(weight, schedule(text, steps, hires_steps)) for text, weight in split_and(prompt)]


def negative_schedule(negative: str, steps: int, hires_steps: int | None = None) -> Schedule:
    return schedule(negative, steps, hires_steps)


def texts_of(prompts: list[str], negatives: list[str], pairs: list[list]) -> list[str]:
    texts: set[str] = set()
    for steps, hires in pairs:
        for prompt in prompts:
            for _, entries in prompt_schedules(prompt, steps, hires):
                texts.update(text for _, text in entries)
        for negative in negatives:
            texts.update(text for _, text in negative_schedule(negative, steps, hires))
    return sorted(texts)


def encode_texts(model, texts: list[str], clip_skip: int, memo: dict[str, torch.Tensor],
                 embedding_files: dict | None = None) -> dict[str, torch.Tensor]:
    """The memo with every text of `texts` encoded ((tokens, dim) each)."""
    from sdbake.stages.prompts.encoding import TextEncoder, encode_text
    missing = [t for t in texts if t not in memo]
    if not missing:
        return memo
    encoder = TextEncoder(model.tokenizer, model.text_encoder, clip_skip=clip_skip,
                          embedding_files=dict(embedding_files or {}))
    memo = dict(memo)
    with torch.no_grad():
        for text in missing:
            memo[text] = encode_text(encoder, text).float().cpu()
    return memo


def pack_memo(memo: dict[str, torch.Tensor], clip_skip: int) -> Packed:
    texts = sorted(memo)
    return {f"e{i}": memo[t] for i, t in enumerate(texts)}, {"texts": texts, "clip_skip": clip_skip}


def unpack_memo(packed: Packed | None, clip_skip: int) -> dict[str, torch.Tensor]:
    if packed is None:
        return {}
    tensors, meta = packed
    if meta.get("clip_skip") != clip_skip:
        return {}
    return {text: tensors[f"e{i}"] for i, text in enumerate(meta["texts"])}


def _pick(entries: Schedule, call: int) -> str:
    for end_at, text in entries:
        if call <= end_at:
            return text
    return entries[-1][1]


def guided_inputs(prompts: list[str], negatives: list[str], steps: int, hires_steps: int | None,
                  memo: dict[str, torch.Tensor], device, dtype) -> Callable[[int], GuidedInputs]:
    """A function of the model-call index giving each image's uncond and weighted conds."""
    cond_schedules = [prompt_schedules(p, steps, hires_steps) for p in prompts]
    uncond_schedules = [negative_schedule(n, steps, hires_steps) for n in negatives]
    on_device: dict[str, torch.Tensor] = {}

    def embedding(text: str) -> torch.Tensor:
        if text not in on_device:
            on_device[text] = memo[text].to(device=device, dtype=dtype)
        return on_device[text]

    def for_call(call: int) -> GuidedInputs:
        return GuidedInputs(
            uncond=[embedding(_pick(s, call)) for s in uncond_schedules],
            conds=[[(embedding(_pick(entries, call)), weight) for weight, entries in image]
                   for image in cond_schedules])
    return for_call
