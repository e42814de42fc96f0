"""A job's standard input when it is started with one (``cedana exec -i``).

The job reads a named FIFO in its directory (``<job dir>/stdin``). Its
controller holds the FIFO open for writing too (the *keeper*), so the job
never sees end-of-file when the writer of the moment goes away: clients
attach and detach, the daemon restarts, and the job just waits for more.
Input comes from whoever opens the FIFO for writing (the daemon's Attach);
``close_stdin`` (a control op) closes the keeper, and the job sees
end-of-file once the last writer has gone, as ``docker run -i`` does.

Checkpoint/restore: the job's end of the FIFO is dumped by CRIU as an
external file (``--external file[mnt:ino]``, as the log is) and the
restored job is handed its new directory's FIFO (``--inherit-fd``), opened
through the keeper, so input sent after the restore reaches the restored
job, and input the job had not read yet is kept (CRIU saves a FIFO's data).
Jobs started without ``-i`` keep reading /dev/null.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
from pathlib import Path

from cedana_gpu.errors import CedanaError

FIFO = "stdin"
"""Its name in the job's directory."""


class StdinError(CedanaError):
    """A job's standard input cannot be opened or written."""


def fifo_path(job_dir: Path) -> Path:
    return job_dir / FIFO


class Keeper:
    """The controller's write end of the job's FIFO, held for the job's life."""

    def __init__(self, job_dir: Path) -> None:
        self.path = fifo_path(job_dir)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # an earlier job's of the same id
        os.mkfifo(self.path, 0o600)
        # O_RDWR: never blocks, and counts as a writer for as long as it is open.
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)

    def job_end(self) -> int:
        """A new read end for the job's stdin (the caller closes it once handed on)."""
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> bool:
        """Stop holding the FIFO: the job sees end-of-file once no writer is left."""
        if self.fd is None:
            return False
        os.close(self.fd)
        self.fd = None
        return True


def no_input(jid: str) -> str:
    return f"job {jid} reads /dev/null: start it with 'cedana exec -i' to send it input"


WAIT_SLICE = 0.5
"""How often a writer waiting for a full FIFO asks whether its client is still there."""


def open_writer(job_dir: Path, jid: str) -> int:
    """A non-blocking write end of job ``jid``'s FIFO (``write_all`` waits on it),
    or StdinError saying why not."""
    path = fifo_path(job_dir)
    try:
        # Non-blocking open: fails (ENXIO) instead of waiting when nobody reads it.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StdinError(no_input(jid)) from None
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise StdinError(f"job {jid} no longer reads its input (it has ended)") from None
        raise StdinError(f"cannot open job {jid}'s input {path}: {e.strerror}") from None
    return fd


def write_all(fd: int, data: bytes, jid: str, gone: threading.Event | None = None) -> None:
    """All of ``data`` into the FIFO, waiting while it is full (the job is not
    reading, or is frozen for a dump), but not for a client that is ``gone``:
    the daemon's writer must not wait for ever on a job nobody feeds any more."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            if gone is not None and gone.is_set():
                raise StdinError(
                    f"job {jid} was not reading its input when its client went away: "
                    f"{len(view)} bytes not sent"
                ) from None
            select.select([], [fd], [], WAIT_SLICE)
            continue
        except BrokenPipeError:
            raise StdinError(f"job {jid} closed its input (or ended)") from None
        view = view[n:]
