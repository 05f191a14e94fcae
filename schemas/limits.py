"""Bounds on the work a recipe (or an image's embedded recipe) can ask for, checked before any work
starts (DESIGN.md section 11). Each has a default that no ordinary recipe reaches and an
environment variable that raises it; every refusal names both.
"""
from __future__ import annotations

import math
import os
import re

# name: (default, environment variable, what is counted)
LIMITS: dict[str, tuple[float, str, str]] = {
    "matrix_points": (10_000, "SDBAKE_MAX_MATRIX_POINTS", "points in a sweep"),
    "range_values": (10_000, "SDBAKE_MAX_RANGE_VALUES", "values in one matrix range"),
    "image_pixels": (4096 * 4096, "SDBAKE_MAX_IMAGE_PIXELS", "pixels in one image (width x height)"),
    "memory_gb": (16, "SDBAKE_MAX_MEMORY_GB", "GB of estimated memory for one stage's images"),
    "prompt_depth": (100, "SDBAKE_MAX_PROMPT_DEPTH", "levels of brackets in a prompt"),
    "wildcard_depth": (20, "SDBAKE_MAX_WILDCARD_DEPTH", "levels of nested variants/wildcards"),
}
# Estimated working memory per output pixel of a batch: float32 RGB decode, latents, the uint8 copy
# and PNG encoder buffers, and the (tiled) VAE decoder's activations; measured ~30-45 on CPU.
BYTES_PER_PIXEL = 48


def limit(name: str) -> float:
    default, variable, _ = LIMITS[name]
    raw = os.environ.get(variable, "").strip()
    try:
        return type(default)(float(raw)) if raw else default
    except ValueError:
        return default


def over_limit(name: str, detail: str) -> str:
    """`detail: more than the limit of N <what> (raise it with VAR=...)`."""
    _, variable, what = LIMITS[name]
    value = limit(name)
    shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"
    return f"{detail}: more than the limit of {shown} {what} (raise it with {variable}=...)"


def image_problems(width: int, height: int, batch: int, where: str) -> list[str]:
    """Size problems of one stage's images, before anything is allocated."""
    if width * height > limit("image_pixels"):
        return [over_limit("image_pixels", f"{where}{width}x{height} is {width * height:,} pixels")]
    estimate_gb = width * height * batch * BYTES_PER_PIXEL / 1e9
    if estimate_gb > limit("memory_gb"):
        return [over_limit("memory_gb", f"{where}{width}x{height} x batch {batch} needs about "
                                        f"{estimate_gb:,.0f} GB")]
    return []


_WEIGHT_AT_END = re.compile(r":\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\Z")
FLOAT32_MAX = 3.4e38               # emphasis multiplies float32 embeddings: a larger weight is inf there


def _bracket_groups(prompt: str) -> list[tuple[int, int, str]]:
    """(open index, close index, bracket) of every matched `(`/`[` pair, escapes skipped."""
    groups, stack, pos = [], [], 0
    while pos < len(prompt):
        char = prompt[pos]
        if char == "\\":
            pos += 2
            continue
        if char in "([":
            stack.append((pos, char))
        elif char in ")]" and stack and stack[-1][1] == "([)]"[")]".index(char)]:
            start, bracket = stack.pop()
            groups.append((start, pos, bracket))
        pos += 1
    return groups


def prompt_problems(prompt: str, where: str) -> list[str]:
    """Nesting deeper than the limit, or an emphasis weight that is not a finite float32 (A1111's
    `((((...))))` 10k deep multiplies to inf and fails minutes later in the VAE)."""
    depth = deepest = braces = deepest_braces = 0
    for char in re.sub(r"\\.", "", prompt):
        depth += char in "([{"
        depth -= char in ")]}" and depth > 0
        braces += char == "{"
        braces -= char == "}" and braces > 0
        deepest, deepest_braces = max(deepest, depth), max(deepest_braces, braces)
    if deepest_braces > limit("wildcard_depth"):
        return [over_limit("wildcard_depth", f"{where}variants {{...}} nest {deepest_braces} deep")]
    if deepest > limit("prompt_depth"):
        return [over_limit("prompt_depth", f"{where}brackets nest {deepest} deep")]
    # Weight of each group: its explicit `:w` (round brackets), else 1.1 or 1/1.1; a group's total is
    # the product over the groups around it.
    enclosing: list[tuple[int, float]] = []          # (close index, total weight) of open groups
    for start, end, bracket in sorted(_bracket_groups(prompt)):
        while enclosing and enclosing[-1][0] < start:
            enclosing.pop()
        explicit = _WEIGHT_AT_END.search(prompt[start + 1:end]) if bracket == "(" else None
        own = float(explicit.group(1)) if explicit else (1.1 if bracket == "(" else 1 / 1.1)
        total = own * (enclosing[-1][1] if enclosing else 1.0)
        if not math.isfinite(total) or abs(total) > FLOAT32_MAX:
            return [f"{where}emphasis weight at character {start} is {total:g}, not a finite number"]
        enclosing.append((end, total))
    return []


MAX_COORDINATE = 1 << 20           # PIL draws with C ints; a rect or point this far out is a typo or an attack


def _rect_problem(rect: list[int] | None) -> str | None:
    if rect is None:
        return None
    _, _, w, h = rect
    if w < 1 or h < 1:
        return f"rect {rect}: width and height must be at least 1 (it is [x, y, width, height])"
    if any(abs(v) > MAX_COORDINATE for v in rect):
        return f"rect {rect}: coordinates beyond +-{MAX_COORDINATE} pixels"
    return None


def resource_problems(recipe) -> list[tuple[tuple, str]]:
    """Every limit a (resolved) recipe breaks, as (location, message): image sizes against the pixel
    and memory limits (hires targets included), prompt nesting and weights, rects and points."""
    problems: list[tuple[tuple, str]] = []
    size, batch = None, 1
    for index, stage in enumerate(recipe.stages):
        where = ("stages", index)
        if stage.type == "encode":
            size, batch = (stage.width, stage.height), stage.batch_size or 1
            problems += [(where, p) for p in image_problems(*size, batch, "")]
        elif stage.type == "hires" and size is not None:
            size = stage.target_size(*size)
            problems += [(where, p) for p in image_problems(*size, batch, "hires target ")]
        for name in ("prompt", "negative"):
            text = getattr(stage, name, None)
            if isinstance(text, str):
                problems += [(where + (name,), p) for p in prompt_problems(text, "")]
        rects = [("rect", getattr(stage, "rect", None))] + [(("rects", n), r) for n, r in
                                                          enumerate(getattr(stage, "rects", None) or [])]
        for n, op in enumerate(getattr(stage, "ops", None) or []):
            rects.append((("ops", n, "rect"), getattr(op, "rect", None)))
            at = getattr(op, "at", None)
            if at is not None and any(abs(v) > MAX_COORDINATE for v in at):
                problems.append((where + ("ops", n, "at"), f"point {at}: beyond +-{MAX_COORDINATE} pixels"))
        for place, rect in rects:
            problem = _rect_problem(rect)
            if problem:
                problems.append((where + (place if isinstance(place, tuple) else (place,)), problem))
    return problems
