"""Processes as both sides see them: whether one is alive, and signalling a job.

Used by the controller (its job's end) and by the CLI (``cedana job kill``,
a dump ending the dumped job), so it belongs to neither.
"""

from __future__ import annotations

import contextlib
import os
import signal


def process_alive(pid: int | None) -> bool:
    """Whether ``pid`` names a process that has not ended (zombies have)."""
    if not pid or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    # The state follows the parenthesised command name, which may hold anything.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"x")


def signal_job(pid: int, pid_namespace: bool, sig: int = signal.SIGKILL) -> None:
    # The init of a PID namespace only gets signals it handles, SIGKILL
    # excepted; when it dies, the kernel kills everything else in the namespace.
    with contextlib.suppress(ProcessLookupError):
        if pid_namespace:
            os.kill(pid, sig)
        else:
            os.killpg(pid, sig)
