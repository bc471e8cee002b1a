"""The one safe-write path: atomic writes, output folders and files, with one-line errors.

`atomic_write` leaves either the old file or the new one, whole, whatever happens (a crash, a
kill -9, a full disk). Every `OSError` on the way out is turned into a `UserError` that names
the path and the cause (read-only file system, disk full, permission denied, a file where a
folder should be), so no command shows a traceback for them. Temporary files carry the writer's
process id (`.NAME.PID.XXXX.tmp`); those of processes that no longer run are left-overs of an
interrupted save and are removed at the next save of the same file, or by `remove_stale_temps`
when a command starts on a folder.
"""

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from torchtutor.runtime.errors import UserError

_REASONS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file of that name is in the way",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EFBIG: "the file is too large for this file system or limit",
    errno.EIO: "input/output error",
}


class WriteError(UserError):
    """A file or folder could not be written; the message says which and why."""


def reason(exc: OSError) -> str:
    """A short human reason for an OSError, without the path (callers name the path)."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    text = exc.strerror or str(exc) or type(exc).__name__
    return text.splitlines()[0][:120]


def write_error(path: str | os.PathLike, exc: OSError, kept: bool = False) -> WriteError:
    """`cannot write PATH: REASON` (plus that the previous version is intact, when it is)."""
    tail = "; the previous version is intact" if kept else ""
    return WriteError(f"cannot write {path}: {reason(exc)}{tail}")


def check_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, before any work is done, a folder path that names a file (or lies under one)."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "is a file" if part == path else f"lies under {part}, which is a file"
                raise WriteError(f"{what} {path} {where}, not a folder")
            break
    return path


def make_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create folder `path` (and its parents) or say in one line why it cannot be."""
    path = check_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(f"{what} {path}: a file is in the way of the folder") from None
    except OSError as exc:
        raise WriteError(f"cannot create folder {path} ({what}): {reason(exc)}") from None
    return path


def output_file(path: str | os.PathLike, what: str = "--out",
                replaceable: Callable[[Path], bool] | None = None) -> Path:
    """Check that `path` may be written as a file: not a folder, and not an unrelated file.

    An existing file is replaced only when `replaceable(path)` says it is one this command
    wrote before (a previous export, say); without `replaceable` any file may be replaced.
    """
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{what} {path} is a folder; name a file")
    if path.exists() and replaceable is not None and not replaceable(path):
        raise WriteError(f"{what} {path} exists and is not a file this command wrote; "
                         "remove it or pick another name")
    return path


def _temp_prefix(name: str) -> str:
    return f".{name}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own temporaries are removed as they fail; any left are stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# `.NAME.PID.XXXXXXXX.tmp` (mkstemp's 8 random characters); older versions wrote no PID.
_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")


def _is_stale(temp_name: str, target_name: str | None) -> bool:
    """Whether `temp_name` is a temporary file of an interrupted save (of `target_name`)."""
    match = _TEMP.match(temp_name)
    if match is None:
        return False
    if target_name is not None and match["name"] != target_name:
        # The lazy match may have cut NAME short at a digits-only part; check the prefix.
        if not temp_name.startswith(_temp_prefix(target_name)):
            return False
    pid = match["pid"]
    return pid is None or not _pid_alive(int(pid))


def remove_stale_temps(folder: str | os.PathLike, target_name: str | None = None) -> int:
    """Delete left-over temporary files of interrupted saves in `folder`; return how many.

    With `target_name`, only those of that file; without it, those of any file whose writer's
    process is gone. Errors are ignored: clean-up never stops a command.
    """
    folder = Path(folder)
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not _is_stale(entry.name, target_name):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed


def temp_folder(target: Path) -> Path:
    """A new temporary folder beside `target` (`.NAME.PID.XXXXXXXX.tmp`), to build a folder
    in and rename into place; `remove_stale_temp_folders` knows its name."""
    return Path(tempfile.mkdtemp(prefix=f"{_temp_prefix(target.name)}{os.getpid()}.",
                                 suffix=".tmp", dir=target.parent))


def remove_stale_temp_folders(target: Path) -> int:
    """Delete the temporary folders of `target` (`temp_folder`) whose writer's process is gone
    (a kill -9 mid-build); return how many. Errors are ignored, as in `remove_stale_temps`."""
    removed = 0
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and _is_stale(entry.name, target.name):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's
    /proc), else set and restored at once (os.umask has no read-only form)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(f)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    The temporary file lives in the same folder so the rename never crosses file systems. Any
    OSError becomes a one-line WriteError; the previous file is untouched either way.
    """
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"cannot write {path}: it is a folder")
    make_folder(path.parent, "folder")
    remove_stale_temps(path.parent, path.name)
    existed = path.exists()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{_temp_prefix(path.name)}{os.getpid()}.",
                                        suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc, kept=existed) from None
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file 0600; the user's files get the mode `open` would give.
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, UserError):
            raise write_error(path, exc, kept=existed) from None
        raise
    _fsync_dir(path.parent)
    return path


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make `path` hold what `source` holds, atomically, without a second copy: a hard link
    renamed over `path` (a later atomic write of `source` leaves `path` as it was). Where the
    file system has no hard links, a copy."""
    source, path = Path(source), Path(path)
    tmp = path.parent / f"{_temp_prefix(path.name)}{os.getpid()}.linktemp.tmp"  # as _TEMP
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(source, tmp)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        with open(source, "rb") as f:
            return atomic_write(path, lambda out: shutil.copyfileobj(f, out))
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def open_append(path: str | os.PathLike):
    """`open(path, 'a')` for text logs, with a one-line error when it cannot be opened."""
    path = Path(path)
    make_folder(path.parent, "folder")
    try:
        return open(path, "a", newline="", encoding="utf-8")
    except OSError as exc:
        raise write_error(path, exc) from None
