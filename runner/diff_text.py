"""A recipe diff (runner/diff.py) as text: the unified-diff-like report of `sdbake diff` and of a
failed `sdbake check` case, coloured on a terminal."""
from __future__ import annotations

import json
from typing import Any

from sdbake.runner.diff import Change, RecipeDiff, consequence_line

COLOURS = {"added": "32", "removed": "31", "changed": "33", "moved": "36", "header": "1", "reused": "32",
           "re-run": "33"}


def _paint(text: str, kind: str, colour: bool) -> str:
    return f"\033[{COLOURS[kind]}m{text}\033[0m" if colour and kind in COLOURS else text


def show_value(value: Any) -> str:
    if value is None:
        return "(unset)"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _change_line(change: Change, colour: bool) -> str:
    arrow = f"{_paint(show_value(change.old), 'removed', colour)} -> {_paint(show_value(change.new), 'added', colour)}"
    return f"    {change.field}: {arrow}"


def format_text(diff: RecipeDiff, colour: bool = False) -> str:
    lines = [_paint(f"--- {diff.a}", "removed", colour), _paint(f"+++ {diff.b}", "added", colour)]
    if diff.identical:
        return "\n".join(lines + ["identical: every stage would be reused from cache"]) + "\n"
    if diff.recipe:
        lines.append(_paint("recipe:", "header", colour))
        lines += [_change_line(c, colour) for c in diff.recipe]
    changed_models = [m for m in diff.models if m.status != "same" or m.note]
    if changed_models:
        lines.append(_paint("models:", "header", colour))
        for model in changed_models:
            lines.append(f"  {model.name}: {_paint(model.status, model.status, colour)}"
                         + (f" ({model.note})" if model.note else ""))
            lines += [_change_line(c, colour) for c in model.changes]
            lines += [_change_line(Change(f"sha256 {c.field}", c.old, c.new), colour) for c in model.files]
    lines.append(_paint("stages:", "header", colour))
    for stage in diff.stages:
        where = (f"at {stage.new_index}" if stage.status == "added" else f"was at {stage.old_index}"
                 if stage.status == "removed" else f"{stage.old_index} -> {stage.new_index}" if stage.moved else "")
        status = _paint(stage.status, stage.status, colour)
        moved = _paint(" moved", "moved", colour) if stage.moved else ""
        outcome = f"  [{_paint(stage.outcome, stage.outcome, colour)}]" if stage.outcome != "removed" else ""
        reason = f" ({stage.reason})" if stage.reason else ""
        name = stage.id if stage.id.split("-")[0] == stage.type else f"{stage.id} ({stage.type})"
        lines.append(f"  {name}: {status}{moved}{' ' + where if where else ''}{outcome}{reason}")
        lines += [_change_line(c, colour) for c in stage.changes + stage.inputs]
    if diff.wildcards:
        lines.append(_paint("wildcard files:", "header", colour))
        for wildcard in diff.wildcards:
            old = wildcard.old[:12] if wildcard.old else "not found"
            new = wildcard.new[:12] if wildcard.new else "not found"
            lines.append(f"  __{wildcard.name}__: {old} -> {new}")
    lines.append(_paint("consequence: ", "header", colour) + consequence_line(diff))
    if diff.note:
        lines.append(f"note: {diff.note}")
    return "\n".join(lines) + "\n"
