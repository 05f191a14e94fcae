"""A1111's infotext: the text its "PNG Info" tab, civitai and sd-parsers read from an image.

Layout (A1111 v1.10.1, modules/processing.py create_infotext): the prompt, then
`\\nNegative prompt: ...` when the negative prompt is not empty, then one line of `Key: value`
pairs joined by `, ` in A1111's order. A value that contains `,`, `:` or a newline is written as a
JSON string (modules/infotext_utils.py quote). A key whose value equals the key is written alone.
"""
from __future__ import annotations

import json
import re
from typing import Any

# create_infotext's fixed keys, in its order; then p.extra_generation_params (hires, LoRA hashes,
# ... in the order they were added), then Version and User last.
A1111_KEY_ORDER = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration",
    "Size", "Model hash", "Model", "VAE hash", "VAE", "Variation seed", "Variation seed strength",
    "Seed resize from", "Denoising strength", "Conditional mask weight", "Clip skip", "ENSD",
    "Token merging ratio", "Token merging ratio hr", "Init image hash", "RNG", "NGMS", "Tiling",
    # extra_generation_params, in the order A1111's txt2img hires fix and extra networks add them
    "Hires prompt", "Hires negative prompt", "Hires upscale", "Hires resize", "Hires steps",
    "Hires upscaler", "Hires sampler", "Hires schedule type", "Hires CFG Scale", "Lora hashes",
    "TI hashes",
)
TRAILING_KEYS = ("Version", "User")

# modules/infotext_utils.py re_param: a key (word chars, spaces, -, /), a colon, then a JSON
# string or anything up to the next comma.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_NEGATIVE_PREFIX = "Negative prompt:"

def quote(value: Any) -> str:
    """As A1111: a value with `,` `:` or a newline becomes a JSON string, others stay as they are."""
    text = str(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """The inverse of quote; text that is not a valid JSON string is returned unchanged."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text


def _ordered_params(params: dict) -> list[tuple[str, Any]]:
    known = [(key, params[key]) for key in A1111_KEY_ORDER if key in params]
    extras = [(key, value) for key, value in params.items()
              if key not in A1111_KEY_ORDER and key not in TRAILING_KEYS]
    trailing = [(key, params[key]) for key in TRAILING_KEYS if key in params]
    return known + extras + trailing


def _keep(key: str, value: Any) -> bool:
    if value is None:
        return False
    if key == "Clip skip":           # A1111 writes Clip skip only when it is above 1
        return int(value) > 1
    return True


def format_params_line(params: dict) -> str:
    """The `Steps: 20, Sampler: ...` line: A1111's key order, None values left out."""
    pairs = [key if str(value) == key else f"{key}: {quote(value)}"
             for key, value in _ordered_params(params) if _keep(key, value)]
    return ", ".join(pairs)


def format_infotext(prompt: str, negative: str, params: dict) -> str:
    """The whole infotext, as A1111's create_infotext lays it out."""
    negative_text = f"\n{_NEGATIVE_PREFIX} {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{format_params_line(params)}".strip()


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, {key: value}) as A1111's parse_generation_parameters reads it.

    The last line holds parameters only if it has at least 3 `key: value` pairs; otherwise it
    belongs to the prompt. Values are unquoted strings; unlike A1111 we keep `Size` whole
    (`512x768`) and add no defaults for missing keys.
    """
    *lines, last_line = text.strip().split("\n")
    if len(_PARAM.findall(last_line)) < 3:
        lines.append(last_line)
        last_line = ""

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE_PREFIX):
            negative_lines.append(line[len(_NEGATIVE_PREFIX):].strip())
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)

    params = {key: unquote(value) for key, value in _PARAM.findall(last_line)}
    return "\n".join(prompt_lines), "\n".join(negative_lines), params
