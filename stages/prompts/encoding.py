"""One scheduled text -> CLIP conditioning, as A1111 computes it (modules/sd_hijack_clip.py): 75-token
chunks concatenated along the token axis, with emphasis, clip skip and textual-inversion embeddings.
SDXL's two encoders go through the same code with `penultimate` set (sd_hijack_clip.py,
sd_hijack_open_clip.py). Which text each model call uses is stages/conditioning.py's business."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from sdbake.schemas.errors import ModelError
from sdbake.stages.prompts.tokens import COMMA_BACKTRACK, Chunk, chunk_prompt, embedding_triggers


def load_embedding(path: Path, hidden_size: int, key: str | None = None) -> torch.Tensor:
    """The vectors (n, hidden_size) of a textual-inversion file: `emb_params` (safetensors from
    A1111/kohya), `string_to_param.*`, or a file holding a single tensor; for one of SDXL's encoders
    (`key` "clip_l" or "clip_g") the tensor of that name, which SDXL embedding files hold for both."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ModelError(f"{path}: embedding is a pickle file; convert it to .safetensors")
    from safetensors.torch import load_file
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as err:   # safetensors raises several types for a damaged file
        raise ModelError(f"{path}: cannot read embedding ({err})") from err
    if key is not None:
        if key not in tensors:
            raise ModelError(f"{path}: not an SDXL embedding: no {key!r} vectors (tensors {sorted(tensors)})")
        vectors = tensors[key]
    elif "emb_params" in tensors:
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
    # SDXL (A1111 and diffusers alike): the penultimate layer's output without the final layer norm;
    # A1111's clip skip setting does not apply (its sdxl_clip_l_skip option is off by default).
    penultimate: bool = False
    pad_id: int | None = None           # after the first EOS (OpenCLIP pads with 0); None: EOS as SD1
    embedding_key: str | None = None    # SDXL embedding files: "clip_l" or "clip_g"
    _vectors: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _triggers: dict | None = field(default=None, init=False, repr=False)

    @property
    def hidden_size(self) -> int:
        return self.text_model.config.hidden_size

    def vectors(self, name: str) -> torch.Tensor:
        if name not in self._vectors:
            self._vectors[name] = load_embedding(self.embedding_files[name], self.hidden_size, self.embedding_key)
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


def _encode_chunk(encoder: TextEncoder, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(77, C) for one chunk, and the pooled output when the model has a projection (SDXL's second
    encoder: final-layer output at the first EOS, projected; emphasis does not touch it). The
    transformer output is taken as A1111 does (clip skip: hidden_states[-clip_skip] then the final
    layer norm; SDXL: hidden_states[-2] as is), with textual-inversion vectors put in place of
    their token embeddings, then emphasis: scale each token's output by its weight and rescale so
    the chunk's mean is what it was (A1111's "Original" emphasis)."""
    model = encoder.text_model
    device = next(model.parameters()).device
    tokens = list(chunk.tokens)
    if encoder.pad_id is not None:      # A1111's process_tokens: everything after the first EOS is padding
        first_end = tokens.index(encoder.tokenizer.eos_token_id)
        tokens[first_end + 1:] = [encoder.pad_id] * (len(tokens) - first_end - 1)
    ids = torch.tensor([tokens], device=device)

    def put_vectors(_module, _inputs, output):
        output = output.clone()
        for offset, name, count in chunk.embeddings:
            output[0, offset:offset + count] = encoder.vectors(name)[:count].to(output)
        return output

    hook = model.get_input_embeddings().register_forward_hook(put_vectors) if chunk.embeddings else None
    try:
        outputs = model(input_ids=ids, output_hidden_states=encoder.clip_skip > 1 or encoder.penultimate)
    finally:
        if hook is not None:
            hook.remove()
    pooled = outputs.text_embeds[0] if getattr(outputs, "text_embeds", None) is not None else None
    if encoder.penultimate:
        z = outputs.hidden_states[-2]
    elif encoder.clip_skip > 1:
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
    return z[0].to(output_dtype), pooled


@torch.no_grad()
def encode_text_pooled(encoder: TextEncoder, text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(77 * chunks, C) conditioning of one scheduled text, and the first chunk's pooled output (as
    A1111 returns it) when the encoder has a projection."""
    chunks, _ = chunk_prompt(encoder.tokenizer, text, triggers=encoder.triggers(),
                             vector_count=encoder.vector_count, comma_backtrack=encoder.comma_backtrack)
    encoded = [_encode_chunk(encoder, chunk) for chunk in chunks]
    return torch.cat([z for z, _ in encoded], dim=0), encoded[0][1]
