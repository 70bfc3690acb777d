"""Atomic file writes: write to a temporary name in the same folder, then rename, so a crash never leaves a
half-written output behind. A full disk, a read-only file system or a folder without write permission is the
user's to fix: it becomes an :class:`OutputWriteError` (an InputError: one line, exit 2 from the CLI), never a
traceback."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError

#: free bytes kept on an output's file system by :func:`check_free_space` (room to close an HDF5 file cleanly,
#: featlab.io.h5); each write also needs twice its data size
RESERVE_BYTES = 256 * 1024
#: errno values that mean "this output cannot be written here" (a user's problem, not a bug)
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class OutputWriteError(InputError):
    """The output cannot be written: disk full, read-only file system, no permission."""


def _human(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def check_free_space(path: str | Path, nbytes: int, what: str) -> None:
    """Raise InputError unless the file system of ``path`` has room for ``nbytes`` of data (twice, for HDF5's
    own structures) plus :data:`RESERVE_BYTES` to close the file cleanly."""
    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # cannot tell: let the write itself fail
        return
    need = 2 * int(nbytes) + 16 * 1024 + RESERVE_BYTES
    if free < need:
        raise OutputWriteError(f"disk full: {_human(free)} free in {folder}, writing {what} needs {_human(need)} "
                               f"(with a {_human(RESERVE_BYTES)} reserve)")


def write_error(e: BaseException, path) -> OutputWriteError | None:
    """The InputError for an OS/HDF5 error that means ``path`` cannot be written (disk full, read-only file
    system, no permission), or None for any other error."""
    code = getattr(e, "errno", None)
    text = str(e)
    if code not in _WRITE_ERRNOS:  # h5py's errors often carry the errno in their text only
        code = next((c for c in _WRITE_ERRNOS if f"errno = {c}," in text), None)
    if code is None and "No space left" in text:
        code = errno.ENOSPC
    if code is None:
        return None
    reason = "disk full" if code in (errno.ENOSPC, errno.EDQUOT) else os.strerror(code).lower()
    return OutputWriteError(f"cannot write {path}: {reason}")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None):
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds, delete it if not.

    ``suffix`` defaults to the target's own suffix so that libraries choosing a format by extension still work.
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise (write_error(e, path) or e) from None
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        # only space and read-only errors: a permission error inside the block may concern another file
        err = write_error(e, path) if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else None
        if err is not None:
            raise err from None
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
