"""Render a save-path template (jinja2, sandboxed) into a path string.

The caller supplies the variables; the save stage passes these (all of them, for every image):

    name          the recipe's `name`
    seed          this image's seed (int)
    steps         total sampling steps of the schedule (int)
    cfg           classifier-free guidance scale (float)
    sampler       sampler id, ComfyUI spelling (`dpmpp_2m`, `euler_ancestral`, ...)
    scheduler     sigma schedule id (`karras`, `normal`, ...)
    width         image width in pixels (int)
    height        image height in pixels (int)
    model_name    checkpoint file name without its extension
    model_hash    A1111 short hash of the checkpoint (first 10 hex of its sha256)
    prompt        the resolved positive prompt (wildcards already picked)
    negative      the resolved negative prompt
    prompt_hash   first 8 hex of sha256(prompt), as A1111's [prompt_hash]
    batch_index   index of the image in its batch (0-based int)
    stage         id of the save stage writing the image
    date          local date of the run, `YYYY-MM-DD`
    datetime      local date and time of the run, `YYYYMMDD-HHMMSS`
    recipe_hash   first hex digits of the canonical recipe's sha256

Filters added to jinja2's own:

    words(n)      first n words of a prompt, cleaned as A1111's [prompt_words]: split on whitespace
                  and punctuation (so brackets and commas go); we also drop emphasis weights and
                  `<lora:...>` tags first, so `(cat:1.2)` gives `cat` rather than A1111's `cat 1 2`
    slug(n=None)  lowercase ASCII words joined by `-`, at most n characters
    hash(n=8)     first n hex digits of the sha256 of the value's text

The sandbox refuses attribute access to Python internals (`''.__class__` ...), a name the template
uses but the caller did not supply is an error naming it, and string/list repetition and powers are
bounded so a template cannot exhaust memory.
"""
from __future__ import annotations

import functools
import hashlib
import operator
import re
import string
import unicodedata
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from sdbake.schemas.errors import OutputError
from sdbake.stages.output.template_limits import BoundedTemplates, render_bounded

TEMPLATE_VARIABLES: dict[str, str] = {
    "name": "the recipe's name",
    "seed": "this image's seed",
    "steps": "total sampling steps",
    "cfg": "CFG scale",
    "sampler": "sampler id (ComfyUI spelling)",
    "scheduler": "sigma schedule id",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "model_name": "checkpoint name without extension",
    "model_hash": "A1111 short hash of the checkpoint (10 hex)",
    "prompt": "resolved positive prompt",
    "negative": "resolved negative prompt",
    "prompt_hash": "first 8 hex of sha256(prompt)",
    "batch_index": "index of the image in its batch",
    "stage": "id of the save stage",
    "date": "run date, YYYY-MM-DD",
    "datetime": "run date and time, YYYYMMDD-HHMMSS",
    "recipe_hash": "hash of the canonical recipe",
}

MAX_RENDERED_CHARS = 4096          # a path longer than this is a template bug, not a file name
MAX_REPEAT_ITEMS = 10_000          # bound on `'a' * n` so a template cannot allocate gigabytes
MAX_POWER_EXPONENT = 1_000         # bound on `x ** n` (big-integer powers are slow to compute)

# As A1111's prompt_words: words are what is left between runs of whitespace and punctuation.
_NON_WORD_RUN = re.compile(r"[\s" + re.escape(string.punctuation) + r"]+")
# Extra-network tags such as <lora:name:0.8> name a file, not what the image shows.
_EXTRA_NETWORK_TAG = re.compile(r"<[^<>]*>")
# The weight of `(word:1.2)`, `[a:b:0.5]`: a number after a colon right before a closing bracket.
_TRAILING_WEIGHT = re.compile(r":\s*-?\d*\.?\d+\s*(?=[)\]])")
_NON_SLUG_RUN = re.compile(r"[^a-z0-9]+")


def prompt_words(text: Any, n: int) -> str:
    """The first n words of a prompt, joined by spaces; `empty` when it has none (as A1111)."""
    cleaned = _TRAILING_WEIGHT.sub("", _EXTRA_NETWORK_TAG.sub(" ", str(text)))
    words = [word for word in _NON_WORD_RUN.split(cleaned) if word]
    return " ".join(words[: int(n)]) or "empty"


def slug(text: Any, n: int | None = None) -> str:
    """Lowercase ASCII words joined by `-` (accents folded, other scripts dropped), cut to n chars."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    joined = _NON_SLUG_RUN.sub("-", ascii_text.lower()).strip("-")
    if n is not None:
        joined = joined[: int(n)].rstrip("-")
    return joined


def short_hash(value: Any, n: int = 8) -> str:
    """First n hex digits of sha256 of the value's text (A1111's prompt_hash uses n=8)."""
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()[: int(n)]


class _PathTemplateEnvironment(BoundedTemplates, SandboxedEnvironment):
    """The jinja2 sandbox, with `*`, `**`, `+` and `%` bounded (the stock sandbox leaves them unchecked),
    and loops, string sizes and time bounded (template_limits.py)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name in ("+", "%"):
            return _bounded_add_or_format(operator_name, left, right)
        if operator_name == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) \
                        and len(seq) * count > MAX_REPEAT_ITEMS:
                    raise SecurityError(f"repetition longer than {MAX_REPEAT_ITEMS} items")
            return operator.mul(left, right)
        if isinstance(right, (int, float)) and abs(right) > MAX_POWER_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_POWER_EXPONENT}")
        return operator.pow(left, right)


def _bounded_add_or_format(operator_name: str, left: Any, right: Any) -> Any:
    from sdbake.stages.output.template_limits import check_format, check_text
    if operator_name == "%":
        check_format(left)
        return check_text(operator.mod(left, right))
    return check_text(operator.add(left, right))


def _environment() -> SandboxedEnvironment:
    env = _PathTemplateEnvironment(autoescape=False, undefined=StrictUndefined,
                                   keep_trailing_newline=False)
    env.install_bounds()
    env.filters["words"] = prompt_words
    env.filters["slug"] = slug
    env.filters["hash"] = short_hash
    return env


_ENV = _environment()


@functools.lru_cache(maxsize=256)
def _compiled(template: str):
    """A template compiled once per process: every image of every stage renders the same few paths."""
    return _ENV.from_string(template)


def render_path(template: str, variables: dict) -> str:
    """Render a save-path template with the caller's variables; any failure is an OutputError."""
    try:
        rendered = render_bounded(_compiled(template), variables)
    except RecursionError:
        raise OutputError(f"save path template {template[:80]!r} nests too deep (a macro calling itself?)") \
            from None
    except SecurityError as exc:
        raise OutputError(f"save path template {template!r} is refused by the sandbox: {exc}") from None
    except UndefinedError as exc:
        known = ", ".join(sorted(variables))
        raise OutputError(f"save path template {template!r}: {exc} (variables: {known})") from None
    except TemplateError as exc:
        raise OutputError(f"save path template {template!r} is invalid: {exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        # Raised by an expression the user wrote (e.g. `{{ seed / 0 }}`, `words('x')`).
        raise OutputError(f"save path template {template!r} fails to render: {exc}") from None
    if len(rendered) > MAX_RENDERED_CHARS:
        raise OutputError(f"save path template {template!r} renders {len(rendered)} characters "
                          f"(at most {MAX_RENDERED_CHARS})")
    return rendered
