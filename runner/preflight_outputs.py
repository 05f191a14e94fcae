"""Save and preview paths rendered as the plan will render them (jinja2 templates and A1111 patterns), with a
did-you-mean or the template line for an error, and `on_exists = "error"` meeting a file this recipe did not
make. Part of preflight (preflight.py), kept apart as the checks of one responsibility: output names.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sdbake.schemas.errors import SdbakeError, did_you_mean

Problem = tuple[tuple[Any, ...], str]


def pattern_problems(loaded, where, stage, current, now, output_root) -> list[Problem]:
    """An A1111 pattern rendered as the plan will; with `number = false`, names that exist (a numbered
    name is always free: the writer takes the next number)."""
    from sdbake.runner.kinds.common import pattern_outputs
    try:
        rendered = pattern_outputs(current, stage, now, output_root, current.setdefault("planned", {}))
    except SdbakeError as err:
        return [(where + ("pattern",), err.message)]
    return [] if stage.sequence_number else _existing_problems(loaded, where + ("pattern",), stage, rendered,
                                                                  output_root)


def template_problems(loaded, where, template, stage, current, recipe_hash, now, output_root) -> list[Problem]:
    from sdbake.runner.kinds.common import template_variables
    from sdbake.stages.output.names import safe_relative_path
    from sdbake.stages.output.templates import render_path
    problems: list[Problem] = []
    rendered: list[str] = []
    for batch_index in range(max(1, len(current["seeds"]))):
        variables = template_variables(current, loaded.recipe, stage.id, recipe_hash, now, batch_index)
        try:
            relative = safe_relative_path(render_path(template, variables), output_root)
        except SdbakeError as err:
            return [(where, err.message + _template_hint(template, err.message, variables))]
        text = relative.as_posix()
        if "." not in relative.name:
            text += "." + {"jpeg": "jpg"}.get(getattr(stage, "format", None) or "png", stage.format or "png")
        rendered.append(text)
    return problems + _existing_problems(loaded, where, stage, rendered, output_root)


def _existing_problems(loaded, where, stage, rendered: list[str], output_root: Path) -> list[Problem]:
    problems: list[Problem] = []
    if getattr(stage, "on_exists", None) == "error":
        for text in rendered:
            target = output_root / text
            if target.exists() and not _made_by(target, loaded.recipe.name):
                problems.append((where, (f"{target} already exists and on_exists = \"error\" (it was not made by "
                                        f"this recipe; move it, or set on_exists = \"number\" or \"skip\")")))
    return problems


def _template_hint(template: str, message: str, variables: dict) -> str:
    """did-you-mean for an undefined variable or an unknown filter; the template line of a syntax error."""
    from jinja2 import TemplateSyntaxError
    from jinja2.defaults import DEFAULT_FILTERS
    from jinja2.sandbox import SandboxedEnvironment
    undefined = re.search(r"'(\w+)' is undefined", message)
    if undefined:
        return did_you_mean(undefined.group(1), variables)
    unknown_filter = re.search(r"No filter named '(\w+)'", message)
    if unknown_filter:
        return did_you_mean(unknown_filter.group(1), [*DEFAULT_FILTERS, "words", "slug", "hash"])
    try:
        SandboxedEnvironment().parse(template)
    except TemplateSyntaxError as err:
        column = _syntax_column(template, err.lineno)
        return f" (template line {err.lineno}" + (f", column {column})" if column else ")")
    return ""


def _syntax_column(template: str, line: int) -> int | None:
    """Where an unclosed `{{` or `{%` starts on the template's failing line (1-based)."""
    text = template.splitlines()[line - 1] if 0 < line <= len(template.splitlines()) else ""
    for opening, closing in (("{{", "}}"), ("{%", "%}")):
        start = text.rfind(opening)
        if start >= 0 and text.find(closing, start) < 0:
            return start + 1
    return None


def _made_by(image: Path, recipe_name: str) -> bool:
    """Whether an existing output carries an sdbake recipe of this name (a re-run may write the same bytes,
    which the writer accepts); anything else would be refused at write time."""
    from sdbake.runner.sources import embedded_document
    try:
        document = embedded_document(image)
    except (SdbakeError, OSError, ValueError):
        return False
    recipe = document.get("recipe") if isinstance(document, dict) else None
    return isinstance(recipe, dict) and recipe.get("name") == recipe_name
