"""Recipe data from an importer -> the TOML text `sdbake import` writes, and writing it without overwriting.

Every importer (A1111 infotext, ComfyUI workflows) returns the recipe as the plain dict a recipe file holds
and a list of the settings it could not map; those become `# unmapped: ...` comment lines above the recipe,
so a user sees what the source said that the recipe does not do. No torch here.
"""
from __future__ import annotations

from pathlib import Path

from sdbake.schemas.errors import OutputError

UNMAPPED_PREFIX = "# unmapped: "


def comment_text(text: str) -> str:
    """One comment line's worth of text: newlines and other control characters are escaped, so a value
    taken from a foreign file can never end the comment and become TOML."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def recipe_toml(recipe: dict, unmapped: list[str] = (), header: list[str] = ()) -> str:
    """The recipe file: header comment lines, one `# unmapped: ...` line per setting that has no
    sdbake equivalent, then the recipe's tables in the order the dict holds them."""
    import tomli_w
    lines = [f"# {comment_text(line)}" if line else "#" for line in header]
    lines += [UNMAPPED_PREFIX + comment_text(note) for note in unmapped]
    body = tomli_w.dumps(recipe)
    return "\n".join(lines) + ("\n\n" if lines else "") + body


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
