"""A1111's prompt language (v1.10, modules/prompt_parser.py) read exactly as A1111 reads it, in pure Python.

Three public readings of a prompt, each with the same shape as its A1111 counterpart so that the two
can be compared case by case:

- `schedule(prompt, steps, hires_steps)`: prompt editing `[from:to:when]` and alternation `[a|b]`
  -> [(end_at_step, text)] (`get_learned_conditioning_prompt_schedules([prompt], ...)[0]`);
- `weights(text)`: emphasis `(a)`, `[a]`, `(a:1.3)`, escapes, BREAK -> [(text, weight)]
  (`parse_prompt_attention`);
- `split_and(prompt)`: composable diffusion's `AND` with optional `:weight` (`get_multicond_prompt_list`).

A1111 parses schedules with a lark grammar; this module reproduces what that grammar accepts and
which reading lark picks, with a small recursive-descent parser. Nothing here raises on any string.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

# --- prompt editing and alternation ---------------------------------------------------------------

# lark's common.SIGNED_NUMBER as lark compiles it: ASCII digits, an exponent only after digits or a
# decimal, the alternatives tried in this order (the first that matches wins, no backtracking).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.(?:[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)")
_WHITESPACE = re.compile(r"\s+")
# A1111's `plain` terminal: anything but \ [ ] ( ) : |, or a backslash escaping any character but a newline.
_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_STRAY = "[]():"   # characters A1111's grammar accepts as literal text outside any construct


@dataclass(frozen=True)
class _Edit:
    """`[before:after:when]`; `before` is None for `[after:when]`."""
    before: tuple | None
    after: tuple
    when_text: str


@dataclass(frozen=True)
class _Alternate:
    """`[a|b|c]`: one option per step."""
    options: tuple


class _NoParse(Exception):
    """The prompt is outside A1111's grammar; A1111 then uses it unchanged."""


# Deeper nesting is read as literal brackets from the outside in (A1111 itself dies of recursion a
# little deeper, so there is nothing to match); it bounds the recursion here.
MAX_NESTING = 100


class _TooDeep(Exception):
    """A construct nested deeper than MAX_NESTING."""


def _parse_items(text: str, pos: int, memo: dict, depth: int) -> tuple[list, int] | None:
    """Items of a prompt inside brackets: plain text, whitespace and nested constructs, up to the
    next `:`, `|`, `]`, `)` or the end. Inside brackets nothing may be left over, so a nested
    construct that does not parse makes the enclosing one fail (None)."""
    items: list = []
    while pos < len(text):
        char = text[pos]
        if char in ":|])":
            break
        if char in "[(":
            group = _parse_group(text, pos, memo, depth + 1)
            if group is None:
                return None
            nodes, pos = group
            items.extend(nodes)
            continue
        plain = _PLAIN.match(text, pos)
        if plain is None:       # a backslash at the end or before a newline
            return None
        items.append(plain.group(0))
        pos = plain.end()
    return items, pos


def _when_token(segment: str) -> str | None:
    """The NUMBER of a `when` written as `[WHITESPACE] NUMBER [WHITESPACE]`, else None."""
    pos = 0
    space = _WHITESPACE.match(segment, pos)
    if space:
        pos = space.end()
    number = _NUMBER.match(segment, pos)
    if number is None:
        return None
    rest = segment[number.end():]
    if rest and not _WHITESPACE.fullmatch(rest):
        return None
    return number.group(0)


def _parse_group(text: str, start: int, memo: dict, depth: int) -> tuple[list, int] | None:
    """The construct opened by `[` or `(` at `start`, memoized (its reading does not depend on
    what encloses it): emphasis (kept as text, brackets included), a scheduled edit or an
    alternation. Returns (nodes, position after it), or None."""
    if start not in memo:
        if depth > MAX_NESTING:
            raise _TooDeep()   # not memoized: the same group read from less deep may fit
        memo[start] = _read_group(text, start, memo, depth)
    return memo[start]


def _read_group(text: str, start: int, memo: dict, depth: int) -> tuple[list, int] | None:
    opener = text[start]
    segments: list[tuple[list, int, int]] = []   # (items, start, end) between separators
    separators: list[str] = []
    pos = start + 1
    while True:
        parsed = _parse_items(text, pos, memo, depth)
        if parsed is None:
            return None
        items, end = parsed
        segments.append((items, pos, end))
        if end >= len(text):
            return None
        char = text[end]
        if char in ":|":
            separators.append(char)
            pos = end + 1
            continue
        break
    closer = text[end]
    if opener == "(":
        # `( prompt )` or `( prompt : prompt )`, kept as text
        if closer != ")" or "|" in separators or len(segments) > 2:
            return None
        nodes = ["("] + segments[0][0]
        if len(segments) == 2:
            nodes += [":"] + segments[1][0]
        return nodes + [")"], end + 1
    if closer != "]":
        return None
    if not separators:
        return ["["] + segments[0][0] + ["]"], end + 1
    if all(sep == "|" for sep in separators):
        return [_Alternate(tuple(tuple(items) for items, _, _ in segments))], end + 1
    if all(sep == ":" for sep in separators) and len(segments) in (2, 3):
        _, when_start, when_end = segments[-1]
        when_text = _when_token(text[when_start:when_end])
        if when_text is None:
            return None
        before = tuple(segments[0][0]) if len(segments) == 3 else None
        after = tuple(segments[-2][0])
        return [_Edit(before, after, when_text)], end + 1
    return None


def _parse_prompt(text: str) -> tuple[list, list[str]]:
    """The whole prompt. Outside constructs A1111's grammar keeps `[ ] ( ) :` as literal text; a `|`
    there, or a backslash with nothing to escape, means the prompt does not parse."""
    nodes: list = []
    literal_brackets: list[str] = []
    memo: dict = {}
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in "[(":
            try:
                group = _parse_group(text, pos, memo, 1)
            except _TooDeep:
                nodes.append(char)
                literal_brackets.append(f"{char!r} at {pos} (nested deeper than {MAX_NESTING})")
                pos += 1
                continue
            if group is not None:
                # A construct wins over reading its brackets as literal text. (Where a literal
                # bracket or ':' follows the construct, A1111's lark grammar is ambiguous and its
                # pick depends on the process's hash seed; this is one of its two answers.)
                group_nodes, pos = group
                nodes.extend(group_nodes)
                continue
        if char in _STRAY:
            nodes.append(char)
            if char != ":":
                literal_brackets.append(f"{char!r} at {pos}")
            pos += 1
            continue
        if char == "|":
            raise _NoParse(f"'|' at {pos} outside an alternation [a|b]")
        plain = _PLAIN.match(text, pos)
        if plain is None:
            raise _NoParse(f"backslash at {pos} escapes nothing")
        nodes.append(plain.group(0))
        pos = plain.end()
    return nodes, literal_brackets


def _walk(nodes):
    """Every edit and alternation in the tree, active or not (A1111 collects switch points from all)."""
    for node in nodes:
        if isinstance(node, _Edit):
            yield node
            yield from _walk(node.before or ())
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            yield node
            for option in node.options:
                yield from _walk(option)


def _when_step(when_text: str, steps: int, int_offset: int, float_offset: float) -> int:
    """As A1111 does: a `when` with a dot is a fraction of the steps (less `float_offset` for the
    hires pass), otherwise a step number (less `int_offset`); truncated, capped at `steps`."""
    value = float(when_text)
    value = (value - float_offset) * steps if "." in when_text else value - int_offset
    if not math.isfinite(value):
        raise _NoParse(f"when {when_text!r} is out of range")   # A1111 itself crashes here
    return min(steps, int(value))


def _text_at(nodes, step: int, whens: dict[int, int]) -> str:
    parts: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Edit):
            # `step <= when` keeps `before`; a when below 1 therefore always means `after`
            chosen = (node.before or ()) if step <= whens[id(node)] else node.after
            parts.append(_text_at(chosen, step, whens))
        else:
            parts.append(_text_at(node.options[(step - 1) % len(node.options)], step, whens))
    return "".join(parts)


def schedule_with_warnings(prompt: str, steps: int, hires_steps: int | None = None
                           ) -> tuple[list[tuple[int, str]], list[str]]:
    """`schedule`, plus a warning for each place where A1111 would read the prompt literally."""
    if hires_steps is None:
        int_offset, float_offset, total = 0, 0.0, steps
    else:
        # Hires pass (A1111's new scheduling): integers count from the start of the first pass,
        # fractions run from 1.0 (end of the first pass) over the hires steps.
        int_offset, float_offset, total = steps, 1.0, hires_steps
    try:
        nodes, literal_brackets = _parse_prompt(prompt)
        switch_steps = {total}
        whens: dict[int, int] = {}
        for node in _walk(nodes):
            if isinstance(node, _Alternate):
                switch_steps.update(range(1, total + 1))
                continue
            when = _when_step(node.when_text, total, int_offset, float_offset)
            whens[id(node)] = when
            if when >= 1:
                switch_steps.add(when)
    except _NoParse as failure:
        return [(total, prompt)], [f"prompt does not parse ({failure}); it is used unchanged, as A1111 does"]
    warnings = []
    if literal_brackets:
        more = f" and {len(literal_brackets) - 1} more" if len(literal_brackets) > 1 else ""
        warnings.append(f"bracket {literal_brackets[0]}{more} not part of any construct; kept as literal text")
    return [(step, _text_at(nodes, step, whens)) for step in sorted(switch_steps)], warnings


def schedule(prompt: str, steps: int, hires_steps: int | None = None) -> list[tuple[int, str]]:
    """[(end_at_step, text)], as A1111 v1.10's `get_learned_conditioning_prompt_schedules([prompt],
    steps, hires_steps)[0]`. A prompt that does not parse is one entry, unchanged. For the hires
    pass, `steps` is the first pass's count; A1111 doubles the counts of second-order samplers."""
    return schedule_with_warnings(prompt, steps, hires_steps)[0]


# --- emphasis and BREAK ---------------------------------------------------------------------------

# A1111's attention tokens, in its order of preference.
_ESCAPES = ("\\(", "\\)", "\\[", "\\]", "\\\\")
_EXPLICIT_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_TEXT_RUN = re.compile(r"[^\\()\[\]:]+")
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1


def weights_with_warnings(text: str) -> tuple[list[tuple[str, float]], list[str]]:
    """`weights`, plus warnings for brackets closed implicitly and weights that are not numbers."""
    pieces: list[list] = []          # [text, weight], mutable while brackets close
    open_round: list[int] = []       # index into `pieces` where each open bracket started
    open_square: list[int] = []
    warnings: list[str] = []

    def scale_from(start: int, multiplier: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= multiplier

    def add_text(run: str) -> None:
        for index, part in enumerate(_BREAK.split(run)):
            if index > 0:
                pieces.append(["BREAK", -1])
            pieces.append([part, 1.0])

    pos = 0
    while pos < len(text):
        two = text[pos:pos + 2]
        char = text[pos]
        if two in _ESCAPES:
            pieces.append([two[1], 1.0])
            pos += 2
            continue
        if char == "\\":             # a backslash escaping nothing special: an empty piece, as in A1111
            pieces.append(["", 1.0])
            pos += 1
            continue
        if char == "(":
            open_round.append(len(pieces))
            pos += 1
            continue
        if char == "[":
            open_square.append(len(pieces))
            pos += 1
            continue
        explicit = _EXPLICIT_WEIGHT.match(text, pos) if char == ":" else None
        if explicit:
            if open_round:
                try:
                    multiplier = float(explicit.group(1))
                except ValueError:   # e.g. "1.2.3": A1111 raises here; read the ':' as text instead
                    warnings.append(f"weight {explicit.group(1)!r} at {pos} is not a number")
                    explicit = None
                else:
                    scale_from(open_round.pop(), multiplier)
                    pos = explicit.end()
                    continue
            if explicit:
                add_text(explicit.group(0))
                pos = explicit.end()
                continue
        if char == ")" and open_round:
            scale_from(open_round.pop(), ROUND_MULTIPLIER)
        elif char == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_MULTIPLIER)
        elif char in "()[]:":
            add_text(char)
        else:
            run = _TEXT_RUN.match(text, pos)
            add_text(run.group(0))
            pos = run.end()
            continue
        pos += 1

    if open_round or open_square:
        warnings.append(f"{len(open_round) + len(open_square)} bracket(s) left open; closed at the end")
    for start in open_round:         # as A1111: brackets left open close at the end, round first
        scale_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_MULTIPLIER)
    if not pieces:
        pieces = [["", 1.0]]
    merged: list[list] = [pieces[0]]
    for piece in pieces[1:]:         # neighbours of equal weight merge (BREAK markers included)
        if piece[1] == merged[-1][1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return [(piece_text, weight) for piece_text, weight in merged], warnings


def weights(text: str) -> list[tuple[str, float]]:
    """[(text, weight)] as A1111's `parse_prompt_attention`; a BREAK outside brackets is ("BREAK", -1)."""
    return weights_with_warnings(text)[0]


# --- AND ------------------------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
# Text, then an optional `:weight`, then whitespace; the lazy text makes the first place where a
# weight (or only whitespace) completes the sub-prompt win, as in A1111.
_WEIGHTED_SUBPROMPT = re.compile(r"(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*", re.DOTALL)


def _split_weight(subprompt: str) -> tuple[str, float]:
    """A sub-prompt's text (leading whitespace kept, trailing dropped) and its weight (default 1.0)."""
    text, weight = _WEIGHTED_SUBPROMPT.fullmatch(subprompt).groups()
    return text, float(weight) if weight is not None else 1.0


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Sub-prompts of composable diffusion, as A1111's `get_multicond_prompt_list` splits them:
    on `AND` (case-sensitive, a whole word), each with an optional trailing `:weight`."""
    return [_split_weight(part) for part in _AND.split(prompt)]
