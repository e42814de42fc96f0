"""Python mirror of ``gpu/include/cedana_gpu_shm.h``: the shared-memory wire format.

The C header and the op table ``gpu/include/cedana_gpu_ops.def`` are the one
definition; their mirror field for field (padding fields included, under the
same names), enum by enum and op by op is generated into ``shm_protocol`` and
re-exported here, with what Python needs to read a segment (``read_header``),
build requests in tests, and size things the way the C side does.
``tests/test_shm_layout.py`` compares every struct's size and every field's
offset and size with what the C compiler says (``cgs_layout_dump``), the
field, enum and constant names with the header itself, and the op table with
the compiler's view of it.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

# Constants, enums, ctypes structs and the op table, generated from the C
# header and the op table by gpu/include/gen_protocol.py (each name is
# written once, in C; tests/test_protocol_generated.py keeps the two equal).
from cedana_gpu.controller.shm_protocol import *  # noqa: F403
from cedana_gpu.controller.shm_protocol import (
    CGS_CHANNEL_HEADER,
    CGS_HEADER_SIZE,
    CGS_NAME_PREFIX,
    CGS_SLOT_DATA,
    CGS_SLOT_SIZE,
    OPS,
    CgsOp,
    OpInfo,
    cgs_channel,
    cgs_header,
    cgs_slot,
    cgs_symbol,
)

SHM_DIR = Path("/dev/shm")

OPS_BY_NAME: dict[str, OpInfo] = {o.name: o for o in OPS}
"""The op table by name (``"MEM_ALLOC"``, without the ``CGS_OP_`` prefix)."""

SYNC_OPS: frozenset[str] = frozenset(o.name for o in OPS if o.sync)
"""Ops whose requests always name a channel."""

assert [o.op for o in OPS] == list(CgsOp)[:-1], "OPS is indexed by op value"

# The same invariants the header asserts at compile time.
assert ctypes.sizeof(cgs_slot) == CGS_SLOT_SIZE
assert ctypes.sizeof(cgs_channel) == CGS_CHANNEL_HEADER
assert ctypes.sizeof(cgs_header) <= CGS_HEADER_SIZE
assert cgs_header.ctrl_doorbell.offset == 256
assert ctypes.sizeof(cgs_symbol) <= CGS_SLOT_DATA * 2


# ---- helpers ----------------------------------------------------------------


def shm_name(job_id: str) -> str:
    """The ``shm_open`` name of a job's segment."""
    return CGS_NAME_PREFIX + job_id


JOB_SHM_DIRS = SHM_DIR / "cedana-gpu.d"
"""Per-job directories: a root job with a mount namespace sees
``JOB_SHM_DIRS/<jid>`` as its /dev/shm, and its segment is there."""


def segment_name(job_id: str) -> str:
    """The segment's file name, as a job started with id ``job_id`` names it."""
    return shm_name(job_id).lstrip("/")


def job_shm_dir(job_id: str) -> Path:
    """Where job ``job_id``'s segment is: its per-job directory when it has one."""
    per_job = JOB_SHM_DIRS / job_id
    return per_job if per_job.is_dir() else SHM_DIR


def segment_path(job_id: str) -> Path:
    """Where a job's segment lives in the file system (as the host sees it)."""
    return job_shm_dir(job_id) / segment_name(job_id)


def pin_files(shm_dir: Path, name: str) -> list[Path]:
    """The pinned host memory files (``<name>.pin.<id>``) of the segment ``name`` in ``shm_dir``."""
    return sorted(Path(shm_dir).glob(name + ".pin.*"))


def pin_paths(job_id: str) -> list[Path]:
    """The job's pinned host memory files (``<segment>.pin.<id>``) that exist now."""
    return pin_files(job_shm_dir(job_id), segment_name(job_id))


def read_header(job_id: str) -> cgs_header | None:
    """A copy of the job's segment header, or None when there is no segment.

    The copy is taken without locks: fields the controller updates while it
    runs (heartbeat, head, tail) are a snapshot.
    """
    return read_header_at(segment_path(job_id))


def read_header_at(path: Path) -> cgs_header | None:
    """``read_header`` of the segment file at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size < ctypes.sizeof(cgs_header):
            return None
        with mmap.mmap(fd, ctypes.sizeof(cgs_header), prot=mmap.PROT_READ) as m:
            return cgs_header.from_buffer_copy(m)
    finally:
        os.close(fd)
