"""Prompt text -> CLIP token chunks of 75, as A1111 builds them (modules/sd_hijack_clip.py), and the
token preview of `sdbake prompt tokens`. Pure functions over a CLIP tokenizer; no torch."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise

from sdbake.stages.prompts.parser import weights

CHUNK_LENGTH = 75             # prompt tokens per chunk; BOS and EOS make it 77
COMMA_BACKTRACK = 20          # A1111's default "prompt word wrap length limit" (comma_padding_backtrack)
PLACEHOLDER_TOKEN = 0         # A1111 fills an embedding's slots with id 0 before its vectors replace them
_EMBEDDING_PREFIX = re.compile(r"\bembedding:([^\s,()\[\]:|]+)")


@dataclass
class Chunk:
    """77 token ids (BOS, 75 prompt or EOS padding, EOS), one emphasis weight per id, and where
    textual-inversion vectors go: (offset in the 77, embedding name, vector count)."""
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    embeddings: list[tuple[int, str, int]] = field(default_factory=list)
    length: int = 0           # prompt tokens before padding


def embedding_triggers(tokenizer, names) -> dict[int, list[tuple[list[int], str]]]:
    """First token id -> [(trigger ids, name)], longest trigger first. As A1111 does, an embedding
    is triggered by the tokens of its name (so matching ignores case, as the tokenizer does)."""
    triggers: dict[int, list[tuple[list[int], str]]] = {}
    for name in names:
        ids = tokenizer([name], truncation=False, add_special_tokens=False)["input_ids"][0]
        if ids:
            triggers.setdefault(ids[0], []).append((ids, name))
    for candidates in triggers.values():
        candidates.sort(key=lambda entry: -len(entry[0]))
    return triggers


def _embedding_at(ids: list[int], position: int, triggers) -> tuple[str, int] | None:
    for trigger, name in triggers.get(ids[position], ()):
        if ids[position:position + len(trigger)] == trigger:
            return name, len(trigger)
    return None


def _strip_embedding_prefix(text: str, names) -> str:
    """`embedding:name` (ComfyUI's spelling) means the same as the bare name."""
    known = {name.lower() for name in names}
    return _EMBEDDING_PREFIX.sub(lambda m: m.group(1) if m.group(1).lower() in known else m.group(0), text)


def chunk_prompt(tokenizer, text: str, *, triggers=None, vector_count=lambda name: 1,
                 comma_backtrack: int = COMMA_BACKTRACK) -> tuple[list[Chunk], int]:
    """The chunks of one prompt text (after scheduling) and its token count, as A1111's
    `tokenize_line`: emphasis from `weights`, `BREAK` closing the chunk, a chunk that fills up within
    `comma_backtrack` tokens of a comma moving the words after that comma to the next chunk, and an
    embedding (`vector_count(name)` vectors) that does not fit moving whole to the next chunk."""
    triggers = triggers or {}
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma = tokenizer.convert_tokens_to_ids(",</w>")     # get_vocab() copies all 49408 entries
    comma = None if comma == tokenizer.unk_token_id and ",</w>" != tokenizer.unk_token else comma
    pieces = weights(text)
    names = [name for candidates in triggers.values() for _, name in candidates]
    if names:
        pieces = [(_strip_embedding_prefix(piece, names), weight) for piece, weight in pieces]
    tokenized = tokenizer([piece for piece, _ in pieces], truncation=False, add_special_tokens=False)["input_ids"]

    chunks: list[Chunk] = []
    chunk = Chunk()
    token_count = 0
    last_comma = -1

    def close_chunk(is_last: bool = False) -> None:
        nonlocal chunk, token_count, last_comma
        token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
        chunk.length = len(chunk.tokens)
        padding = CHUNK_LENGTH - chunk.length
        chunk.tokens = [bos] + chunk.tokens + [eos] * padding + [eos]   # SD1 pads with EOS, as A1111
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0] * padding + [1.0]
        chunk.embeddings = [(offset + 1, name, count) for offset, name, count in chunk.embeddings]
        chunks.append(chunk)
        chunk = Chunk()
        last_comma = -1

    for ids, (piece, weight) in zip(tokenized, pieces):
        if piece == "BREAK" and weight == -1:
            close_chunk()
            continue
        position = 0
        while position < len(ids):
            token = ids[position]
            if token == comma:
                last_comma = len(chunk.tokens)
            elif (comma_backtrack and len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1
                  and len(chunk.tokens) - last_comma <= comma_backtrack):
                moved_from = last_comma + 1
                moved = Chunk(chunk.tokens[moved_from:], chunk.multipliers[moved_from:],
                              [(offset - moved_from, name, count) for offset, name, count in chunk.embeddings
                               if offset >= moved_from])
                chunk.tokens, chunk.multipliers = chunk.tokens[:moved_from], chunk.multipliers[:moved_from]
                chunk.embeddings = [entry for entry in chunk.embeddings if entry[0] < moved_from]
                close_chunk()
                chunk = moved
            if len(chunk.tokens) == CHUNK_LENGTH:
                close_chunk()
            found = _embedding_at(ids, position, triggers)
            if found is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            name, trigger_length = found
            count = vector_count(name)
            if len(chunk.tokens) + count > CHUNK_LENGTH:
                close_chunk()
            chunk.embeddings.append((len(chunk.tokens), name, count))
            chunk.tokens += [PLACEHOLDER_TOKEN] * count
            chunk.multipliers += [weight] * count
            position += trigger_length
    if chunk.tokens or not chunks:
        close_chunk(is_last=True)
    return chunks, token_count


@dataclass
class ChunkPreview:
    """One chunk as the preview shows it: the prompt tokens only (no BOS/EOS/padding)."""
    index: int
    ids: list[int]
    strings: list[str]
    multipliers: list[float]


def preview(tokenizer, text: str, *, triggers=None) -> tuple[list[ChunkPreview], list[str]]:
    """Token ids and strings per 75-token chunk, and warnings for text that runs past a chunk
    (A1111 encodes each chunk on its own, so words split across chunks lose their context)."""
    chunks, _ = chunk_prompt(tokenizer, text, triggers=triggers)
    previews: list[ChunkPreview] = []
    for index, chunk in enumerate(chunks):
        ids = chunk.tokens[1:1 + chunk.length]
        previews.append(ChunkPreview(index, ids, tokenizer.convert_ids_to_tokens(ids),
                                     chunk.multipliers[1:1 + chunk.length]))
    warnings: list[str] = []
    for before, after in pairwise(previews):
        if len(before.ids) == CHUNK_LENGTH and after.ids:
            warnings.append(f"chunk {before.index + 1} is full: text from {after.strings[0]!r} on is in chunk "
                            f"{after.index + 1} and is encoded separately (add BREAK or a comma to choose where)")
    return previews, warnings
