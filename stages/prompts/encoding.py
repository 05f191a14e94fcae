"""Prompt -> per-step CLIP conditioning, as A1111 computes it (modules/sd_hijack_clip.py,
modules/prompt_parser.py): AND sub-prompts, each with its own edit/alternation schedule; every
distinct scheduled text encoded once, in 75-token chunks concatenated along the token axis, with
emphasis, clip skip and textual-inversion embeddings (SD1.x)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sdbake.schemas.errors import ModelError
from sdbake.stages.prompts.parser import schedule_with_warnings, split_and
from sdbake.stages.prompts.tokens import COMMA_BACKTRACK, Chunk, chunk_prompt, embedding_triggers

STATE_FORMAT = "sdbake.conditioning/1"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


def find_embedding_files(folders) -> dict[str, Path]:
    """Embedding name (the file stem) -> file, searching folders in order (the first one wins)."""
    found: dict[str, Path] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in EMBEDDING_SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
    return found


def load_embedding(path: Path, hidden_size: int) -> torch.Tensor:
    """The vectors (n, hidden_size) of an SD1.x textual-inversion file: `emb_params` (safetensors
    from A1111/kohya), `string_to_param.*`, or a file holding a single tensor."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ModelError(f"{path}: embedding is a pickle file; convert it to .safetensors")
    from safetensors.torch import load_file
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as err:   # safetensors raises several types for a damaged file
        raise ModelError(f"{path}: cannot read embedding ({err})") from err
    if "emb_params" in tensors:
        vectors = tensors["emb_params"]
    elif any(key.startswith("string_to_param.") for key in tensors):
        vectors = tensors[min(key for key in tensors if key.startswith("string_to_param."))]
    elif len(tensors) == 1:
        vectors = next(iter(tensors.values()))
    else:
        raise ModelError(f"{path}: not an SD1.x embedding (tensors {sorted(tensors)})")
    if vectors.ndim == 1:
        vectors = vectors.unsqueeze(0)
    if vectors.ndim != 2 or vectors.shape[1] != hidden_size:
        raise ModelError(f"{path}: embedding vectors of shape {tuple(vectors.shape)} do not fit this text "
                         f"encoder (width {hidden_size})")
    return vectors


@dataclass
class TextEncoder:
    """A CLIP tokenizer + text model with the settings that change the conditioning."""
    tokenizer: object
    text_model: torch.nn.Module
    clip_skip: int = 1
    embedding_files: dict[str, Path] = field(default_factory=dict)
    comma_backtrack: int = COMMA_BACKTRACK
    _vectors: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _triggers: dict | None = field(default=None, init=False, repr=False)

    @property
    def hidden_size(self) -> int:
        return self.text_model.config.hidden_size

    def vectors(self, name: str) -> torch.Tensor:
        if name not in self._vectors:
            self._vectors[name] = load_embedding(self.embedding_files[name], self.hidden_size)
        return self._vectors[name]

    def triggers(self) -> dict:
        if self._triggers is None:
            self._triggers = embedding_triggers(self.tokenizer, list(self.embedding_files))
        return self._triggers

    def vector_count(self, name: str) -> int:
        return self.vectors(name).shape[0]


def _final_layer_norm(text_model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(text_model, "text_model", text_model)   # transformers < 5 nests the transformer
    return inner.final_layer_norm


def _encode_chunk(encoder: TextEncoder, chunk: Chunk) -> torch.Tensor:
    """(77, C) for one chunk: transformer output (clip skip as A1111: hidden_states[-clip_skip]
    then the final layer norm), with textual-inversion vectors put in place of their token
    embeddings, then emphasis: scale each token's output by its weight and rescale so the chunk's
    mean is what it was (A1111's "Original" emphasis)."""
    model = encoder.text_model
    device = next(model.parameters()).device
    ids = torch.tensor([chunk.tokens], device=device)

    def put_vectors(_module, _inputs, output):
        output = output.clone()
        for offset, name, count in chunk.embeddings:
            output[0, offset:offset + count] = encoder.vectors(name)[:count].to(output)
        return output

    hook = model.get_input_embeddings().register_forward_hook(put_vectors) if chunk.embeddings else None
    try:
        outputs = model(input_ids=ids, output_hidden_states=encoder.clip_skip > 1)
    finally:
        if hook is not None:
            hook.remove()
    if encoder.clip_skip > 1:
        z = _final_layer_norm(model)(outputs.hidden_states[-encoder.clip_skip])
    else:
        z = outputs.last_hidden_state
    output_dtype = z.dtype
    multipliers = torch.asarray([chunk.multipliers], device=device)   # float32, as A1111's
    original_mean = z.mean()
    z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
    new_mean = z.mean()
    # A1111 divides by the new mean. A trained CLIP's outputs have a mean far from 0 (its final layer
    # norm has a bias); an untrained one's is ~1e-9, where the ratio is noise or 0/0 = NaN. There the
    # restoration is skipped rather than poisoning the conditioning.
    if new_mean.abs() > 1e-4 * z.abs().mean():
        z = z * (original_mean / new_mean)
    return z[0].to(output_dtype)


@torch.no_grad()
def encode_text(encoder: TextEncoder, text: str) -> torch.Tensor:
    """(77 * chunks, C) conditioning of one scheduled text."""
    chunks, _ = chunk_prompt(encoder.tokenizer, text, triggers=encoder.triggers(),
                             vector_count=encoder.vector_count, comma_backtrack=encoder.comma_backtrack)
    return torch.cat([_encode_chunk(encoder, chunk) for chunk in chunks], dim=0)


def embeddings_used(encoder: TextEncoder, text: str) -> list[str]:
    """Names of the embeddings a text triggers (their files belong in the cache key)."""
    chunks, _ = chunk_prompt(encoder.tokenizer, text, triggers=encoder.triggers())
    return sorted({name for chunk in chunks for _, name, _ in chunk.embeddings})


@dataclass(frozen=True)
class SubPrompt:
    """One AND part: its text as written, its weight, and (end_at_step, index into `texts`)."""
    text: str
    weight: float
    steps: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ConditioningSchedule:
    """Per-step conditioning of one prompt: distinct texts with their (tokens, C) tensors, and
    the AND parts that pick among them step by step."""
    texts: tuple[str, ...]
    conds: tuple[torch.Tensor, ...]
    parts: tuple[SubPrompt, ...]
    embeddings: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def weights(self) -> list[float]:
        return [part.weight for part in self.parts]


def encode_prompt(encoder: TextEncoder, prompt: str, steps: int, hires_steps: int | None = None, *,
                  use_and: bool = True) -> ConditioningSchedule:
    """The conditioning schedule of a prompt over `steps` sampler steps (for the hires pass:
    `steps` = first-pass steps and `hires_steps` its own). A1111 splits AND in the positive
    prompt only: pass use_and=False for the negative prompt."""
    subprompts = split_and(prompt) if use_and else [(prompt, 1.0)]
    texts: list[str] = []
    index_of: dict[str, int] = {}
    parts: list[SubPrompt] = []
    warnings: list[str] = []
    for text, weight in subprompts:
        entries, text_warnings = schedule_with_warnings(text, steps, hires_steps)
        warnings += text_warnings
        picks = []
        for end_at_step, scheduled_text in entries:
            if scheduled_text not in index_of:
                index_of[scheduled_text] = len(texts)
                texts.append(scheduled_text)
            picks.append((end_at_step, index_of[scheduled_text]))
        parts.append(SubPrompt(text, weight, tuple(picks)))
    conds = tuple(encode_text(encoder, text) for text in texts)
    used = sorted({name for text in texts for name in embeddings_used(encoder, text)})
    return ConditioningSchedule(tuple(texts), conds, tuple(parts), tuple(used), tuple(warnings))


def encode_negative(encoder: TextEncoder, prompt: str, steps: int, hires_steps: int | None = None
                    ) -> ConditioningSchedule:
    """The uncond schedule: A1111 schedules edits in the negative prompt but does not split AND."""
    return encode_prompt(encoder, prompt, steps, hires_steps, use_and=False)


def _pick(part: SubPrompt, step: int) -> int:
    """As A1111's denoiser: the first entry with step <= end_at_step (0-based step), else the first."""
    for end_at_step, index in part.steps:
        if step <= end_at_step:
            return index
    return part.steps[0][1]


def cond_for_step(schedule: ConditioningSchedule, step: int) -> torch.Tensor:
    """(parts, tokens, C) for a 0-based sampler step; weights in `schedule.weights`. Parts with
    fewer tokens are padded by repeating their last vector, as A1111 stacks AND parts."""
    tensors = [schedule.conds[_pick(part, step)] for part in schedule.parts]
    token_count = max(tensor.shape[0] for tensor in tensors)
    padded = [torch.cat([t, t[-1:].repeat(token_count - t.shape[0], 1)]) if t.shape[0] < token_count else t
              for t in tensors]
    return torch.stack(padded)


def schedule_to_state(schedule: ConditioningSchedule) -> tuple[dict[str, torch.Tensor], dict]:
    """Plain tensors + a JSON-able dict, for the cache; `schedule_from_state` reads them back."""
    tensors = {f"cond.{index}": cond.detach().contiguous() for index, cond in enumerate(schedule.conds)}
    meta = {
        "format": STATE_FORMAT,
        "texts": list(schedule.texts),
        "parts": [{"text": p.text, "weight": p.weight, "steps": [list(s) for s in p.steps]} for p in schedule.parts],
        "embeddings": list(schedule.embeddings),
        "warnings": list(schedule.warnings),
    }
    json.dumps(meta)   # fail here, not in the cache, if something is not JSON
    return tensors, meta


def schedule_from_state(tensors: dict[str, torch.Tensor], meta: dict) -> ConditioningSchedule:
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"not a conditioning schedule: format {meta.get('format')!r}")
    texts = tuple(meta["texts"])
    conds = tuple(tensors[f"cond.{index}"] for index in range(len(texts)))
    parts = tuple(SubPrompt(p["text"], float(p["weight"]), tuple((int(end), int(i)) for end, i in p["steps"]))
                  for p in meta["parts"])
    return ConditioningSchedule(texts, conds, parts, tuple(meta["embeddings"]), tuple(meta["warnings"]))
