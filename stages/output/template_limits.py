"""Resource bounds for save-path templates, which come from recipes and images anyone may share.

jinja2's sandbox stops templates from reaching Python internals, not from asking for unbounded
work: `{% for i in range(99999) %}{% for j in range(99999) %}` is 10^10 iterations, and
`'a'|center(999999999)` a gigabyte string. Here, before a template compiles, every `for` loop's
iterable and every `~` concatenation is wrapped in a checking filter; `+`, `%`, the width-taking
filters and the padding string methods are checked by value. One render may then run at most
MAX_LOOP_ITERATIONS loop iterations, build no string longer than MAX_TEXT_CHARS, and take at most
MAX_RENDER_S seconds; each limit can be raised through the environment variable its error names.
"""
from __future__ import annotations

import contextvars
import os
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import SecurityError
from jinja2.visitor import NodeTransformer

_LIMITS = {   # name: (default, environment variable)
    "loop iterations": (10_000, "SDBAKE_MAX_TEMPLATE_ITERATIONS"),
    "characters": (100_000, "SDBAKE_MAX_TEMPLATE_CHARS"),
    "seconds": (2.0, "SDBAKE_MAX_TEMPLATE_SECONDS"),
}
_LOOP_FILTER = "_sdbake_bounded_loop"
_TEXT_FILTER = "_sdbake_bounded_text"
_WIDTH_FILTERS = {"center": 1, "indent": 1, "wordwrap": 1, "truncate": 1}   # filter: index of its width
_PADDING_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}
_GROWING = {"replace", "join", "indent", "expandtabs"}     # output can be (input size) x (an argument)
_NESTED_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{")
_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?|\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")


def limit(name: str) -> float:
    default, variable = _LIMITS[name]
    raw = os.environ.get(variable)
    try:
        return type(default)(raw) if raw else default
    except ValueError:
        return default


def refuse(name: str, detail: str) -> SecurityError:
    """The error for a template over one of the limits, naming it and how to raise it."""
    return SecurityError(f"{detail}: more than the limit of {limit(name):g} {name} "
                         f"(raise it with {_LIMITS[name][1]}=...)")


class _Budget:
    def __init__(self):
        self.iterations = int(limit("loop iterations"))
        self.deadline = time.monotonic() + limit("seconds")

    def spend(self) -> None:
        self.iterations -= 1
        if self.iterations < 0:
            raise refuse("loop iterations", "the template loops too often")
        if time.monotonic() > self.deadline:
            raise refuse("seconds", "the template takes too long to render")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _spend() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.spend()


def check_text(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > limit("characters"):
        raise refuse("characters", f"the template builds a value of {len(value)} items")
    return value


def bounded_loop(iterable: Iterable) -> Iterator:
    for item in iterable:
        _spend()
        yield item


def _check_width(width: Any) -> None:
    if isinstance(width, int) and abs(width) > limit("characters"):
        raise refuse("characters", f"a width of {width}")


def check_growth(name: str, value: Any, args: tuple, kwargs: dict) -> None:
    """Before `replace`, `join`, `indent`, `expandtabs` run: their output size, estimated from the inputs
    (each input is already bounded, but a product of two bounded sizes is not)."""
    def text_size(item: Any) -> int:
        return len(item) if isinstance(item, (str, list, tuple)) else 0
    extra = [*args, *kwargs.values()]
    if name == "replace" and len(extra) >= 2 and isinstance(value, str) and isinstance(extra[0], str):
        estimate = len(value) + (value.count(extra[0]) if extra[0] else len(value) + 1) * text_size(extra[1])
    elif name == "join" and isinstance(value, str):               # str.join(items): value is the separator
        items = extra[0] if extra and isinstance(extra[0], (str, list, tuple)) else ()
        estimate = sum(text_size(i) for i in items) + len(value) * len(items)
    elif name == "join":                                          # the filter: items|join(separator)
        items = value if isinstance(value, (str, list, tuple, range)) else ()
        estimate = sum(len(str(i)) for i in items) + len(items) * max((text_size(e) for e in extra), default=0)
    else:                                                         # indent / expandtabs: lines x width
        widths = [e for e in extra if isinstance(e, int) and not isinstance(e, bool)]
        estimate = text_size(value) + str(value).count("\n" if name == "indent" else "\t") * max(widths, default=8)
    if estimate > limit("characters"):
        raise refuse("characters", f"`{name}` would build about {estimate:,} characters")


def check_format(text: Any) -> None:
    """`'%999999999d' % 1` or `'{:>999999999}'.format(1)`: refuse a width or precision over the limit."""
    if not isinstance(text, str):
        return
    if _NESTED_SPEC.search(text):
        raise SecurityError("a computed width (`{0:>{1}}`) in a format string is not allowed in a save path")
    for match in _FORMAT_WIDTH.finditer(text):
        for group in match.groups():
            if group == "*":
                raise SecurityError("a `*` width in a format string is not allowed in a save path")
            if group and int(group) > limit("characters"):
                raise refuse("characters", f"a format width of {group}")


class BoundedTemplates:
    """Mixin for a SandboxedEnvironment: the bounds above, applied to every template it compiles."""

    def install_bounds(self) -> None:
        self.filters[_LOOP_FILTER] = bounded_loop
        self.filters[_TEXT_FILTER] = check_text
        self.globals.pop("lipsum", None)          # lipsum(n) writes n paragraphs: nothing a path needs
        for name, position in _WIDTH_FILTERS.items():
            self.filters[name] = _width_checked(self.filters[name], position, name)
        for name in ("replace", "join"):
            self.filters[name] = _width_checked(self.filters[name], 0, name)
        plain_format = self.filters["format"]

        def format_filter(value, *args, **kwargs):
            check_format(value)
            return check_text(plain_format(value, *args, **kwargs))
        self.filters["format"] = format_filter

    def _parse(self, source, name, filename):
        template = super()._parse(source, name, filename)
        for loop in template.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
        return _wrap_concats(template)

    def wrap_str_format(self, value):
        """jinja2 hands out `'...'.format` through this: check the widths before it formats."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_format(value.__self__)
        return wrapped

    def call(self, context, obj, /, *args, **kwargs):
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(obj, "__name__", "")
            if name in _PADDING_METHODS:
                for width in (*args, *kwargs.values()):
                    _check_width(width)
            if name in ("format", "format_map"):
                check_format(owner)
            if name in _GROWING:
                check_growth(name, owner, args, kwargs)
        _spend()
        return check_text(super().call(context, obj, *args, **kwargs))


def _wrap_concats(template: nodes.Template) -> nodes.Template:
    """Every `a ~ b ~ c` is checked once built (doubling a string in a loop grows fast)."""
    class Wrap(NodeTransformer):
        def visit_Concat(self, node):
            self.generic_visit(node)
            return nodes.Filter(node, _TEXT_FILTER, [], [], None, None, lineno=node.lineno)
    return Wrap().visit(template)


def _width_checked(plain, position: int, name: str):
    """A filter whose width argument (at `position`, 0 for none) and growth are checked first. A filter
    that takes jinja2's context or environment first keeps doing so (its `jinja_pass_arg` marker)."""
    passes = getattr(plain, "jinja_pass_arg", None)

    def checked(*args, **kwargs):
        prefix, (value, *args) = (args[:1], args[1:]) if passes else ((), args)
        widths = list(kwargs.values())
        if position and len(args) >= position:
            widths.append(args[position - 1])
        for width in widths:
            _check_width(width)
        if name in _GROWING:
            check_growth(name, value, tuple(args), kwargs)
        return check_text(plain(*prefix, value, *args, **kwargs))
    if passes:
        checked.jinja_pass_arg = passes
    return checked


def render_bounded(template, variables: dict) -> str:
    """Render with a fresh budget; the output is built piece by piece and stops at the limit."""
    token = _BUDGET.set(_Budget())
    try:
        pieces, total = [], 0
        for piece in template.generate(**variables):
            total += len(piece)
            if total > limit("characters"):
                raise refuse("characters", "the template's output is too long")
            pieces.append(piece)
            _spend()
        return "".join(pieces)
    finally:
        _BUDGET.reset(token)
