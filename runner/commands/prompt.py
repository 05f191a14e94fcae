"""`sdbake prompt schedule|weights|tokens|expand`: how sdbake (and A1111) reads a prompt."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdbake.runner.commands import add_actions, add_command

PROMPT_HELP = "the prompt, in A1111's syntax (quote it for the shell)"

SHIPPED_TOKENIZER = Path(__file__).resolve().parents[1] / "configs" / "clip_tokenizer"


def register(subparsers) -> None:
    prompt = add_command(subparsers, "prompt", None, "show how a prompt is scheduled, weighted, tokenized, expanded",
                         ['sdbake prompt schedule "a [cat:dog:0.5]" --steps 20', 'sdbake prompt weights "(red:1.3) circle"',
                          'sdbake prompt expand "a {red|blue} circle" --count 4'])
    actions = add_actions(prompt, "prompt_command", "what to show")

    schedule = add_command(actions, "schedule", schedule_handler, "prompt editing and alternation per step (A1111 rules)",
                           ['sdbake prompt schedule "a [cat:dog:10] on a [sofa|bed]"'])
    schedule.add_argument("prompt", help=PROMPT_HELP)
    schedule.add_argument("--steps", type=int, default=20, help="sampler steps (first pass)")
    schedule.add_argument("--hires-steps", type=int, default=None, help="steps of the hires pass")
    schedule.add_argument("--json", action="store_true", help="print JSON")

    weights = add_command(actions, "weights", weights_handler, "emphasis weights and BREAKs (A1111 rules)",
                          ['sdbake prompt weights "((red)) circle BREAK [blue] sky"'])
    weights.add_argument("prompt", help=PROMPT_HELP)
    weights.add_argument("--json", action="store_true", help="print JSON")

    tokens = add_command(actions, "tokens", tokens_handler, "CLIP token ids and strings per 75-token chunk",
                         ['sdbake prompt tokens "a photo of a cat" --model models/demo'])
    tokens.add_argument("prompt", help=PROMPT_HELP)
    tokens.add_argument("--model", type=Path, default=None,
                        help="a diffusers model folder whose tokenizer/ to use (default: SD1.x CLIP)")
    tokens.add_argument("--steps", type=int, default=20, help="steps for scheduling edits in the prompt")

    expand = add_command(actions, "expand", expand_handler, "resolve wildcards and {a|b} variants",
                         ['sdbake prompt expand "a __colours__ {circle|square}" --wildcards wildcards/ --seed 3 --count 4',
                          'sdbake prompt expand "a {red|blue} {circle|square}" --combinatorial'])
    expand.add_argument("prompt", help=PROMPT_HELP)
    expand.add_argument("--seed", type=int, default=0, help="image seed (image i uses seed + i)")
    expand.add_argument("--count", type=int, default=1, help="number of images to expand for")
    expand.add_argument("--wildcards", type=Path, nargs="+", default=[], metavar="DIR",
                        help="wildcard folders, searched before the configured ones")
    expand.add_argument("--combinatorial", action="store_true",
                        help="list every expansion (at most --count when given) instead of seeded picks")


def _warn(warnings) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def schedule_handler(args: argparse.Namespace) -> int:
    from sdbake.stages.prompts.extra_networks import strip_tags
    from sdbake.stages.prompts.parser import schedule_with_warnings, split_and
    parts, warnings = [], []
    for text, weight in split_and(strip_tags(args.prompt)):   # CLIP never sees <lora:...> tags
        entries, text_warnings = schedule_with_warnings(text, args.steps, args.hires_steps)
        parts.append({"text": text, "weight": weight, "schedule": [[end, scheduled] for end, scheduled in entries]})
        warnings += text_warnings
    _warn(warnings)
    if args.json:
        print(json.dumps({"steps": args.steps, "hires_steps": args.hires_steps, "parts": parts,
                          "warnings": warnings}, ensure_ascii=False))
        return 0
    # The sampler's steps are 0-based; it uses the first entry with step <= end_at_step.
    last_step = (args.steps if args.hires_steps is None else args.hires_steps) - 1
    for number, part in enumerate(parts, 1):
        if len(parts) > 1:
            print(f"AND part {number}, weight {part['weight']:g}: {part['text']!r}")
        first_step = 0
        for end, text in part["schedule"]:
            used = f"steps {first_step}-{min(end, last_step)}" if first_step <= min(end, last_step) else "unused"
            print(f"  end_at_step {end:>4}  ({used})  {text!r}")
            first_step = end + 1
    return 0


def weights_handler(args: argparse.Namespace) -> int:
    from sdbake.stages.prompts.extra_networks import strip_tags
    from sdbake.stages.prompts.parser import weights_with_warnings
    pieces, warnings = weights_with_warnings(strip_tags(args.prompt))
    _warn(warnings)
    if args.json:
        print(json.dumps([[text, weight] for text, weight in pieces], ensure_ascii=False))
        return 0
    for text, weight in pieces:
        if text == "BREAK" and weight == -1:
            print("   BREAK  (new 75-token chunk)")
        else:
            print(f"  {weight:8.4f}  {text!r}")
    return 0


def load_tokenizer(model: Path | None):
    """The model's CLIP tokenizer when `model` is a diffusers folder, else the SD1.x one we ship."""
    from sdbake.schemas.errors import ModelError
    from transformers import CLIPTokenizer
    if model is not None:
        if not model.exists():
            raise ModelError("model not found", file=str(model))
        if (model / "tokenizer").is_dir():
            return CLIPTokenizer.from_pretrained(str(model / "tokenizer"), local_files_only=True)
    return CLIPTokenizer(str(SHIPPED_TOKENIZER / "vocab.json"), str(SHIPPED_TOKENIZER / "merges.txt"),
                         pad_token="<|endoftext|>")


def tokens_handler(args: argparse.Namespace) -> int:
    from sdbake.stages.prompts.extra_networks import strip_tags
    from sdbake.stages.prompts.parser import schedule, split_and
    from sdbake.stages.prompts.tokens import CHUNK_LENGTH, preview
    tokenizer = load_tokenizer(args.model)
    texts: list[str] = []
    for text, _ in split_and(strip_tags(args.prompt)):
        texts += [scheduled for _, scheduled in schedule(text, args.steps) if scheduled not in texts]
    for text in texts:
        chunks, warnings = preview(tokenizer, text)
        total = sum(len(chunk.ids) for chunk in chunks)
        print(f"{text!r}: {total} tokens in {len(chunks)} chunk(s)")
        for chunk in chunks:
            print(f"  chunk {chunk.index + 1} ({len(chunk.ids)}/{CHUNK_LENGTH})")
            for token_id, string, weight in zip(chunk.ids, chunk.strings, chunk.multipliers):
                note = "" if weight == 1.0 else f"  x{weight:.4f}"
                print(f"    {token_id:>6}  {string}{note}")
        _warn(warnings)
    return 0


def expand_handler(args: argparse.Namespace) -> int:
    from sdbake.runner.models.search import load_search_config
    from sdbake.stages.prompts.wildcards import expand, expand_all
    folders = list(args.wildcards) + load_search_config().folders.get("wildcards", [])
    if args.combinatorial:
        limit = args.count if args.count > 1 else None
        for prompt in expand_all(args.prompt, folders, limit=limit):
            print(prompt)
        return 0
    for index in range(args.count):
        print(expand(args.prompt, args.seed + index, folders))
    return 0
