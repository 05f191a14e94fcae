"""Sweep axis values as A1111's X/Y/Z plot reads them (scripts/xyz_grid.py, v1.10.1).

The text is split as one CSV record (quotes group commas; a space after a comma is skipped before
a quote is looked for) and each value is stripped. On int and float axes, empty values are
dropped and each value is either a range or one number:

- int `a-b` or `a-b (+s)`: range(a, b + 1, s). The `+ 1` is applied whatever the step's sign, so
  `5-1` is empty and a falling range stops early: `5-1 (-1)` is 5, 4, 3 and `10-1 (-3)` is
  10, 7, 4 (A1111 v1.10.1 computes exactly this; REFERENCE.md's "5,4,3,2,1" is not what it does).
  The step needs its sign: `1-5 (2)` is not a range (and not a number: an error).
- int `a-b [n]`: n values of linspace(a, b, n), each truncated toward zero.
- float `a-b (+s)`: numpy arange(a, b + s, s). Because the stop is b + s, the last value can pass
  b: `0-1 (+0.3)` is 0, 0.3, 0.6, 0.9, 1.2, and rounding can add one value more than expected
  (`0.1-0.3 (+0.1)` gives four values, the last 0.4). A1111 does this; so do we.
- float `a-b [n]`: numpy linspace(a, b, n).

Quirks kept on purpose so that a value means the same in both tools: the character after a float's
integer part may be any character (A1111's pattern leaves the dot unescaped, so `1e5` reads as a
number); a sign may be followed by spaces in the pattern but Python's int()/float() then refuse
it; a count in a float range must still be an integer. Where A1111 raises, we raise RecipeError.
String axes keep every value, empty ones included.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

from sdbake.schemas.errors import RecipeError
from sdbake.schemas.limits import limit, over_limit

# One bound of a range. The float form allows any single character after the integer part (see above).
_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:.\d*)?"


def _range_pattern(number: str, suffix: str) -> re.Pattern:
    return re.compile(rf"\s*({number})\s*-\s*({number})(?:\s*{suffix})?\s*")


_INT_STEP = _range_pattern(_INT, r"\(([+-]\d+)\s*\)")
_INT_COUNT = _range_pattern(_INT, r"\[(\d+)\s*]")
_FLOAT_STEP = _range_pattern(_FLOAT, r"\(([+-]\d+(?:.\d*)?)\s*\)")
_FLOAT_COUNT = _range_pattern(_FLOAT, r"\[(\d+(?:.\d*)?)\s*]")


def split_values(text: str) -> list[str]:
    """`a, "b, c", d` -> ['a', 'b, c', 'd']: CSV records (several lines are joined), stripped."""
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    return [value.strip() for value in chain.from_iterable(rows)]


def _require_count(count: float, value: str, key: str) -> int:
    """A range's number of values, checked against the limit before anything is allocated."""
    if not math.isfinite(count):
        raise RecipeError(f"matrix `{key}`: {value!r} does not give a finite number of values")
    if count > limit("range_values"):
        raise RecipeError(f"matrix `{key}`: " + over_limit("range_values", f"{value!r} has {count:,.0f} values"))
    return max(int(count), 0)


def _convert(convert: Callable[[str], Any], text: str, what: str, key: str) -> Any:
    try:
        return convert(text)
    except ValueError:
        raise RecipeError(f"matrix `{key}`: {text!r} is not {what}") from None


def _int_values(value: str, key: str) -> list[int]:
    stepped = _INT_STEP.fullmatch(value)
    if stepped:
        start = _convert(int, stepped.group(1), "an integer", key)
        end = _convert(int, stepped.group(2), "an integer", key)
        step = int(stepped.group(3)) if stepped.group(3) is not None else 1
        if step == 0:
            raise RecipeError(f"matrix `{key}`: {value!r} has a step of 0")
        values = range(start, end + 1, step)
        _require_count(len(values), value, key)
        return list(values)
    counted = _INT_COUNT.fullmatch(value)
    if counted:
        import numpy as np
        start = _convert(int, counted.group(1), "an integer", key)
        end = _convert(int, counted.group(2), "an integer", key)
        count = int(counted.group(3)) if counted.group(3) is not None else 1
        _require_count(count, value, key)
        return [int(x) for x in np.linspace(start=start, stop=end, num=count).tolist()]
    return [_convert(int, value, "an integer or an A1111 range (a-b, a-b (+s), a-b [n])", key)]


def _float_values(value: str, key: str) -> list[float]:
    stepped = _FLOAT_STEP.fullmatch(value)
    if stepped:
        import numpy as np
        start = _convert(float, stepped.group(1), "a number", key)
        end = _convert(float, stepped.group(2), "a number", key)
        step = _convert(float, stepped.group(3), "a number", key) if stepped.group(3) is not None else 1.0
        if step == 0:
            raise RecipeError(f"matrix `{key}`: {value!r} has a step of 0")
        span = (end + step - start) / step
        _require_count(math.ceil(span) if math.isfinite(span) else math.inf, value, key)
        return np.arange(start, end + step, step).tolist()
    counted = _FLOAT_COUNT.fullmatch(value)
    if counted:
        import numpy as np
        start = _convert(float, counted.group(1), "a number", key)
        end = _convert(float, counted.group(2), "a number", key)
        count = _convert(int, counted.group(3), "a whole count", key) if counted.group(3) is not None else 1
        _require_count(count, value, key)
        if not (math.isfinite(start) and math.isfinite(end)):
            raise RecipeError(f"matrix `{key}`: {value!r} has a bound that is not a finite number")
        return np.linspace(start=start, stop=end, num=count).tolist()
    return [_convert(float, value, "a number or an A1111 range (a-b, a-b (+s), a-b [n])", key)]


def parse_int_axis(text: str, key: str = "axis") -> list[int]:
    """An A1111 int axis: `1-5`, `1-5 (+2)`, `10-1 (-3)`, `1-10 [5]`, `7, 9`, or a mix."""
    return _collect(text, key, _int_values)


def parse_float_axis(text: str, key: str = "axis") -> list[float]:
    """An A1111 float axis: `0.25-1 (+0.25)`, `0-1 [5]`, `5, 7.5`, or a mix."""
    return _collect(text, key, _float_values)


def _collect(text: str, key: str, values_of: Callable[[str, str], list]) -> list:
    """The values of every comma-separated item; the axis as a whole is held to the range limit too."""
    values: list = []
    for value in split_values(text):
        if value:
            values += values_of(value, key)
            if len(values) > limit("range_values"):
                raise RecipeError(f"matrix `{key}`: " + over_limit("range_values", f"the axis has "
                                                                                   f"{len(values):,} values"))
    return values


def parse_str_axis(text: str, key: str = "axis") -> list[str]:
    """An A1111 text axis: CSV values, quotes keep commas; empty values stay (A1111 keeps them)."""
    return split_values(text)


def parse_bool_axis(text: str, key: str = "axis") -> list[bool]:
    """`true, false` (any case), as A1111's boolean axes spell them."""
    words = {"true": True, "false": False}
    values = []
    for value in split_values(text):
        if value.lower() not in words:
            raise RecipeError(f"matrix `{key}`: {value!r} is not true or false")
        values.append(words[value.lower()])
    return values


@dataclass(frozen=True)
class SearchReplace:
    """One cell of a Prompt S/R axis: every `find` in the prompts becomes `replace`."""
    find: str
    replace: str

    def __str__(self) -> str:
        return self.replace


def prompt_sr(values: list[str], key: str = "prompt_sr") -> list[SearchReplace]:
    """A1111 "Prompt S/R": the first value is the text to find; each value (the first included, so
    the first cell is the prompt unchanged) replaces it."""
    if not values:
        raise RecipeError(f"matrix `{key}`: Prompt S/R needs at least the text to find")
    if values[0] == "":
        raise RecipeError(f"matrix `{key}`: the first Prompt S/R value (the text to find) is empty")
    return [SearchReplace(values[0], value) for value in values]


PARSERS: dict[str, Callable[[str, str], list]] = {
    "int": parse_int_axis, "float": parse_float_axis, "str": parse_str_axis, "bool": parse_bool_axis,
}


def parse_axis(kind: str, spec: Any, key: str) -> list:
    """Values of one axis of `kind` ("int", "float", "str", "bool" or "any") from the recipe's
    `[matrix]` entry: a string in A1111's syntax, or a list (strings in it may be A1111 ranges on
    numeric axes; other items are taken as they are)."""
    if isinstance(spec, str):
        if kind == "any":
            raise RecipeError(f"matrix `{key}`: this field takes structured values: give a list of them")
        values = PARSERS[kind](spec, key)
    elif isinstance(spec, list):
        values = []
        for item in spec:
            values += _list_item(kind, item, key)
    else:
        raise RecipeError(f"matrix `{key}`: give a list or an A1111 range string (got {spec!r})")
    if not values:
        raise RecipeError(f"matrix `{key}`: the axis has no values (got {spec!r})")
    return values


def _list_item(kind: str, item: Any, key: str) -> list:
    if isinstance(item, str) and kind in ("int", "float"):
        return PARSERS[kind](item, key)
    if kind == "float" and isinstance(item, int) and not isinstance(item, bool):
        return [float(item)]          # as A1111's float axes: 5 is shown and used as 5.0
    return [item]                     # anything else is checked by the schema, point by point
