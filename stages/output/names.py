"""Turn a rendered save path into a safe path relative to the output root.

Each `/`-separated component is sanitized as A1111 does (`#<>:"/\\|?*`, newline, CR and tab become
`_`, leading spaces and trailing spaces and dots go, each part is cut to a maximum length); we also
replace every other control character (NUL included), keep names visible (ComfyUI's empty prefix
wrote `._00001_.png`: a name that would start with a dot, or be empty, gets `image` in front), drop
invisible format characters (bidi overrides, zero-width spaces), add
`_` to Windows' reserved device names, and cut lengths on UTF-8 character boundaries so that a name
also fits the 255-byte limit of common filesystems. A `..` component, an absolute path, a drive
letter or a symlink that leads out of the root is an OutputError.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from sdbake.schemas.errors import OutputError

# As A1111's sanitize_filename_part: these characters are refused by some filesystem, or are path
# separators; each becomes `_`. All other control characters (0x00-0x1f, 0x7f) are added.
_REFUSED_CHARS = '#<>:"/\\|?*' + "".join(chr(c) for c in range(32)) + "\x7f"
_REPLACE_REFUSED = {ord(c): "_" for c in _REFUSED_CHARS}
# Windows opens a device instead of a file for these names, with or without an extension.
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_MAX_COMPONENT_BYTES = 255         # ext4, NTFS, APFS: 255 bytes (or UTF-16 units) per name
_MAX_SUFFIX_CHARS = 10             # `.png`, `.webp`, `.jpeg`: a longer "suffix" is part of the name
VISIBLE_FALLBACK = "image"


def _cut_utf8(text: str, max_chars: int, max_bytes: int) -> str:
    """Cut to max_chars characters and max_bytes UTF-8 bytes, never inside a character."""
    text = text[:max_chars]
    while len(text.encode("utf-8")) > max_bytes:
        text = text[:-1]
    return text


def _split_suffix(component: str) -> tuple[str, str]:
    """(stem, `.ext`) when the component ends with a short extension, else (component, '')."""
    dot = component.rfind(".")
    suffix = component[dot:] if dot > 0 else ""
    if not suffix or len(suffix) > _MAX_SUFFIX_CHARS or " " in suffix:
        return component, ""
    return component[:dot], suffix


def _visible(text: str) -> str:
    """Without invisible format characters (bidi overrides such as U+202E, which show
    `gnp.exe` as `exe.png`; zero-width spaces and joiners; BOM): a name reads as what it is.
    Line and paragraph separators become `_` like the other line breaks."""
    return "".join("_" if unicodedata.category(c) in ("Zl", "Zp") else c
                   for c in text if unicodedata.category(c) != "Cf")


def sanitize_component(component: str, max_chars: int = 128) -> str:
    """One file or folder name made safe; '' when nothing is left (the caller decides)."""
    text = _visible(component).translate(_REPLACE_REFUSED).lstrip(" ")
    stem, suffix = _split_suffix(text)
    # Cut the stem, not the extension: `<long prompt>.png` must stay a .png.
    budget_chars = max(max_chars - len(suffix), 1)
    budget_bytes = _MAX_COMPONENT_BYTES - len(suffix.encode("utf-8"))
    stem = _cut_utf8(stem, budget_chars, budget_bytes).rstrip(" .")
    text = (stem + suffix).rstrip(" .")
    device, dot, rest = text.partition(".")
    if device.rstrip(" ").upper() in _WINDOWS_RESERVED:    # `CON.png` is the console on Windows
        text = device + "_" + dot + rest
    if text.startswith("."):
        text = VISIBLE_FALLBACK + text        # `.png` -> `image.png`, `.hidden` -> `image.hidden`
    return text


def _refuse_escaping(rendered: str) -> None:
    if rendered.startswith(("/", "\\")):
        raise OutputError(f"save path {rendered!r} is absolute: it must be relative to the output folder")
    if _DRIVE_LETTER.match(rendered):
        raise OutputError(f"save path {rendered!r} starts with a drive letter: it must be relative "
                          "to the output folder")
    if any(part == ".." for part in re.split(r"[/\\]", rendered)):
        raise OutputError(f"save path {rendered!r} contains '..': it must stay inside the output folder")


def safe_relative_path(rendered: str, root: Path, max_component: int = 128) -> Path:
    """A path relative to root, every component sanitized; root / result stays inside root."""
    _refuse_escaping(rendered)
    *folders, file_name = rendered.split("/")
    # Empty and `.` folder components collapse, as in any path; the file name is never empty
    # (`out/` and `out/.` name a folder: the file in it gets the fallback name).
    safe_folders = [name for name in (sanitize_component(f, max_component) for f in folders) if name]
    safe_file = sanitize_component(file_name, max_component) or VISIBLE_FALLBACK
    relative = Path(*safe_folders, safe_file)
    _require_inside(root, relative, rendered)
    return relative


def _require_inside(root: Path, relative: Path, rendered: str) -> None:
    """Resolve symlinks of the parts that exist: a link under root may point anywhere."""
    resolved_root = root.resolve()
    target = (resolved_root / relative).resolve()
    if not target.is_relative_to(resolved_root):
        raise OutputError(f"save path {rendered!r} leads outside the output folder {str(root)!r} "
                          f"(to {str(target)!r}, through a symbolic link)")


def safe_relative_folder(rendered: str, root: Path) -> Path:
    """A folder relative to root (A1111's directory name pattern), each component sanitized; `Path('.')`
    when nothing is left."""
    _refuse_escaping(rendered)
    parts = [name for name in (sanitize_component(f, _MAX_COMPONENT_BYTES) for f in rendered.split("/")) if name]
    relative = Path(*parts)
    _require_inside(root, relative, rendered)
    return relative


def safe_file_name(name: str) -> str:
    """A whole file name made by an A1111 pattern: its parts were cut to 128 characters already, so the
    name is cut only to what filesystems hold (255 bytes), keeping its extension."""
    return sanitize_component(name, _MAX_COMPONENT_BYTES) or VISIBLE_FALLBACK
