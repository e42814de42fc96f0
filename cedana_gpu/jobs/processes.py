"""Processes as both sides see them: whether one is alive, a job's tree, signalling it.

Used by the controller (its job's end) and by the CLI (``cedana job kill``,
a dump ending the dumped job), so it belongs to neither.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time


def stat_fields(pid: int) -> list[bytes] | None:
    """``/proc/<pid>/stat`` from its third field (the state) on; None if it is gone.

    The command name before it is parenthesised and may hold anything
    (spaces, parentheses), so the fields start after its last ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def process_alive(pid: int | None) -> bool:
    """Whether ``pid`` names a process that has not ended (zombies have)."""
    if not pid or pid <= 0:
        return False
    fields = stat_fields(pid)
    return fields is not None and fields[:1] not in ([b"Z"], [b"X"], [b"x"])


def stopped_pids(root: int) -> list[int]:
    """Processes of ``root``'s tree stopped by a signal (state ``T``; not ``t``, traced)."""
    return [pid for pid in tree_pids(root) if (stat_fields(pid) or [b""])[0] == b"T"]


def signal_job(pid: int, pid_namespace: bool, sig: int = signal.SIGKILL) -> None:
    # The init of a PID namespace only gets signals it handles, SIGKILL
    # excepted; when it dies, the kernel kills everything else in the namespace.
    with contextlib.suppress(ProcessLookupError):
        if pid_namespace:
            os.kill(pid, sig)
        else:
            os.killpg(pid, sig)


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (every thread's children)."""
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def resident_bytes(root: int) -> int:
    """Resident memory of ``root`` and its descendants (VmRSS; shared pages counted
    in each): about what CRIU's page images of the tree will hold."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def continue_tree(root: int) -> None:
    """SIGCONT a job left stopped by ``criu dump --leave-stopped``."""
    for pid in tree_pids(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGCONT)


def _tracer(pid: int) -> int:
    """The pid tracing ``pid`` (CRIU, while it dumps), 0 if none or gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def continue_tree_when_released(root: int, timeout: float, poll: float = 0.1) -> bool:
    """SIGCONT the job's tree once no process of it is traced any more.

    For a dump whose client died while CRIU held the job: CRIU (a child of
    the dead client, so still running) finishes or fails on its own and
    leaves the tree stopped (``--leave-stopped``); continuing it while CRIU
    still holds it would race CRIU. Returns False when CRIU still held it
    after ``timeout`` seconds (the tree is then continued anyway: a stopped
    job helps nobody)."""
    deadline = time.monotonic() + timeout
    released = True
    while any(_tracer(pid) for pid in tree_pids(root)):
        if time.monotonic() >= deadline:
            released = False
            break
        time.sleep(poll)
    continue_tree(root)
    return released


def process_identity(pid: int | None = None) -> str | None:
    """``"<pid>:<start time>"`` of a live process (this one by default); None if gone.

    A pid alone names a process only while it lives: once it ends the number
    is reused. With the start time (in clock ticks since boot, from
    ``/proc/<pid>/stat``) the pair names one process for the machine's
    uptime, so a record of who owns something (an unfinished dump) can be
    told apart from a later process that got the same pid."""
    pid = os.getpid() if pid is None else pid
    fields = stat_fields(pid)
    # Field 22 (starttime) of proc(5); fields[0] is field 3 (state).
    try:
        return f"{pid}:{int(fields[19])}" if fields else None
    except (IndexError, ValueError):
        return None


def identity_alive(identity: str | None) -> bool:
    """Whether the process ``process_identity`` named is still the same live process."""
    if not identity:
        return False
    try:
        pid = int(identity.split(":", 1)[0])
    except ValueError:
        return False
    return process_identity(pid) == identity and process_alive(pid)
