"""What an interrupted dump or restore left behind, found and settled by the next one.

A dump records its checkpoint in the store as ``pending``, naming its own
process (pid and start time), before it creates anything, and marks it
``committed`` only after the rename that completes the checkpoint (see
``cr.dump``). A restore unpacks into a scratch directory named after its
process. So when a dump or restore dies at any instant (SIGKILL, a crash,
a power loss), what it left can be told apart from what a live one is
still writing, and ``recover`` settles it:

- a pending checkpoint whose owner is gone and whose final path exists was
  renamed into place, which happens only once it is complete and synced:
  it is listed (the store and the disk must not disagree);
- otherwise its leftovers (``.<id>.partial`` directory, ``.<id>.tar.partial``
  archive) are removed with its row;
- a leftover ``.partial`` in a job's own checkpoint directory with no row at
  all (from a version without rows) is removed too; in a directory named
  with ``--dir`` only what the store knows is touched (another state
  directory may be writing there);
- restore scratch directories whose owner is gone are removed.

Each action is reported in one line. Called at the start of every dump and
restore and by ``cedana job checkpoints``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from cedana_gpu.jobs import processes, statedir
from cedana_gpu.jobs.store import PENDING, Checkpoint, JobStore

PARTIAL_RE = re.compile(r"^\.(?P<cid>.+?)(?:\.tar)?\.partial$")
SCRATCH_RE = re.compile(r"^(?P<pid>\d+)\.(?P<start>\d+)\.[0-9a-f]+$")


def scratch_name(token: str) -> str:
    """A restore scratch directory's name: its owner (this process) and ``token``."""
    identity = processes.process_identity() or f"{os.getpid()}:0"
    return identity.replace(":", ".") + "." + token


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return True


def _leftovers(final: Path) -> list[Path]:
    name = final.name.removesuffix(".tar")
    return [final.parent / f".{name}.partial", final.parent / f".{name}.tar.partial"]


def settle_pending(store: JobStore, report: Callable[[str], None]) -> None:
    """Pending checkpoints whose dump is gone: list the complete ones, clean up the rest."""
    from cedana_gpu.checkpoint import path_size

    for ckpt in store.checkpoints(status=PENDING):
        if processes.identity_alive(ckpt.owner):
            continue  # a dump still running
        final = Path(ckpt.path)
        removed = [p for p in _leftovers(final) if _remove(p)]
        if final.exists():
            try:
                size = path_size(final)
            except OSError:
                size = 0
            store.commit_checkpoint(ckpt.id, size=size, phases=ckpt.phases)
            report(
                f"checkpoint {ckpt.id} of job {ckpt.jid} was complete when its dump was "
                "interrupted: it is listed now"
            )
            continue
        store.delete_checkpoint(ckpt.id)
        what = f" (removed {', '.join(str(p) for p in removed)})" if removed else ""
        report(f"an interrupted dump of job {ckpt.jid} left no checkpoint{what}")


def sweep_job_dir(store: JobStore, state: Path, jid: str, report: Callable[[str], None]) -> None:
    """``.partial`` leftovers in a job's own checkpoint directory that no live dump owns."""
    directory = statedir.checkpoints_dir(state, jid)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = PARTIAL_RE.match(name)
        if m is None:
            continue
        row: Checkpoint | None = store.get_checkpoint(m["cid"], status=None)
        if row is not None and row.status == PENDING and processes.identity_alive(row.owner):
            continue
        if _remove(directory / name):
            report(f"removed {directory / name}, left by an interrupted dump")


def sweep_scratch(state: Path, report: Callable[[str], None]) -> None:
    """Restore scratch directories whose restore is gone."""
    root = statedir.restore_tmp_dir(state)
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        m = SCRATCH_RE.match(name)
        owner = f"{m['pid']}:{m['start']}" if m else None
        if owner is not None and processes.identity_alive(owner):
            continue
        if _remove(root / name):
            report(f"removed {root / name}, left by an interrupted restore")


def recover(store: JobStore, state: Path, jid: str | None, report: Callable[[str], None]) -> None:
    """Settle what interrupted dumps and restores left (``jid``: also sweep its directory)."""
    with contextlib.suppress(OSError):
        settle_pending(store, report)
        if jid is not None:
            sweep_job_dir(store, state, jid, report)
        sweep_scratch(state, report)
