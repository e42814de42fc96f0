"""Driver engine, custom storage: the controller copies the job's GPU memory
itself, through the driver's ``customStorageInfo_out`` (CUDA 13.4), straight
into the checkpoint's shards, instead of the driver staging it in the job's
host memory (then CRIU's pages).

The shards are the intercept engine's (``shards.write_regions`` /
``read_regions``: the checkpoint's compression, ``--stream N`` in parallel,
a checksum per record, verified before a restore starts). The pieces the
driver describes (``perDeviceData``, one per GPU of the job, in its order)
are laid end to end in the shards' address space; ``gpu/devices.json``
(version 2) lists them as ``memory``, and a restore asks the driver for the
same pieces (remapped if need be) and fills them from the shards.

Every failure unwinds: a checkpoint whose copy fails gives the memory back
to the job (copied aside in memory, then a custom restore), which is then
LOCKED as before the checkpoint, for the caller to unlock.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cedana_gpu.checkpoint.manifest import RegionRecord
from cedana_gpu.checkpoint.shards import ChecksumFn, read_regions, write_regions
from cedana_gpu.cr import driver_api
from cedana_gpu.errors import CorruptCheckpoint

log = logging.getLogger(__name__)

COPY_FAULT = "copy"
"""``driver_api.FAULT_ENV``'s file that fails the next custom copy (tests only)."""


class _Layout:
    """The operation's pieces end to end: shard address -> (piece, offset)."""

    def __init__(self, op: driver_api.CustomOp) -> None:
        self.op = op
        self.starts: list[int] = []
        addr = 0
        for p in op.pieces:
            self.starts.append(addr)
            addr += p.size

    def memory(self) -> list[dict[str, int]]:
        pieces = zip(self.starts, self.op.pieces, strict=True)
        return [{"addr": a, "size": p.size} for a, p in pieces]

    def find(self, addr: int, size: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0 or addr + size > self.starts[i] + self.op.pieces[i].size:
            raise CorruptCheckpoint(
                f"GPU memory record 0x{addr:x} ({size} bytes) lies outside the GPU memory "
                "the driver described: the checkpoint is corrupt"
            )
        return i, addr - self.starts[i]


def _fault() -> None:
    import os

    directory = os.environ.get(driver_api.FAULT_ENV)
    if directory:
        try:
            os.unlink(os.path.join(directory, COPY_FAULT))
        except FileNotFoundError:
            return
        raise OSError(5, "custom storage copy failed (injected)")


def dump(
    pid: int,
    gpu_dir: Path,
    *,
    compression: str,
    streams: int,
    checksum_fn: ChecksumFn,
    progress: Any = None,
) -> tuple[list[RegionRecord], list[dict[str, int]]]:
    """Checkpoint the LOCKED ``pid`` through custom storage into ``gpu_dir``'s shards.

    Returns the records (the manifest's ``regions``) and the layout
    (``devices.json``'s ``memory``). Leaves ``pid`` CHECKPOINTED; on any
    failure, LOCKED with its memory back."""
    contexts = driver_api.PrimaryContexts()
    try:
        op = driver_api.checkpoint_custom(pid)
        layout = _Layout(op)
        try:

            def read(addr: int, size: int, dst: memoryview) -> int:
                piece, offset = layout.find(addr, size)
                op.copy_out(piece, offset, dst)
                _fault()
                return checksum_fn(dst)

            regions = [(a, p.size) for a, p in zip(layout.starts, op.pieces, strict=True)]
            if progress is not None:
                progress.reset("gpu dump", sum(p.size for p in op.pieces))
            records = write_regions(gpu_dir, regions, read, streams, compression, progress)
        except BaseException:
            _give_back(pid, op)
            raise
        op.complete()
        return records, layout.memory()
    finally:
        contexts.release()


def _give_back(pid: int, op: driver_api.CustomOp) -> None:
    """A checkpoint whose copy failed: the memory, still mapped here, is copied
    aside, the operation completed, and restored into the job (LOCKED again)."""
    try:
        saved = []
        for i, p in enumerate(op.pieces):
            buf = bytearray(p.size)
            if p.size:
                op.copy_out(i, 0, memoryview(buf))
            saved.append(buf)
        op.complete()
        back = driver_api.restore_custom(pid)
        for i, buf in enumerate(saved):
            if buf:
                back.copy_in(i, 0, memoryview(buf))
        back.complete()
    except driver_api.DriverApiError as e:
        log.error("job process %d: cannot give its GPU memory back after a failed copy: %s", pid, e)


def restore(
    pid: int,
    pairs: list[tuple[str, str]] | None,
    gpu_dir: Path,
    *,
    memory: Sequence[dict[str, Any]],
    records: Sequence[RegionRecord],
    compression: str,
    streams: int,
    checksum_fn: ChecksumFn,
    progress: Any = None,
) -> None:
    """Restore the CHECKPOINTED ``pid`` from ``gpu_dir``'s shards (every record
    verified before it is copied): it is then LOCKED, for the caller to unlock."""
    contexts = driver_api.PrimaryContexts()
    try:
        op = driver_api.restore_custom(pid, pairs)
        try:
            layout = _Layout(op)
            wanted = [{"addr": int(m["addr"]), "size": int(m["size"])} for m in memory]
            if layout.memory() != wanted:
                raise driver_api.DriverApiError(
                    f"the driver gives process {pid} GPU memory of {[p.size for p in op.pieces]} "
                    f"bytes, the checkpoint holds {[int(m['size']) for m in memory]}: "
                    "not the checkpointed process, or a changed driver"
                )

            def write(addr: int, src: memoryview) -> None:
                piece, offset = layout.find(addr, len(src))
                op.copy_in(piece, offset, src)

            if progress is not None:
                progress.reset("restore", sum(p.size for p in op.pieces))
            read_regions(gpu_dir, records, write, streams, compression, checksum_fn, progress)
        finally:
            op.complete()
    finally:
        contexts.release()
