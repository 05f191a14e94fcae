"""Write a file under a name that nobody else holds: never overwrite, idempotent, atomic.

The bytes go to a temporary file in the target's folder and are fsynced; the final name is then
claimed with a hard link (`os.link` fails if the name exists), so two processes can never take the
same name and no reader ever sees a half-written file. A target (or one of its numbered siblings
`name-1.ext`, `name-2.ext`, ...) that already holds the same bytes is left alone: re-running an
unchanged recipe writes nothing.
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sdbake.schemas.errors import OutputError

OnExists = Literal["number", "skip", "error"]
WriteStatus = Literal["written", "identical", "skipped"]
_TEMP_PREFIX = ".sdbake-tmp-"
# Filesystems without hard links (FAT, some network shares) answer one of these to os.link.
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


@dataclass(frozen=True)
class WriteResult:
    """Where the bytes are now, and whether this call wrote them."""
    path: Path
    status: WriteStatus


def numbered_name(target: Path, number: int) -> Path:
    """`out/a.png` -> `out/a-2.png` for number 2; number 0 is the target itself."""
    return target if number == 0 else target.with_name(f"{target.stem}-{number}{target.suffix}")


def _numbered_siblings(target: Path) -> list[Path]:
    """The target and its existing `stem-N.ext` siblings, in number order."""
    pattern = re.compile(re.escape(target.stem) + r"-(\d+)" + re.escape(target.suffix) + r"\Z")
    numbered = []
    with os.scandir(target.parent) as entries:
        for entry in entries:
            match = pattern.match(entry.name)
            if match and entry.is_file():
                numbered.append((int(match.group(1)), Path(entry.path)))
    return [target] + [path for _, path in sorted(numbered)]


def _holds_bytes(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False


def _write_temp(folder: Path, data: bytes) -> Path:
    descriptor, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(temp_name)
        raise
    return Path(temp_name)


def _claim(temp: Path, final: Path) -> bool:
    """Give the temp file the final name if nobody holds it; False if taken."""
    try:
        os.link(temp, final)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
    # No hard links here: reserve the name exclusively, then move the full file over it. A reader
    # may see the empty reservation for an instant; two writers still never share a name.
    try:
        os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    os.replace(temp, final)
    return True


def _fsync_folder(folder: Path) -> None:
    if os.name == "nt":                  # Windows cannot open a folder for fsync
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_new_file(target: Path, data: bytes, on_exists: OnExists = "number") -> WriteResult:
    """Write data at target, or next to it; never replace a file that holds other bytes."""
    if on_exists not in ("number", "skip", "error"):
        raise ValueError(f"on_exists must be 'number', 'skip' or 'error', not {on_exists!r}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for existing in _numbered_siblings(target):
        if _holds_bytes(existing, data):
            return WriteResult(existing, "identical")
    if target.exists() and on_exists != "number":
        return _refuse_existing(target, on_exists)

    temp = _write_temp(target.parent, data)
    try:
        number = 0
        while True:
            candidate = numbered_name(target, number)
            if _claim(temp, candidate):
                _fsync_folder(target.parent)
                return WriteResult(candidate, "written")
            # Someone took the name since we looked: maybe a twin run writing the same bytes.
            if _holds_bytes(candidate, data):
                return WriteResult(candidate, "identical")
            if number == 0 and on_exists != "number":
                return _refuse_existing(target, on_exists)
            number += 1
    finally:
        temp.unlink(missing_ok=True)


def _refuse_existing(target: Path, on_exists: OnExists) -> WriteResult:
    if on_exists == "skip":
        return WriteResult(target, "skipped")
    raise OutputError(f"{target} already exists with other content (on_exists = \"error\")")
