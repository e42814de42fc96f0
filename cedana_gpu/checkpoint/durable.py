"""Getting a checkpoint onto the disk: fsync of files and directories.

A ``write`` returns once the bytes are in the page cache; a power loss then
loses them, and a ``rename`` is only durable once its directory is synced.
A dump therefore syncs every file of the checkpoint and every directory in
it (``sync_tree``) before the rename that commits it, then the directory it
was renamed in (``fsync_dir``), and only then records it and ends the job:
from the moment a dump returns, the checkpoint survives a crash.

``sync_tree`` also makes the tree private (files 0600, directories 0700)
whatever the writers' umasks were (CRIU writes its images 0644): a
checkpoint holds the job's memory.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cedana_gpu.errors import CheckpointError

SYNC_WORKERS = 8
"""fsync waits on the disk, not the CPU: several at once keep a fast disk busy."""

FILE_MODE = 0o600
DIR_MODE = 0o700


WRITEBACK_STEP = 32 << 20
"""Start the writeback of a file being written every this many bytes."""
_SYNC_FILE_RANGE_WRITE = 2


def _libc_sync_file_range() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    # The process's own symbols (libc among them): no library search, which
    # would run ldconfig at import time.
    try:
        fn = ctypes.CDLL(None, use_errno=True)["sync_file_range"]
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _libc_sync_file_range()


def start_writeback(fd: int, flushed: int, end: int) -> int:
    """Ask the kernel to start writing ``fd``'s bytes [flushed, end) to disk, without
    waiting (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), once there are at least
    ``WRITEBACK_STEP`` of them; returns the new ``flushed``.

    Only a head start: it makes nothing durable (no metadata, no disk cache
    flush), the fsync before the commit does. Where the call is missing or
    refused, nothing changes but the timing."""
    if _sync_file_range is None or end - flushed < WRITEBACK_STEP:
        return flushed
    _sync_file_range(fd, flushed, end - flushed, _SYNC_FILE_RANGE_WRITE)
    return end


@dataclass
class SyncStats:
    files: int = 0
    directories: int = 0
    bytes: int = 0


def _fail(path: str | os.PathLike[str], e: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write {path} to disk: {e.strerror or e}")


def _fsync(path: str | os.PathLike[str], flags: int, mode: int | None) -> int:
    """Open ``path`` read-only, set its mode, fsync it; its size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            os.fsync(fd)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
    except OSError as e:
        raise _fail(path, e) from None


def fsync_file(path: str | os.PathLike[str], mode: int | None = FILE_MODE) -> int:
    """fsync one file (its data and inode, whoever wrote it); its size."""
    return _fsync(path, os.O_NOFOLLOW, mode)


def fsync_dir(path: str | os.PathLike[str], mode: int | None = None) -> None:
    """fsync a directory: its entries (names created, renamed, removed) reach the disk."""
    _fsync(path, os.O_DIRECTORY, mode)


def sync_tree(root: str | os.PathLike[str], workers: int = SYNC_WORKERS) -> SyncStats:
    """fsync every file below ``root``, then every directory, deepest first.

    Files first: a directory's entry for a file is only worth syncing once
    the file's data is on disk. Raises ``CheckpointError`` (one line) for the
    first file that cannot be synced (ENOSPC, EIO surface here when the
    writeback failed)."""
    files: list[Path] = []
    dirs: list[Path] = []
    try:
        for base, _dirnames, names in os.walk(root, onerror=_raise):
            dirs.append(Path(base))
            files.extend(Path(base) / n for n in names)
    except OSError as e:
        raise _fail(e.filename or root, e) from None
    stats = SyncStats(files=len(files), directories=len(dirs))
    if files:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(files)))) as pool:
            stats.bytes = sum(pool.map(fsync_file, files))
    for d in reversed(dirs):  # os.walk is top-down: deepest last
        fsync_dir(d, DIR_MODE)
    return stats


def _raise(e: OSError) -> None:
    raise e
