"""A1111's extra-network tags in a prompt: `<lora:name:weight>`, `<lora:name:te:unet>`, `<lyco:...>`.

As A1111 (modules/extra_networks.py parse_prompt, extensions-builtin/Lora/extra_networks_lora.py):
- a tag is `<kind:args>` with kind made of word characters and args anything up to the next `>`;
  every tag is cut out of the whole prompt before AND, prompt editing and alternation are parsed, so
  a tag inside `[a <lora:x:1>:b:10]` applies for all steps and the text keeps `[a :b:10]`;
- the tag is replaced by nothing: the commas and spaces around it stay (`a, <lora:x:1>, b` sends
  `a, , b` to CLIP);
- args split on `:`; an arg `key=value` is named (`te=`, `unet=`), the others positional:
  name, te weight (default 1), unet weight (default: the te weight);
- a name given twice is loaded twice, both times with the last tag's weights (A1111 keeps one
  network object per name, overwrites its multipliers, and lists it once per tag);
- `lyco` is an alias of `lora`. Negative prompts are not parsed (A1111 sends their tags to CLIP).
No torch here: the planner and `validate` use it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sdbake.schemas.errors import PromptError

EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = ("lora", "lyco")


@dataclass(frozen=True)
class LoraTag:
    """One LoRA named by a prompt: its name as written, and its text-encoder and UNet weights."""
    name: str
    te_weight: float
    unet_weight: float


def strip_tags(prompt: str) -> str:
    """The prompt as A1111 sends it on to the prompt parser: every `<kind:args>` removed, nothing else."""
    return EXTRA_NETWORK_TAG.sub("", prompt)


def _number(value: str, what: str, tag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise PromptError(f"{tag}: the {what} {value!r} is not a number") from None
    if not math.isfinite(number) or abs(number) > 10:
        raise PromptError(f"{tag}: the {what} {value} is outside -10..10")
    return number


def _parse_lora(args: str, tag: str) -> LoraTag:
    positional, named = [], {}
    for item in args.split(":"):
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    unknown = sorted(set(named) - {"te", "unet"})
    if unknown:
        raise PromptError(f"{tag}: unknown LoRA option {unknown[0]!r} (sdbake reads te= and unet=)")
    if not positional or not positional[0].strip():
        raise PromptError(f"{tag}: the LoRA has no name")
    if len(positional) > 3:
        raise PromptError(f"{tag}: a fourth LoRA value (A1111's `dyn` dimension) is not supported")
    te = _number(positional[1], "text encoder weight", tag) if len(positional) > 1 else 1.0
    te = _number(named["te"], "text encoder weight", tag) if "te" in named else te
    unet = _number(positional[2], "UNet weight", tag) if len(positional) > 2 else te
    unet = _number(named["unet"], "UNet weight", tag) if "unet" in named else unet
    return LoraTag(positional[0], te, unet)


def lora_tags(prompt: str) -> list[LoraTag]:
    """The LoRAs a prompt names, in order, a repeated name taking its last tag's weights (as A1111).
    A tag of another kind is a PromptError: `hypernet` is not supported, others are unknown."""
    tags: list[LoraTag] = []
    for match in EXTRA_NETWORK_TAG.finditer(prompt):
        kind, args, text = match.group(1), match.group(2), match.group(0)
        if kind == "hypernet":
            raise PromptError(f"{text}: hypernetworks are not supported (only <lora:...> and <lyco:...> tags)")
        if kind not in LORA_KINDS:
            raise PromptError(f"{text}: unknown extra network `{kind}` (sdbake reads <lora:...> and <lyco:...>)")
        tags.append(_parse_lora(args, text))
    last = {tag.name: tag for tag in tags}
    return [last[tag.name] for tag in tags]
