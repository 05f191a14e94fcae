"""Recipe data from an importer -> the TOML text `sdbake import` writes, and writing it without overwriting.

Every importer (A1111 infotext, ComfyUI workflows) returns the recipe as the plain dict a recipe file holds
and a list of the settings it could not map; those become `# unmapped: ...` comment lines above the recipe,
so a user sees what the source said that the recipe does not do. No torch here.
"""
from __future__ import annotations

import json
from pathlib import Path

from sdbake.schemas.errors import OutputError

UNMAPPED_PREFIX = "# unmapped: "


def comment_text(text: str) -> str:
    """One comment line's worth of text: newlines and other control characters are escaped, so a value
    taken from a foreign file can never end the comment and become TOML."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def _literal(value) -> str:
    """A TOML value on one line: tables and arrays inline, strings as TOML basic strings."""
    import tomli_w
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_literal(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")


def _key(key: str) -> str:
    return key if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key) else json.dumps(key)


def _is_table_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def recipe_toml(recipe: dict, unmapped: list[str] = (), header: list[str] = ()) -> str:
    """The recipe file: header comment lines, one `# unmapped: ...` line per setting that has no
    sdbake equivalent, then the recipe: top-level values, tables (`[models.base]`), and every list of
    tables (stages) as `[[stages]]` blocks, in the order the dict holds them."""
    lines = [f"# {comment_text(line)}" if line else "#" for line in header]
    lines += [UNMAPPED_PREFIX + comment_text(note) for note in unmapped]
    if lines:
        lines.append("")
    plain = {k: v for k, v in recipe.items() if not isinstance(v, dict) and not _is_table_list(v)}
    lines += [f"{_key(k)} = {_literal(v)}" for k, v in plain.items()]
    for name, value in recipe.items():
        if isinstance(value, dict):
            lines += _table([name], value)
        elif _is_table_list(value):
            for item in value:
                lines += ["", f"[[{_key(name)}]]", *(f"{_key(k)} = {_literal(v)}" for k, v in item.items())]
    return "\n".join(lines) + "\n"


def _table(path: list[str], table: dict) -> list[str]:
    """`[a.b]` with its values, then its sub-tables; an empty table that has sub-tables gets no header."""
    values = [f"{_key(k)} = {_literal(v)}" for k, v in table.items() if not isinstance(v, dict)]
    nested = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    lines = ["", f"[{'.'.join(_key(p) for p in path)}]", *values] if values or not nested else []
    for key, value in nested:
        lines += _table([*path, key], value)
    return lines


def write_new_file(path: Path, text: str, force: bool = False) -> None:
    """Write text to path; an existing file is an error unless force (then it is replaced atomically)."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputError("already exists: not overwriting it (choose another -o, or --force)", file=str(path))
    if path.exists() and not path.is_file():
        raise OutputError("exists and is not a file", file=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not force:
        with open(path, "x", encoding="utf-8") as out:       # "x": a file made meanwhile is not overwritten
            out.write(text)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
