"""Sweep axis values read exactly as A1111's X/Y/Z plot (scripts/xyz_grid.py, v1.10.1) reads them."""
from __future__ import annotations

import numpy as np
import pytest
from sdbake.runner.sweep.ranges import (
    SearchReplace,
    parse_axis,
    parse_bool_axis,
    parse_float_axis,
    parse_int_axis,
    parse_str_axis,
    prompt_sr,
    split_values,
)
from sdbake.schemas.errors import RecipeError


@pytest.mark.parametrize("text, expected", [
    ("1-5", [1, 2, 3, 4, 5]),
    ("1-5 (+2)", [1, 3, 5]),
    ("1-6 (+2)", [1, 3, 5]),
    ("10-1 (-3)", [10, 7, 4]),            # range(10, 1 + 1, -3): the +1 does not follow the sign
    ("5-1", []),
    ("5-1 (-1)", [5, 4, 3]),
    ("1-10 [5]", [1, 3, 5, 7, 10]),      # linspace 1, 3.25, 5.5, 7.75, 10 truncated
    ("10-1 [4]", [10, 7, 4, 1]),
    ("-3-3 [3]", [-3, 0, 3]),
    ("-5--1", [-5, -4, -3, -2, -1]),
    ("-2-2 [4]", [-2, 0, 0, 2]),         # -0.67 and 0.67 truncate toward zero
    ("1-3 [0]", []),
    ("1-3 [1]", [1]),
    (" 1 - 3 (+1 ) ", [1, 2, 3]),
    ("7", [7]),
    ("7, 9,11", [7, 9, 11]),
    ("1-3, 10, 20-22", [1, 2, 3, 10, 20, 21, 22]),
    ("1-3,,5", [1, 2, 3, 5]),             # empty values are dropped on numeric axes
    ("", []),
    ('"1-3", "8"', [1, 2, 3, 8]),
    ("1_000", [1000]),                    # Python int() reads it, so A1111 does too
])
def test_int_axis_matches_a1111(text, expected):
    assert parse_int_axis(text) == expected


@pytest.mark.parametrize("text", ["1-5 (2)", "1.5", "a", "1-10 [ 5]", "- 5-3", "1-5 (+0)", "3-4 [2.0]"])
def test_int_axis_errors_where_a1111_raises(text):
    with pytest.raises(RecipeError, match="matrix `seed`"):
        parse_int_axis(text, key="seed")


@pytest.mark.parametrize("text, expected", [
    ("0.25-1 (+0.25)", [0.25, 0.5, 0.75, 1.0]),
    ("1-5", [1.0, 2.0, 3.0, 4.0, 5.0]),
    ("5-1", []),
    ("5-1 (-1)", [5.0, 4.0, 3.0, 2.0, 1.0]),   # float: arange(5, 1 - 1, -1) reaches 1
    ("0-1 [5]", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("2-1 [3]", [2.0, 1.5, 1.0]),
    ("5, 7.5", [5.0, 7.5]),
    ("-1-1 (+1)", [-1.0, 0.0, 1.0]),
    ("1e5-1e5", [100000.0]),              # the unescaped dot of A1111's pattern reads 1e5 as a number
    ("7", [7.0]),
    ("", []),
])
def test_float_axis_matches_a1111(text, expected):
    assert parse_float_axis(text) == expected


def test_float_step_range_can_overshoot_the_end_as_a1111():
    # arange(a, b + s, s): the stop is past b, so the last value can be past b
    assert parse_float_axis("0-1 (+0.3)") == np.arange(0.0, 1.3, 0.3).tolist()
    assert parse_float_axis("0-1 (+0.3)")[-1] == pytest.approx(1.2)
    # rounding makes arange(0.1, 0.4, 0.1) four values long: 0.4 is past the end
    assert parse_float_axis("0.1-0.3 (+0.1)") == np.arange(0.1, 0.4, 0.1).tolist()
    assert len(parse_float_axis("0.1-0.3 (+0.1)")) == 4


@pytest.mark.parametrize("text", ["-1--0.5", "1-2 [2.5]", "1-5 (0.5)", "x", "1-2 (+0)"])
def test_float_axis_errors_where_a1111_raises(text):
    # "-1--0.5": A1111's pattern reads the first bound as "-1-" (the dot matches "-"): float() refuses it
    with pytest.raises(RecipeError, match="matrix `cfg`"):
        parse_float_axis(text, key="cfg")


def test_csv_quoting_keeps_commas_inside_quotes():
    assert split_values('cat, "dog, big", fox') == ["cat", "dog, big", "fox"]
    assert parse_str_axis('"a, b",c') == ["a, b", "c"]
    assert parse_str_axis('a,"he said ""hi"""') == ["a", 'he said "hi"']


def test_whitespace_is_stripped_and_empty_text_values_stay():
    assert parse_str_axis("  a ,b  ,, c") == ["a", "b", "", "c"]
    assert parse_str_axis("a,b\nc") == ["a", "b", "c"]          # several CSV lines are one list


def test_bool_axis():
    assert parse_bool_axis("true, False") == [True, False]
    with pytest.raises(RecipeError):
        parse_bool_axis("yes")


def test_prompt_sr_first_value_is_the_search_text():
    pairs = prompt_sr(["cat", "dog", "fox"])
    assert pairs == [SearchReplace("cat", "cat"), SearchReplace("cat", "dog"), SearchReplace("cat", "fox")]
    assert [str(p) for p in pairs] == ["cat", "dog", "fox"]
    with pytest.raises(RecipeError):
        prompt_sr([])


def test_parse_axis_from_lists_and_strings():
    assert parse_axis("int", "1-3", "seed") == [1, 2, 3]
    assert parse_axis("int", [1, "5-6"], "seed") == [1, 5, 6]
    assert parse_axis("float", [5, 7.5], "cfg") == [5.0, 7.5]
    assert parse_axis("str", "euler, heun", "sampler") == ["euler", "heun"]
    assert parse_axis("str", ["a, b"], "prompt") == ["a, b"]


def test_an_empty_axis_is_an_error_naming_the_key():
    with pytest.raises(RecipeError, match="matrix `seed`.*no values"):
        parse_axis("int", "5-1", "seed")
    with pytest.raises(RecipeError, match="matrix `steps`"):
        parse_axis("int", {"a": 1}, "steps")
