"""Python mirror of ``gpu/include/cedana_gpu_shm.h``: the shared-memory wire format.

The C header is the one definition; this module mirrors it field for field
(padding fields included, under the same names) so Python can read a segment
(``read_header``), build requests in tests, and size things the way the C side
does. ``tests/test_shm_layout.py`` compares every struct's size and every
field's offset and size with what the C compiler says (``cgs_layout_dump``),
and the field, enum and constant names with the header itself.
"""

from __future__ import annotations

import ctypes
import enum
import mmap
import os
from pathlib import Path

# ---- constants --------------------------------------------------------------

CGS_MAGIC = 0x3155504741444543  # "CEDAGPU1" little-endian
CGS_LAYOUT_VERSION = 1
CGS_NAME_PREFIX = "/cedana-gpu."  # + job id: shm_open name
CGS_JOB_ID_MAX = 64
CGS_MAX_DEVICES = 8
CGS_MAX_ATTRIBUTES = 160
CGS_HEADER_SIZE = 65536
CGS_SLOT_SIZE = 256
CGS_SLOT_DATA = CGS_SLOT_SIZE - 8
CGS_MAX_REQUEST_SLOTS = 64
CGS_CHANNEL_HEADER = 4096
CGS_NO_CHANNEL = 0xFFFFFFFF
CGS_CALLBACKS = 256

CGS_DEFAULT_RING_SLOTS = 4096
CGS_DEFAULT_CHANNELS = 32
CGS_DEFAULT_STAGING = 1 << 20

SHM_DIR = Path("/dev/shm")


# ---- enums ------------------------------------------------------------------


class CgsState(enum.IntEnum):
    """``enum cgs_state``: the segment's lifecycle, in ``header.state``."""

    CGS_STATE_STARTING = 0
    CGS_STATE_RUNNING = 1
    CGS_STATE_FREEZING = 2
    CGS_STATE_FROZEN = 3
    CGS_STATE_RESTORING = 4
    CGS_STATE_DEAD = 5


class CgsOp(enum.IntEnum):
    """``enum cgs_op``: the request opcodes."""

    CGS_OP_NOP = 0
    CGS_OP_CTX_CREATE = enum.auto()
    CGS_OP_CTX_DESTROY = enum.auto()
    CGS_OP_CTX_SYNCHRONIZE = enum.auto()
    CGS_OP_PRIMARY_RETAIN = enum.auto()
    CGS_OP_PRIMARY_RELEASE = enum.auto()
    CGS_OP_PRIMARY_RESET = enum.auto()
    CGS_OP_MEM_ALLOC = enum.auto()
    CGS_OP_MEM_FREE = enum.auto()
    CGS_OP_MEM_GET_INFO = enum.auto()
    CGS_OP_MEMCPY_HTOD = enum.auto()
    CGS_OP_MEMCPY_DTOH = enum.auto()
    CGS_OP_MEMCPY_DTOD = enum.auto()
    CGS_OP_MEMSET = enum.auto()
    CGS_OP_STREAM_CREATE = enum.auto()
    CGS_OP_STREAM_DESTROY = enum.auto()
    CGS_OP_STREAM_SYNCHRONIZE = enum.auto()
    CGS_OP_STREAM_QUERY = enum.auto()
    CGS_OP_STREAM_WAIT_EVENT = enum.auto()
    CGS_OP_EVENT_CREATE = enum.auto()
    CGS_OP_EVENT_RECORD = enum.auto()
    CGS_OP_EVENT_QUERY = enum.auto()
    CGS_OP_EVENT_SYNCHRONIZE = enum.auto()
    CGS_OP_EVENT_ELAPSED = enum.auto()
    CGS_OP_EVENT_DESTROY = enum.auto()
    CGS_OP_BLOB_PUT = enum.auto()
    CGS_OP_MODULE_LOAD = enum.auto()
    CGS_OP_MODULE_UNLOAD = enum.auto()
    CGS_OP_MODULE_GET_FUNCTION = enum.auto()
    CGS_OP_MODULE_GET_GLOBAL = enum.auto()
    CGS_OP_FUNC_GET_ATTRIBUTE = enum.auto()
    CGS_OP_FUNC_SET_ATTRIBUTE = enum.auto()
    CGS_OP_LAUNCH = enum.auto()
    CGS_OP_HOST_REGISTER = enum.auto()
    CGS_OP_HOST_UNREGISTER = enum.auto()
    CGS_OP_HOST_FUNC = enum.auto()
    CGS_OP_COUNT = enum.auto()


class CgsHostKind(enum.IntEnum):
    """``enum cgs_host_kind``: where the host side of a copy lives."""

    CGS_HOST_STAGING = 1
    CGS_HOST_PINNED = 2


ENUMS: dict[str, type[enum.IntEnum]] = {
    "cgs_state": CgsState,
    "cgs_op": CgsOp,
    "cgs_host_kind": CgsHostKind,
}
"""C enum name -> Python mirror."""


# ---- structs ----------------------------------------------------------------

u8, u32, i32, u64 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64


class cgs_device(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char * 256),
        ("uuid", u8 * 16),
        ("total_mem", u64),
        ("cc_major", i32),
        ("cc_minor", i32),
        ("attributes", i32 * CGS_MAX_ATTRIBUTES),
    )


class cgs_callback(ctypes.Structure):
    _fields_ = (("id", u64), ("done", u32), ("_pad", u32))


class cgs_header(ctypes.Structure):
    _fields_ = (
        ("magic", u64),
        ("layout_version", u32),
        ("header_size", u32),
        ("segment_size", u64),
        ("generation", u64),
        ("state", u32),
        ("controller_pid", u32),
        ("ring_slots", u32),
        ("nchannels", u32),
        ("ring_offset", u64),
        ("channels_offset", u64),
        ("channel_stride", u64),
        ("staging_size", u64),
        ("va_base", u64),
        ("va_size", u64),
        ("async_error", i32),
        ("inflight", u32),
        ("heartbeat", u64),
        ("timeout_ms", u32),
        ("_pad0", u32),
        ("job_id", ctypes.c_char * CGS_JOB_ID_MAX),
        ("_pad1", u8 * (256 - 184)),
        ("ctrl_doorbell", u32),
        ("ctrl_sleeping", u32),
        ("_pad2", u8 * 56),
        ("head", u64),
        ("_pad3", u8 * 56),
        ("tail", u64),
        ("_pad4", u8 * 56),
        ("cb_doorbell", u32),
        ("_pad5", u32),
        ("cb_head", u64),
        ("cb_tail", u64),
        ("_pad6", u8 * 40),
        ("callbacks", cgs_callback * CGS_CALLBACKS),
        ("driver_version", i32),
        ("device_count", i32),
        ("devices", cgs_device * CGS_MAX_DEVICES),
    )


class cgs_slot(ctypes.Structure):
    _fields_ = (("seq", u64), ("data", u8 * CGS_SLOT_DATA))


class cgs_channel(ctypes.Structure):
    _fields_ = (
        ("owner", u32),
        ("done", u32),
        ("result", i32),
        ("_pad", u32),
        ("ret", u64 * 8),
        ("_pad1", u8 * (CGS_CHANNEL_HEADER - 80)),
    )


class cgs_req(ctypes.Structure):
    _fields_ = (
        ("op", u32),
        ("nslots", u32),
        ("channel", u32),
        ("token", u32),
        ("length", u32),
        ("_pad", u32),
        ("ctx", u64),
    )


class cgs_ctx(ctypes.Structure):
    _fields_ = (("h", cgs_req), ("handle", u64), ("device", i32), ("flags", u32))


class cgs_mem(ctypes.Structure):
    _fields_ = (("h", cgs_req), ("dptr", u64), ("size", u64))


class cgs_copy(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("stream", u64),
        ("dst", u64),
        ("src", u64),
        ("size", u64),
        ("host_offset", u64),
        ("host_kind", u32),
        ("pin_id", u32),
        ("async", u32),
        ("per_thread", u32),
    )


class cgs_memset(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("stream", u64),
        ("dst", u64),
        ("pitch", u64),
        ("width", u64),
        ("height", u64),
        ("value", u32),
        ("elem_size", u32),
        ("async", u32),
        ("per_thread", u32),
    )


class cgs_stream(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("handle", u64),
        ("event", u64),
        ("flags", u32),
        ("priority", i32),
        ("per_thread", u32),
        ("_pad", u32),
    )


class cgs_event(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("handle", u64),
        ("stream", u64),
        ("other", u64),
        ("flags", u32),
        ("per_thread", u32),
    )


class cgs_blob(ctypes.Structure):
    _fields_ = (("h", cgs_req), ("offset", u64), ("size", u64), ("total", u64))


class cgs_module(ctypes.Structure):
    _fields_ = (("h", cgs_req), ("handle", u64), ("size", u64))


class cgs_symbol(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("module", u64),
        ("handle", u64),
        ("name", ctypes.c_char * (CGS_SLOT_DATA * 2 - 48)),
    )


class cgs_param(ctypes.Structure):
    _fields_ = (("offset", u32), ("size", u32))


class cgs_func_attr(ctypes.Structure):
    _fields_ = (("h", cgs_req), ("function", u64), ("attribute", i32), ("value", i32))


class cgs_launch(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("function", u64),
        ("stream", u64),
        ("grid", u32 * 3),
        ("block", u32 * 3),
        ("shared_bytes", u32),
        ("args_size", u32),
        ("per_thread", u32),
        ("_pad", u32),
    )


class cgs_pin(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("app_addr", u64),
        ("size", u64),
        ("pin_id", u32),
        ("flags", u32),
    )


class cgs_host_func(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("stream", u64),
        ("callback_id", u64),
        ("per_thread", u32),
        ("_pad", u32),
    )


STRUCTS: dict[str, type[ctypes.Structure]] = {
    cls.__name__: cls
    for cls in (
        cgs_device,
        cgs_callback,
        cgs_header,
        cgs_slot,
        cgs_channel,
        cgs_req,
        cgs_ctx,
        cgs_mem,
        cgs_copy,
        cgs_memset,
        cgs_stream,
        cgs_event,
        cgs_blob,
        cgs_module,
        cgs_symbol,
        cgs_param,
        cgs_func_attr,
        cgs_launch,
        cgs_pin,
        cgs_host_func,
    )
}
"""C struct name -> Python mirror."""

CGS_MAX_REQUEST = CGS_MAX_REQUEST_SLOTS * CGS_SLOT_DATA
CGS_MAX_LAUNCH_ARGS = CGS_MAX_REQUEST - ctypes.sizeof(cgs_launch)

CONSTANTS: dict[str, int | str] = {
    name: globals()[name]
    for name in (
        "CGS_MAGIC",
        "CGS_LAYOUT_VERSION",
        "CGS_NAME_PREFIX",
        "CGS_JOB_ID_MAX",
        "CGS_MAX_DEVICES",
        "CGS_MAX_ATTRIBUTES",
        "CGS_HEADER_SIZE",
        "CGS_SLOT_SIZE",
        "CGS_SLOT_DATA",
        "CGS_MAX_REQUEST_SLOTS",
        "CGS_CHANNEL_HEADER",
        "CGS_NO_CHANNEL",
        "CGS_CALLBACKS",
        "CGS_DEFAULT_RING_SLOTS",
        "CGS_DEFAULT_CHANNELS",
        "CGS_DEFAULT_STAGING",
        "CGS_MAX_REQUEST",
        "CGS_MAX_LAUNCH_ARGS",
    )
}
"""The header's ``#define`` values (function-like macros and the guard excepted)."""

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
