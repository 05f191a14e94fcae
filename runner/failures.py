"""Every failure a user can cause, as one line on stderr and an exit code (DESIGN.md section 11).

`runner/cli.py` calls `describe_failure` for whatever a command raised: our own errors print as
they are; an OS error names the path and what went wrong (disk full, read-only, not a folder,
permission); running out of memory or recursion depth becomes "input too large / too deep"; image
and safetensors decoding errors name the library. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import os
import sys

EXIT_ERROR = 1
EXIT_BROKEN_PIPE = 141          # 128 + SIGPIPE, what a shell reports for `cmd | head`

_OS_HINTS = {
    errno.ENOSPC: "no space left on the device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists",
    errno.ELOOP: "too many symbolic links (or a link where none is allowed)",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
}


def _os_error_line(err: OSError) -> str:
    reason = _OS_HINTS.get(err.errno) or err.strerror or str(err) or type(err).__name__
    paths = [p for p in (err.filename, err.filename2) if p is not None]
    where = " -> ".join(os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in paths)
    return f"{where}: {reason}" if where else reason


def _third_party_line(err: BaseException) -> str | None:
    """PIL and safetensors errors raised from deep inside a stage: the library and its message."""
    module = type(err).__module__ or ""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if module.startswith("PIL"):
        return f"image file refused: {text}"
    if module.startswith("safetensors") or type(err).__name__ == "SafetensorError":
        return f"safetensors file refused: {text}"
    return None


def describe_failure(err: BaseException) -> tuple[str, int] | None:
    """(one line for stderr, exit code) for a failure a user can cause; None for a bug."""
    from sdbake.schemas.errors import SdbakeError
    if isinstance(err, SdbakeError):
        return str(err), EXIT_ERROR
    if isinstance(err, RecursionError):
        return "input too deep: nesting exceeds what sdbake can process (Python's recursion limit)", EXIT_ERROR
    if isinstance(err, MemoryError):
        return "input too large: sdbake ran out of memory processing it", EXIT_ERROR
    third_party = _third_party_line(err)
    if third_party is not None:
        return third_party, EXIT_ERROR
    if isinstance(err, OSError):
        return _os_error_line(err), EXIT_ERROR
    return None


def silence_broken_pipe() -> int:
    """After EPIPE on stdout (`sdbake ... | head`): no message, and no second error at exit when
    Python flushes stdout again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass                  # stdout is not a real file (a test's capture): nothing to flush later
    return EXIT_BROKEN_PIPE
