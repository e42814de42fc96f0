"""The shared-memory protocol in Python: GENERATED, do not edit.

Written by ``gpu/include/gen_protocol.py`` from ``gpu/include/cedana_gpu_shm.h``
and ``gpu/include/cedana_gpu_ops.def``, where every constant, field and op is
defined and explained; edit those and run the generator.
``cedana_gpu/controller/shm_layout.py`` re-exports this module with the
helpers that use it.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass

u8, u32, i32, u64 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64

# ---- constants ---------------------------------------------------------------
CGS_MAGIC = 0x3155504741444543
CGS_LAYOUT_VERSION = 2
CGS_NAME_PREFIX = "/cedana-gpu."
CGS_JOB_ID_MAX = 64
CGS_MAX_DEVICES = 8
CGS_MINT_CLOSED = 0x80000000
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
CGS_PIN_SAME_ADDRESS = 0x80000000
CGS_LINK_NAME = 64
CGS_LINK_MAX_LOG = 1048576
CGS_MAX_REQUEST = CGS_MAX_REQUEST_SLOTS * CGS_SLOT_DATA


# ---- enums -------------------------------------------------------------------


class CgsOp(enum.IntEnum):
    """``enum cgs_op``."""

    CGS_OP_NOP = 0
    CGS_OP_CTX_CREATE = 1
    CGS_OP_CTX_DESTROY = 2
    CGS_OP_CTX_SYNCHRONIZE = 3
    CGS_OP_PRIMARY_RETAIN = 4
    CGS_OP_PRIMARY_RELEASE = 5
    CGS_OP_PRIMARY_RESET = 6
    CGS_OP_MEM_ALLOC = 7
    CGS_OP_MEM_FREE = 8
    CGS_OP_MEM_GET_INFO = 9
    CGS_OP_MEMCPY_HTOD = 10
    CGS_OP_MEMCPY_DTOH = 11
    CGS_OP_MEMCPY_DTOD = 12
    CGS_OP_MEMSET = 13
    CGS_OP_STREAM_CREATE = 14
    CGS_OP_STREAM_DESTROY = 15
    CGS_OP_STREAM_SYNCHRONIZE = 16
    CGS_OP_STREAM_QUERY = 17
    CGS_OP_STREAM_WAIT_EVENT = 18
    CGS_OP_EVENT_CREATE = 19
    CGS_OP_EVENT_RECORD = 20
    CGS_OP_EVENT_QUERY = 21
    CGS_OP_EVENT_SYNCHRONIZE = 22
    CGS_OP_EVENT_ELAPSED = 23
    CGS_OP_EVENT_DESTROY = 24
    CGS_OP_BLOB_PUT = 25
    CGS_OP_MODULE_LOAD = 26
    CGS_OP_MODULE_UNLOAD = 27
    CGS_OP_MODULE_GET_FUNCTION = 28
    CGS_OP_MODULE_GET_GLOBAL = 29
    CGS_OP_FUNC_GET_ATTRIBUTE = 30
    CGS_OP_FUNC_SET_ATTRIBUTE = 31
    CGS_OP_LAUNCH = 32
    CGS_OP_HOST_REGISTER = 33
    CGS_OP_HOST_UNREGISTER = 34
    CGS_OP_HOST_FUNC = 35
    CGS_OP_ENGINE_HANDOFF = 36
    CGS_OP_VMM_GRANULARITY = 37
    CGS_OP_VMM_RESERVE = 38
    CGS_OP_VMM_FREE = 39
    CGS_OP_VMM_CREATE = 40
    CGS_OP_VMM_RELEASE = 41
    CGS_OP_VMM_MAP = 42
    CGS_OP_VMM_UNMAP = 43
    CGS_OP_VMM_SET_ACCESS = 44
    CGS_OP_VMM_GET_ACCESS = 45
    CGS_OP_POOL_CREATE = 46
    CGS_OP_POOL_DESTROY = 47
    CGS_OP_POOL_TRIM = 48
    CGS_OP_POOL_SET_ATTR = 49
    CGS_OP_POOL_GET_ATTR = 50
    CGS_OP_POOL_ALLOC = 51
    CGS_OP_POOL_FREE = 52
    CGS_OP_LINK_CREATE = 53
    CGS_OP_LINK_ADD = 54
    CGS_OP_LINK_COMPLETE = 55
    CGS_OP_LINK_READ = 56
    CGS_OP_LINK_DESTROY = 57
    CGS_OP_COUNT = 58


class CgsState(enum.IntEnum):
    """``enum cgs_state``."""

    CGS_STATE_STARTING = 0
    CGS_STATE_RUNNING = 1
    CGS_STATE_FREEZING = 2
    CGS_STATE_FROZEN = 3
    CGS_STATE_RESTORING = 4
    CGS_STATE_DEAD = 5


class CgsChannelRule(enum.IntEnum):
    """``enum cgs_channel_rule``."""

    CGS_CHANNEL_ASYNC = 0
    CGS_CHANNEL_SYNC = 1
    CGS_CHANNEL_DEPENDS = 2


class CgsHostKind(enum.IntEnum):
    """``enum cgs_host_kind``."""

    CGS_HOST_STAGING = 1
    CGS_HOST_PINNED = 2


class CgsLinkRead(enum.IntEnum):
    """``enum cgs_link_read``."""

    CGS_LINK_IMAGE = 0
    CGS_LINK_INFO_LOG = 1
    CGS_LINK_ERROR_LOG = 2


ENUMS: dict[str, type[enum.IntEnum]] = {
    "cgs_op": CgsOp,
    "cgs_state": CgsState,
    "cgs_channel_rule": CgsChannelRule,
    "cgs_host_kind": CgsHostKind,
    "cgs_link_read": CgsLinkRead,
}


# ---- structs -----------------------------------------------------------------


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
    _fields_ = (
        ("id", u64),
        ("done", u32),
        ("_pad", u32),
    )


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
        ("mint_regions", u32),
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
    _fields_ = (
        ("seq", u64),
        ("data", u8 * CGS_SLOT_DATA),
    )


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
    _fields_ = (
        ("h", cgs_req),
        ("handle", u64),
        ("device", i32),
        ("flags", u32),
    )


class cgs_mem(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("dptr", u64),
        ("size", u64),
    )


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
    _fields_ = (
        ("h", cgs_req),
        ("offset", u64),
        ("size", u64),
        ("total", u64),
    )


class cgs_module(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("handle", u64),
        ("size", u64),
    )


class cgs_symbol(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("module", u64),
        ("handle", u64),
        ("name", ctypes.c_char * (CGS_SLOT_DATA * 2 - 48)),
    )


class cgs_param(ctypes.Structure):
    _fields_ = (
        ("offset", u32),
        ("size", u32),
    )


class cgs_func_attr(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("function", u64),
        ("attribute", i32),
        ("value", i32),
    )


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


class cgs_vmm(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("addr", u64),
        ("size", u64),
        ("alignment", u64),
        ("handle", u64),
        ("offset", u64),
        ("flags", u64),
        ("type", u32),
        ("handle_types", u32),
        ("location_type", i32),
        ("location_id", i32),
        ("option", u32),
        ("naccess", u32),
        ("access_device", i32 * CGS_MAX_DEVICES),
        ("access_flags", u32 * CGS_MAX_DEVICES),
    )


class cgs_pool(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("handle", u64),
        ("stream", u64),
        ("dptr", u64),
        ("size", u64),
        ("value", u64),
        ("device", i32),
        ("attr", u32),
        ("is_default", u32),
        ("per_thread", u32),
    )


class cgs_link(ctypes.Structure):
    _fields_ = (
        ("h", cgs_req),
        ("handle", u64),
        ("size", u64),
        ("info_log", u64),
        ("error_log", u64),
        ("type", u32),
        ("flags", u32),
        ("name", ctypes.c_char * CGS_LINK_NAME),
    )


STRUCTS: dict[str, type[ctypes.Structure]] = {
    "cgs_device": cgs_device,
    "cgs_callback": cgs_callback,
    "cgs_header": cgs_header,
    "cgs_slot": cgs_slot,
    "cgs_channel": cgs_channel,
    "cgs_req": cgs_req,
    "cgs_ctx": cgs_ctx,
    "cgs_mem": cgs_mem,
    "cgs_copy": cgs_copy,
    "cgs_memset": cgs_memset,
    "cgs_stream": cgs_stream,
    "cgs_event": cgs_event,
    "cgs_blob": cgs_blob,
    "cgs_module": cgs_module,
    "cgs_symbol": cgs_symbol,
    "cgs_param": cgs_param,
    "cgs_func_attr": cgs_func_attr,
    "cgs_launch": cgs_launch,
    "cgs_pin": cgs_pin,
    "cgs_host_func": cgs_host_func,
    "cgs_vmm": cgs_vmm,
    "cgs_pool": cgs_pool,
    "cgs_link": cgs_link,
}

CGS_MAX_LAUNCH_ARGS = CGS_MAX_REQUEST - ctypes.sizeof(cgs_launch)

CONSTANTS: dict[str, int | str] = {
    "CGS_MAGIC": CGS_MAGIC,
    "CGS_LAYOUT_VERSION": CGS_LAYOUT_VERSION,
    "CGS_NAME_PREFIX": CGS_NAME_PREFIX,
    "CGS_JOB_ID_MAX": CGS_JOB_ID_MAX,
    "CGS_MAX_DEVICES": CGS_MAX_DEVICES,
    "CGS_MINT_CLOSED": CGS_MINT_CLOSED,
    "CGS_MAX_ATTRIBUTES": CGS_MAX_ATTRIBUTES,
    "CGS_HEADER_SIZE": CGS_HEADER_SIZE,
    "CGS_SLOT_SIZE": CGS_SLOT_SIZE,
    "CGS_SLOT_DATA": CGS_SLOT_DATA,
    "CGS_MAX_REQUEST_SLOTS": CGS_MAX_REQUEST_SLOTS,
    "CGS_CHANNEL_HEADER": CGS_CHANNEL_HEADER,
    "CGS_NO_CHANNEL": CGS_NO_CHANNEL,
    "CGS_CALLBACKS": CGS_CALLBACKS,
    "CGS_DEFAULT_RING_SLOTS": CGS_DEFAULT_RING_SLOTS,
    "CGS_DEFAULT_CHANNELS": CGS_DEFAULT_CHANNELS,
    "CGS_DEFAULT_STAGING": CGS_DEFAULT_STAGING,
    "CGS_PIN_SAME_ADDRESS": CGS_PIN_SAME_ADDRESS,
    "CGS_LINK_NAME": CGS_LINK_NAME,
    "CGS_LINK_MAX_LOG": CGS_LINK_MAX_LOG,
    "CGS_MAX_REQUEST": CGS_MAX_REQUEST,
    "CGS_MAX_LAUNCH_ARGS": CGS_MAX_LAUNCH_ARGS,
}


# ---- the op table ------------------------------------------------------------


@dataclass(frozen=True)
class OpInfo:
    """One row of the op table (``cedana_gpu_ops.def``)."""

    op: CgsOp
    name: str  # without the CGS_OP_ prefix
    request: type[ctypes.Structure]
    channel: CgsChannelRule
    min_len: int

    @property
    def sync(self) -> bool:
        """The request always needs a completion channel."""
        return self.channel == CgsChannelRule.CGS_CHANNEL_SYNC


OPS: tuple[OpInfo, ...] = (
    OpInfo(
        CgsOp.CGS_OP_NOP,
        "NOP",
        cgs_req,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_req),
    ),
    OpInfo(
        CgsOp.CGS_OP_CTX_CREATE,
        "CTX_CREATE",
        cgs_ctx,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_ctx),
    ),
    OpInfo(
        CgsOp.CGS_OP_CTX_DESTROY,
        "CTX_DESTROY",
        cgs_ctx,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_ctx),
    ),
    OpInfo(
        CgsOp.CGS_OP_CTX_SYNCHRONIZE,
        "CTX_SYNCHRONIZE",
        cgs_ctx,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_ctx),
    ),
    OpInfo(
        CgsOp.CGS_OP_PRIMARY_RETAIN,
        "PRIMARY_RETAIN",
        cgs_ctx,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_ctx),
    ),
    OpInfo(
        CgsOp.CGS_OP_PRIMARY_RELEASE,
        "PRIMARY_RELEASE",
        cgs_ctx,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_ctx),
    ),
    OpInfo(
        CgsOp.CGS_OP_PRIMARY_RESET,
        "PRIMARY_RESET",
        cgs_ctx,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_ctx),
    ),
    OpInfo(
        CgsOp.CGS_OP_MEM_ALLOC,
        "MEM_ALLOC",
        cgs_mem,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_mem),
    ),
    OpInfo(
        CgsOp.CGS_OP_MEM_FREE,
        "MEM_FREE",
        cgs_mem,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_mem),
    ),
    OpInfo(
        CgsOp.CGS_OP_MEM_GET_INFO,
        "MEM_GET_INFO",
        cgs_mem,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_mem),
    ),
    OpInfo(
        CgsOp.CGS_OP_MEMCPY_HTOD,
        "MEMCPY_HTOD",
        cgs_copy,
        CgsChannelRule.CGS_CHANNEL_DEPENDS,
        ctypes.sizeof(cgs_copy),
    ),
    OpInfo(
        CgsOp.CGS_OP_MEMCPY_DTOH,
        "MEMCPY_DTOH",
        cgs_copy,
        CgsChannelRule.CGS_CHANNEL_DEPENDS,
        ctypes.sizeof(cgs_copy),
    ),
    OpInfo(
        CgsOp.CGS_OP_MEMCPY_DTOD,
        "MEMCPY_DTOD",
        cgs_copy,
        CgsChannelRule.CGS_CHANNEL_DEPENDS,
        ctypes.sizeof(cgs_copy),
    ),
    OpInfo(
        CgsOp.CGS_OP_MEMSET,
        "MEMSET",
        cgs_memset,
        CgsChannelRule.CGS_CHANNEL_DEPENDS,
        ctypes.sizeof(cgs_memset),
    ),
    OpInfo(
        CgsOp.CGS_OP_STREAM_CREATE,
        "STREAM_CREATE",
        cgs_stream,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_stream),
    ),
    OpInfo(
        CgsOp.CGS_OP_STREAM_DESTROY,
        "STREAM_DESTROY",
        cgs_stream,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_stream),
    ),
    OpInfo(
        CgsOp.CGS_OP_STREAM_SYNCHRONIZE,
        "STREAM_SYNCHRONIZE",
        cgs_stream,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_stream),
    ),
    OpInfo(
        CgsOp.CGS_OP_STREAM_QUERY,
        "STREAM_QUERY",
        cgs_stream,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_stream),
    ),
    OpInfo(
        CgsOp.CGS_OP_STREAM_WAIT_EVENT,
        "STREAM_WAIT_EVENT",
        cgs_stream,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_stream),
    ),
    OpInfo(
        CgsOp.CGS_OP_EVENT_CREATE,
        "EVENT_CREATE",
        cgs_event,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_event),
    ),
    OpInfo(
        CgsOp.CGS_OP_EVENT_RECORD,
        "EVENT_RECORD",
        cgs_event,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_event),
    ),
    OpInfo(
        CgsOp.CGS_OP_EVENT_QUERY,
        "EVENT_QUERY",
        cgs_event,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_event),
    ),
    OpInfo(
        CgsOp.CGS_OP_EVENT_SYNCHRONIZE,
        "EVENT_SYNCHRONIZE",
        cgs_event,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_event),
    ),
    OpInfo(
        CgsOp.CGS_OP_EVENT_ELAPSED,
        "EVENT_ELAPSED",
        cgs_event,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_event),
    ),
    OpInfo(
        CgsOp.CGS_OP_EVENT_DESTROY,
        "EVENT_DESTROY",
        cgs_event,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_event),
    ),
    OpInfo(
        CgsOp.CGS_OP_BLOB_PUT,
        "BLOB_PUT",
        cgs_blob,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_blob),
    ),
    OpInfo(
        CgsOp.CGS_OP_MODULE_LOAD,
        "MODULE_LOAD",
        cgs_module,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_module),
    ),
    OpInfo(
        CgsOp.CGS_OP_MODULE_UNLOAD,
        "MODULE_UNLOAD",
        cgs_module,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_module),
    ),
    OpInfo(
        CgsOp.CGS_OP_MODULE_GET_FUNCTION,
        "MODULE_GET_FUNCTION",
        cgs_symbol,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        cgs_symbol.name.offset + 1,
    ),
    OpInfo(
        CgsOp.CGS_OP_MODULE_GET_GLOBAL,
        "MODULE_GET_GLOBAL",
        cgs_symbol,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        cgs_symbol.name.offset + 1,
    ),
    OpInfo(
        CgsOp.CGS_OP_FUNC_GET_ATTRIBUTE,
        "FUNC_GET_ATTRIBUTE",
        cgs_func_attr,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_func_attr),
    ),
    OpInfo(
        CgsOp.CGS_OP_FUNC_SET_ATTRIBUTE,
        "FUNC_SET_ATTRIBUTE",
        cgs_func_attr,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_func_attr),
    ),
    OpInfo(
        CgsOp.CGS_OP_LAUNCH,
        "LAUNCH",
        cgs_launch,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_launch),
    ),
    OpInfo(
        CgsOp.CGS_OP_HOST_REGISTER,
        "HOST_REGISTER",
        cgs_pin,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_pin),
    ),
    OpInfo(
        CgsOp.CGS_OP_HOST_UNREGISTER,
        "HOST_UNREGISTER",
        cgs_pin,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_pin),
    ),
    OpInfo(
        CgsOp.CGS_OP_HOST_FUNC,
        "HOST_FUNC",
        cgs_host_func,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_host_func),
    ),
    OpInfo(
        CgsOp.CGS_OP_ENGINE_HANDOFF,
        "ENGINE_HANDOFF",
        cgs_symbol,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        cgs_symbol.name.offset + 1,
    ),
    OpInfo(
        CgsOp.CGS_OP_VMM_GRANULARITY,
        "VMM_GRANULARITY",
        cgs_vmm,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_vmm),
    ),
    OpInfo(
        CgsOp.CGS_OP_VMM_RESERVE,
        "VMM_RESERVE",
        cgs_vmm,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_vmm),
    ),
    OpInfo(
        CgsOp.CGS_OP_VMM_FREE,
        "VMM_FREE",
        cgs_vmm,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_vmm),
    ),
    OpInfo(
        CgsOp.CGS_OP_VMM_CREATE,
        "VMM_CREATE",
        cgs_vmm,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_vmm),
    ),
    OpInfo(
        CgsOp.CGS_OP_VMM_RELEASE,
        "VMM_RELEASE",
        cgs_vmm,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_vmm),
    ),
    OpInfo(
        CgsOp.CGS_OP_VMM_MAP,
        "VMM_MAP",
        cgs_vmm,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_vmm),
    ),
    OpInfo(
        CgsOp.CGS_OP_VMM_UNMAP,
        "VMM_UNMAP",
        cgs_vmm,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_vmm),
    ),
    OpInfo(
        CgsOp.CGS_OP_VMM_SET_ACCESS,
        "VMM_SET_ACCESS",
        cgs_vmm,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_vmm),
    ),
    OpInfo(
        CgsOp.CGS_OP_VMM_GET_ACCESS,
        "VMM_GET_ACCESS",
        cgs_vmm,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_vmm),
    ),
    OpInfo(
        CgsOp.CGS_OP_POOL_CREATE,
        "POOL_CREATE",
        cgs_pool,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_pool),
    ),
    OpInfo(
        CgsOp.CGS_OP_POOL_DESTROY,
        "POOL_DESTROY",
        cgs_pool,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_pool),
    ),
    OpInfo(
        CgsOp.CGS_OP_POOL_TRIM,
        "POOL_TRIM",
        cgs_pool,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_pool),
    ),
    OpInfo(
        CgsOp.CGS_OP_POOL_SET_ATTR,
        "POOL_SET_ATTR",
        cgs_pool,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_pool),
    ),
    OpInfo(
        CgsOp.CGS_OP_POOL_GET_ATTR,
        "POOL_GET_ATTR",
        cgs_pool,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_pool),
    ),
    OpInfo(
        CgsOp.CGS_OP_POOL_ALLOC,
        "POOL_ALLOC",
        cgs_pool,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_pool),
    ),
    OpInfo(
        CgsOp.CGS_OP_POOL_FREE,
        "POOL_FREE",
        cgs_pool,
        CgsChannelRule.CGS_CHANNEL_ASYNC,
        ctypes.sizeof(cgs_pool),
    ),
    OpInfo(
        CgsOp.CGS_OP_LINK_CREATE,
        "LINK_CREATE",
        cgs_link,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_link),
    ),
    OpInfo(
        CgsOp.CGS_OP_LINK_ADD,
        "LINK_ADD",
        cgs_link,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_link),
    ),
    OpInfo(
        CgsOp.CGS_OP_LINK_COMPLETE,
        "LINK_COMPLETE",
        cgs_link,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_link),
    ),
    OpInfo(
        CgsOp.CGS_OP_LINK_READ,
        "LINK_READ",
        cgs_link,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_link),
    ),
    OpInfo(
        CgsOp.CGS_OP_LINK_DESTROY,
        "LINK_DESTROY",
        cgs_link,
        CgsChannelRule.CGS_CHANNEL_SYNC,
        ctypes.sizeof(cgs_link),
    ),
)
"""Indexed by op value."""
