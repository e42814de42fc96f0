"""What a dump leaves behind when its process dies before its undos can run.

A failed or interrupted dump removes its partial checkpoint itself (the
undos of ``cr.dump``), but a ``cedana dump`` killed with SIGKILL runs no
undo. So a dump starts a ``Janitor`` as soon as it creates its partial
directory: a shell, in a session of its own (a terminal's Ctrl-C does not
reach it), reading a pipe from the dump. When the pipe closes (the dump
ended, however) the janitor removes the paths it was given (the partial
directory, the partial archive, the checkpoint not yet recorded) unless the
dump said ``keep`` first, once its checkpoint was recorded in the job store.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

# An orphaned CRIU (its dump killed) may still be writing into the partial
# directory, and rm fails on a directory that gained a file: try again.
_SCRIPT = (
    'read -r word; [ "$word" = keep ] && exit 0; n=0; '
    'until rm -rf -- "$@" 2>/dev/null || [ "$n" -ge 100 ]; do n=$((n + 1)); sleep 0.1; done'
)


class Janitor:
    """Removes ``paths`` once this process closes the pipe, unless told to keep them."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._proc = subprocess.Popen(
            ["sh", "-c", _SCRIPT, "cedana-dump-janitor", *(str(p) for p in paths)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    def keep(self) -> None:
        """The checkpoint is recorded: leave everything as it is."""
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.write(b"keep\n")
        self.close()

    def close(self) -> None:
        """Done: the janitor removes what remains (nothing, after a clean undo)."""
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()
