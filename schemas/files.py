"""Input files must be regular files: reading /dev/zero or a FIFO named as a checkpoint, image or
recipe would never end (hashing /dev/zero reads forever; opening a FIFO waits for a writer)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from sdbake.schemas.errors import InputFileError, SdbakeError


def require_regular_file(path: str | Path, what: str = "input file",
                         error: type[SdbakeError] = InputFileError) -> Path:
    """path, if it is a regular file (links to one are fine); otherwise `error` naming what it is."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode          # stat never blocks, even on a FIFO
    except FileNotFoundError:
        raise error(f"{what} not found", file=str(path)) from None
    except OSError as err:
        raise error(f"{what} cannot be read: {err.strerror}", file=str(path)) from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise error(f"{what} is {kind}: sdbake reads only regular files", file=str(path))
    return path
