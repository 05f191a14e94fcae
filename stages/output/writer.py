"""Write a file under a name that nobody else holds: never overwrite, idempotent, atomic, confined.

The bytes go to a temporary file in the target's folder and are fsynced; the final name is then
claimed with a hard link (`os.link` fails if the name exists), so two processes can never take the
same name and no reader ever sees a half-written file. A target (or one of its numbered siblings
`name-1.ext`, `name-2.ext`, ...) that already holds the same bytes is left alone: re-running an
unchanged recipe writes nothing.

The path is checked when the bytes are written, not only when the save path was planned: every
folder below the output root is opened with O_NOFOLLOW and everything after that works relative to
the opened folder, so a symbolic link planted while sampling runs cannot redirect the write outside
the root. Files get the mode the umask allows (as any other program's output), and the temporary
files of a writer that was killed (`.sdbake-tmp-<host>-<pid>-*`) are removed by the next write in
the same folder once their process is gone.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sdbake.schemas.errors import OutputError
from sdbake.stages.output.a1111_names import next_sequence_number, numbered

OnExists = Literal["number", "skip", "error"]
WriteStatus = Literal["written", "identical", "skipped"]
_TEMP_PREFIX = ".sdbake-tmp-"
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:40] or "host"
_OWN_TEMP = re.compile(re.escape(_TEMP_PREFIX) + r"(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]{8}\Z")
STALE_TEMP_S = 3600              # a temp file of another machine's writer is stale after this long
# Filesystems without hard links (FAT, some network shares) answer one of these to os.link.
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# Where the OS cannot open relative to a folder (Windows), paths are used, re-checked before the claim.
_AT = os.open in os.supports_dir_fd and os.link in os.supports_dir_fd
_LEADING_DIGITS = re.compile(r"\d*")
_MAX_SEQUENCE_ATTEMPTS = 500


@dataclass(frozen=True)
class WriteResult:
    """Where the bytes are now, and whether this call wrote them."""
    path: Path
    status: WriteStatus


def numbered_name(target: Path, number: int) -> Path:
    """`out/a.png` -> `out/a-2.png` for number 2; number 0 is the target itself."""
    return target if number == 0 else target.with_name(f"{target.stem}-{number}{target.suffix}")


class _Folder:
    """An opened folder: names inside it are used relative to it, never through a link."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd

    def _at(self, name: str) -> tuple[str, dict]:
        return (name, {"dir_fd": self.fd}) if self.fd is not None else (str(self.path / name), {})

    def names(self) -> list[str]:
        with os.scandir(self.fd if self.fd is not None else self.path) as found:
            return [entry.name for entry in found]

    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        where, kw = self._at(name)
        try:
            return os.open(where, flags | _NOFOLLOW, mode, **kw)
        except OSError as err:
            raise _with_path(err, self.path / name) from None

    def lstat(self, name: str) -> os.stat_result:
        where, kw = self._at(name)
        return os.stat(where, follow_symlinks=False, **kw)

    def unlink(self, name: str) -> None:
        where, kw = self._at(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where, **kw)

    def link(self, source: str, target: str) -> None:
        try:
            if self.fd is not None:
                os.link(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
            else:
                os.link(self.path / source, self.path / target)
        except OSError as err:
            raise _with_path(err, self.path / target) from None

    def replace(self, source: str, target: str) -> None:
        if self.fd is not None:
            os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            os.replace(self.path / source, self.path / target)

    def fsync(self) -> None:
        if os.name == "nt":                  # Windows cannot open a folder for fsync
            return
        fd = self.fd if self.fd is not None else os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            if self.fd is None:
                os.close(fd)


def _with_path(err: OSError, path: Path) -> OSError:
    """The same error (same type: FileExistsError stays one) naming the whole path, not the name
    relative to an opened folder, so the user's one error line says where."""
    return OSError(err.errno, err.strerror, str(path))


@contextlib.contextmanager
def _open_folder(root: Path, parts: tuple[str, ...]) -> Iterator[_Folder]:
    """The folder root/parts, created as needed; no part below the root may be a symbolic link."""
    root.mkdir(parents=True, exist_ok=True)
    if not _AT:
        folder = root.joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.resolve().is_relative_to(root.resolve()):
            raise OutputError(f"{folder} leads outside the output folder {root} (through a symbolic link)")
        yield _Folder(folder, None)
        return
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    path = root
    try:
        for part in parts:
            path = path / part
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as err:
                raise _with_path(err, path) from None
            try:
                inner = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OutputError(f"{path} is a symbolic link or a file, not a folder: refused (a link "
                                      f"inside the output folder could lead outside {root})") from None
                raise
            os.close(fd)
            fd = inner
        yield _Folder(path, fd)
    finally:
        os.close(fd)


def _numbered_siblings(folder: _Folder, name: str) -> list[str]:
    """The target's name and its existing `stem-N.ext` siblings, in number order."""
    stem, suffix = os.path.splitext(name)
    pattern = re.compile(re.escape(stem) + r"-(\d+)" + re.escape(suffix) + r"\Z")
    numbered = sorted((int(m.group(1)), n) for n in folder.names() if (m := pattern.match(n)))
    return [name] + [n for _, n in numbered]


def _holds_bytes(folder: _Folder, name: str, data: bytes) -> bool:
    """Whether name is a plain file (not a link) holding exactly data."""
    try:
        fd = folder.open(name, os.O_RDONLY)
    except OSError:
        return False                       # absent, a folder, a link (ELOOP): not our file
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not _is_regular(info) or info.st_size != len(data):
            return False
        return handle.read(len(data) + 1) == data


def _is_regular(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode)


def _exists(folder: _Folder, name: str) -> bool:
    try:
        folder.lstat(name)
        return True
    except FileNotFoundError:
        return False


def _write_temp(folder: _Folder, data: bytes) -> str:
    name = f"{_TEMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # 0o666 minus the umask, as any program's new file (mkstemp's 0600 hid images from other users).
    fd = folder.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        folder.unlink(name)
        # A full or failing disk answers write() with no file name: say which file it was.
        raise _with_path(err, folder.path / name) from None
    except BaseException:
        folder.unlink(name)
        raise
    return name


def _claim(folder: _Folder, temp: str, final: str) -> bool:
    """Give the temp file the final name if nobody holds it; False if taken."""
    try:
        folder.link(temp, final)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
    # No hard links here: reserve the name exclusively, then move the full file over it. A reader
    # may see the empty reservation for an instant; two writers still never share a name.
    try:
        os.close(folder.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    folder.replace(temp, final)
    return True


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False                       # alive, owned by another user
    return False


def clean_stale_temps(folder: _Folder) -> int:
    """Remove temp files that killed writers left in this folder; the number removed."""
    removed = 0
    now = time.time()
    for name in folder.names():
        if not name.startswith(_TEMP_PREFIX):
            continue
        own = _OWN_TEMP.match(name)
        try:
            info = folder.lstat(name)
        except OSError:
            continue
        if not _is_regular(info):
            continue
        if (own and own["host"] == _HOST and int(own["pid"]) != os.getpid() and _process_gone(int(own["pid"]))) \
                or now - info.st_mtime > STALE_TEMP_S:
            folder.unlink(name)
            removed += 1
    return removed


@dataclass
class PendingFile:
    """Bytes made durable in a temporary file beside their target (prepare_new_file), not yet named: the
    slow part of a write (the fsync) can run while the next image is made; commit_new_file names it."""
    target: Path
    root: Path
    data: bytes
    on_exists: OnExists
    temp: str | None                   # None: an identical file was there already, nothing to write
    sequence: bool = False             # an A1111 `NNNNN-` name: the number is the next free one at commit


def _placed(target: Path, root: Path | None, on_exists: OnExists) -> tuple[Path, Path, Path]:
    """(target, output root, target relative to the root), refusing what is not inside the root."""
    if on_exists not in ("number", "skip", "error"):
        raise ValueError(f"on_exists must be 'number', 'skip' or 'error', not {on_exists!r}")
    target = Path(target)
    root = Path(root) if root is not None else target.parent
    try:
        relative = target.relative_to(root)
    except ValueError:
        raise OutputError(f"{target} is not inside the output folder {root}") from None
    if not relative.parts or ".." in relative.parts:
        raise OutputError(f"{target} does not name a file inside the output folder {root}")
    return target, root, relative


def _same_name(folder: _Folder, name: str, sequence: bool) -> list[str]:
    """The names that count as this one: its numbered siblings, or for an A1111 sequence name, the same
    name under any number (`00003-1234-cat.png` is `00000-1234-cat.png` written by an earlier run)."""
    if not sequence:
        return _numbered_siblings(folder, name)
    rest = name[len(_LEADING_DIGITS.match(name).group(0)):]
    same = re.compile(r"\d+" + re.escape(rest) + r"\Z")
    return sorted(n for n in folder.names() if same.match(n))


def prepare_new_file(target: Path, data: bytes, on_exists: OnExists = "number",
                     root: Path | None = None, sequence: bool = False) -> PendingFile:
    """The first half of write_new_file: the bytes in a fsynced temporary file in the target's folder."""
    target, root, relative = _placed(target, root, on_exists)
    with _open_folder(root, relative.parts[:-1]) as folder:
        clean_stale_temps(folder)
        if any(_holds_bytes(folder, existing, data) for existing in _same_name(folder, relative.parts[-1], sequence)):
            return PendingFile(target, root, data, on_exists, None, sequence)
        return PendingFile(target, root, data, on_exists, _write_temp(folder, data), sequence)


def discard_pending(pending: PendingFile) -> None:
    """Remove the temporary file of a write that will not be committed (its stage failed)."""
    if pending.temp is not None:
        relative = pending.target.relative_to(pending.root)
        with _open_folder(pending.root, relative.parts[:-1]) as folder:
            folder.unlink(pending.temp)


def commit_new_file(pending: PendingFile) -> WriteResult:
    """The second half: give the prepared bytes the target's name, or a numbered sibling's; never replace
    a file that holds other bytes. The folders are opened again (a link planted meanwhile is refused)."""
    target, root, relative = _placed(pending.target, pending.root, pending.on_exists)
    name, data, on_exists = relative.parts[-1], pending.data, pending.on_exists
    with _open_folder(root, relative.parts[:-1]) as folder:
        clean_stale_temps(folder)
        temp = pending.temp
        try:
            for existing in _same_name(folder, name, pending.sequence):
                if _holds_bytes(folder, existing, data):
                    return WriteResult(target.with_name(existing), "identical")
            if pending.sequence:
                return _claim_next_number(folder, target, temp if temp is not None else _write_temp(folder, data))
            if _exists(folder, name) and on_exists != "number":
                return _refuse_existing(target, on_exists)
            if temp is None:
                temp = _write_temp(folder, data)
            number = 0
            while True:
                candidate = numbered_name(target, number).name
                if _claim(folder, temp, candidate):
                    folder.fsync()
                    return WriteResult(target.with_name(candidate), "written")
                # Someone took the name since we looked: maybe a twin run writing the same bytes.
                if _holds_bytes(folder, candidate, data):
                    return WriteResult(target.with_name(candidate), "identical")
                if number == 0 and on_exists != "number":
                    return _refuse_existing(target, on_exists)
                number += 1
        finally:
            if temp is not None:
                folder.unlink(temp)


def _claim_next_number(folder: _Folder, target: Path, temp: str) -> WriteResult:
    """As A1111's save_image: the next number after the highest leading number in the folder, read when
    the file is named (another program may have written meanwhile); taken again if someone was faster."""
    rest = target.name[len(_LEADING_DIGITS.match(target.name).group(0)):]
    for _attempt in range(_MAX_SEQUENCE_ATTEMPTS):
        candidate = numbered(next_sequence_number(folder.names()), rest)
        if _claim(folder, temp, candidate):
            folder.fsync()
            return WriteResult(target.with_name(candidate), "written")
    raise OutputError(f"no free sequence number for {target} after {_MAX_SEQUENCE_ATTEMPTS} tries")


def write_new_file(target: Path, data: bytes, on_exists: OnExists = "number",
                   root: Path | None = None, sequence: bool = False) -> WriteResult:
    """Write data at target, or next to it; never replace a file that holds other bytes. With root
    (the output root), no folder between root and target may be a symbolic link at write time. With
    sequence, target's leading number is replaced by the next free one (A1111's `00000-` prefix)."""
    target, root, _ = _placed(target, root, on_exists)
    # An identical file costs no temporary file: a re-run of an unchanged recipe writes nothing.
    return commit_new_file(PendingFile(target, root, data, on_exists, None, sequence))


def _refuse_existing(target: Path, on_exists: OnExists) -> WriteResult:
    if on_exists == "skip":
        return WriteResult(target, "skipped")
    raise OutputError(f"{target} already exists with other content (on_exists = \"error\")")
