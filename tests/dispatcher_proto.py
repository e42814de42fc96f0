"""Requests of the shared-memory protocol, packed by hand, for the dispatcher tests.

The bytes are packed by hand on purpose, not through the ctypes mirror in
cedana_gpu.controller.shm_layout: these tests drive the native dispatcher
(libcedana-gpu-controller.so) with bytes exactly as the C header lays them out
(gpu/include/cedana_gpu_shm.h), including wrong ones. Which ops exist, their
values, request structs and channel rules come from the op table's mirror;
the hand-written sizes are checked against it at import.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from cedana_gpu.controller import shm_layout
from cedana_gpu.controller.native import cgc_config
from cedana_gpu.paths import native_dir

SLOT_SIZE = 256
SLOT_DATA = SLOT_SIZE - 8
MAX_REQUEST_SLOTS = 64
CHANNEL_HEADER = 4096
NO_CHANNEL = 0xFFFFFFFF
HEADER_SIZE = 65536
MAGIC = 0x3155504741444543

# The ops, their values and request structs come from the op table
# (gpu/include/cedana_gpu_ops.def, through its generated Python mirror), so
# a new op is known here, and fuzzed, without an edit.
OPS = [o.name for o in shm_layout.OPS]
OP = {name: int(shm_layout.OPS_BY_NAME[name].op) for name in OPS}
OP_COUNT = len(OPS)
SYNC_OPS = shm_layout.SYNC_OPS

HOST_STAGING = 1
HOST_PINNED = 2

# Body formats (after the 32-byte cgs_req header), little-endian, with the
# C structs' padding spelled out.
REQ_FMT = "<IIIIIIQ"  # op nslots channel token length _pad ctx
BODY = {
    "ctx": "<QiI",  # handle device flags
    "mem": "<QQ",  # dptr size
    "copy": "<QQQQQIIII",  # stream dst src size host_offset host_kind pin_id async per_thread
    "memset": "<QQQQQIIII",  # stream dst pitch width height value elem_size async per_thread
    "stream": "<QQIiII",  # handle event flags priority per_thread _pad
    "event": "<QQQII",  # handle stream other flags per_thread
    "blob": "<QQQ",  # offset size total
    "module": "<QQ",  # handle size
    "symbol": "<QQ448s",  # module handle name
    "func_attr": "<Qii",  # function attribute value
    "launch": "<QQIIIIIIIIII",  # function stream grid[3] block[3] shared args_size per_thread _pad
    "pin": "<QQII",  # app_addr size pin_id flags
    "host_func": "<QQII",  # stream callback_id per_thread _pad
    # addr size alignment handle offset flags type handle_types location_type
    # location_id option naccess access_device[8] access_flags[8]
    "vmm": "<QQQQQQIIiiII8i8I",
    "pool": "<QQQQQiIII",  # handle stream dptr size value device attr is_default per_thread
    "link": "<QQQQII64s",  # handle size info_log error_log type flags name
}
SIZES = {k: 32 + struct.calcsize(v) for k, v in BODY.items()}
assert SIZES["copy"] == 88 and SIZES["launch"] == 88 and SIZES["symbol"] == 496
assert SIZES["stream"] == 64 and SIZES["event"] == 64 and SIZES["pin"] == 56
assert SIZES["vmm"] == 168 and SIZES["pool"] == 88 and SIZES["link"] == 136

# Op name -> its body format's key: the request struct without "cgs_"
# (None for a bare header). A new request struct needs a format in BODY.
OP_BODY: dict[str, str | None] = {
    o.name: None if o.request is shm_layout.cgs_req else o.request.__name__.removeprefix("cgs_")
    for o in shm_layout.OPS
}
# The hand-written formats against the compiler-checked mirror: packing by
# hand is on purpose, packing a wrong size is not.
for _op in shm_layout.OPS:
    _kind = OP_BODY[_op.name]
    assert _kind is None or SIZES[_kind] == ctypes.sizeof(_op.request), _op.name
assert SLOT_SIZE == shm_layout.CGS_SLOT_SIZE and NO_CHANNEL == shm_layout.CGS_NO_CHANNEL
assert MAX_REQUEST_SLOTS == shm_layout.CGS_MAX_REQUEST_SLOTS
assert CHANNEL_HEADER == shm_layout.CGS_CHANNEL_HEADER and MAGIC == shm_layout.CGS_MAGIC


def slots_for(length: int) -> int:
    return (length + SLOT_DATA - 1) // SLOT_DATA


def request(
    op: str | int,
    *fields: object,
    channel: int = NO_CHANNEL,
    token: int = 0,
    ctx: int = 0,
    tail: bytes = b"",
    length: int | None = None,
    nslots: int | None = None,
) -> bytes:
    """One request: header, the op's struct from `fields` (zeros if none), `tail` bytes."""
    code = OP[op] if isinstance(op, str) else op
    kind = OP_BODY.get(OPS[code]) if isinstance(code, int) and 0 <= code < OP_COUNT else None
    body = b""
    if kind:
        fmt = BODY[kind]
        body = struct.pack(fmt, *fields) if fields else bytes(struct.calcsize(fmt))
    body += tail
    n = 32 + len(body) if length is None else length
    ns = slots_for(32 + len(body)) if nslots is None else nslots
    return struct.pack(REQ_FMT, code, ns, channel, token, n, 0, ctx) + body


def load_fake_driver() -> ctypes.CDLL:
    """The fake libcuda.so.1, loaded globally so the dispatcher finds it by SONAME."""
    return ctypes.CDLL(str(native_dir() / "fake" / "libcuda.so.1"), mode=ctypes.RTLD_GLOBAL)


# The dispatcher's configuration struct: the package's mirror, which
# tests/test_shm_layout.py checks against the C layout.
Config = cgc_config


def load_dispatcher() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(native_dir() / "controller" / "libcedana-gpu-controller.so"))
    vp = ctypes.c_void_p
    lib.cgc_open.argtypes = (ctypes.POINTER(Config), ctypes.POINTER(vp))
    lib.cgc_open.restype = ctypes.c_int
    for name in ("cgc_start", "cgc_unfreeze", "cgc_stop"):
        getattr(lib, name).argtypes = (vp,)
        getattr(lib, name).restype = ctypes.c_int
    lib.cgc_freeze.argtypes = (vp, ctypes.c_uint32)
    lib.cgc_freeze.restype = ctypes.c_int
    lib.cgc_close.argtypes = (vp,)
    lib.cgc_close.restype = None
    lib.cgc_info_json.argtypes = (vp, ctypes.c_char_p, ctypes.c_size_t)
    lib.cgc_info_json.restype = ctypes.c_int
    lib.cgc_last_error.argtypes = (vp,)
    lib.cgc_last_error.restype = ctypes.c_char_p
    lib.cgc_validate_request.argtypes = (
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint32,
        ctypes.c_uint64,
        ctypes.c_char_p,
        ctypes.c_size_t,
    )
    lib.cgc_validate_request.restype = ctypes.c_int
    return lib


_libc = ctypes.CDLL(None, use_errno=True)
_SYS_FUTEX = 202  # x86_64
_FUTEX_WAKE = 1


@dataclass
class Reply:
    result: int
    ret: tuple[int, ...]


class Segment:
    """The job's side of a segment: a single producer thread (these tests)."""

    def __init__(self, job_id: str, path: Path | None = None) -> None:
        path = path or Path("/dev/shm") / f"cedana-gpu.{job_id}"
        fd = os.open(path, os.O_RDWR)
        try:
            self.size = os.fstat(fd).st_size
            self.mm = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        (magic,) = struct.unpack_from("<Q", self.mm, 0)
        assert magic == MAGIC
        (
            self.ring_slots,
            self.nchannels,
            self.ring_offset,
            self.channels_offset,
            self.channel_stride,
            self.staging_size,
            self.va_base,
            self.va_size,
        ) = struct.unpack_from("<IIQQQQQQ", self.mm, 40)
        self.token = 0

    def close(self) -> None:
        self.mm.close()

    def u32(self, off: int) -> int:
        return ctypes.c_uint32.from_address(self.base + off).value

    def u64(self, off: int) -> int:
        return ctypes.c_uint64.from_address(self.base + off).value

    @property
    def state(self) -> int:
        return self.u32(32)

    @property
    def async_error(self) -> int:
        return ctypes.c_int32.from_address(self.base + 96).value

    @property
    def mint_regions(self) -> int:
        return self.u32(shm_layout.cgs_header.mint_regions.offset)

    def clear_async_error(self) -> int:
        v = self.async_error
        ctypes.c_int32.from_address(self.base + 96).value = 0
        return v

    @property
    def heartbeat(self) -> int:
        return self.u64(104)

    def device_count(self) -> int:
        return ctypes.c_int32.from_address(self.base + 4612).value

    def channel_off(self, ch: int) -> int:
        return self.channels_offset + ch * self.channel_stride

    def staging_off(self, ch: int) -> int:
        return self.channel_off(ch) + CHANNEL_HEADER

    def write_staging(self, ch: int, data: bytes, offset: int = 0) -> None:
        o = self.staging_off(ch) + offset
        self.mm[o : o + len(data)] = data

    def read_staging(self, ch: int, n: int, offset: int = 0) -> bytes:
        o = self.staging_off(ch) + offset
        return bytes(self.mm[o : o + n])

    def submit(self, req: bytes, nslots: int | None = None) -> None:
        """Write `req` into the ring as the producer discipline says."""
        n = nslots if nslots is not None else max(1, slots_for(len(req)))
        head = ctypes.c_uint64.from_address(self.base + 320)
        t = head.value
        head.value = t + n
        ring = self.ring_offset
        mask = self.ring_slots - 1
        data = req.ljust(n * SLOT_DATA, b"\0")
        for i in reversed(range(n)):
            slot = ring + ((t + i) & mask) * SLOT_SIZE
            seq = ctypes.c_uint64.from_address(self.base + slot)
            deadline = time.monotonic() + 10
            while seq.value != t + i:
                assert time.monotonic() < deadline, "ring slot never freed"
                time.sleep(0)
            chunk = data[i * SLOT_DATA : (i + 1) * SLOT_DATA]
            self.mm[slot + 8 : slot + 8 + len(chunk)] = chunk
            seq.value = t + i + 1
        self.ring_doorbell()

    def ring_doorbell(self) -> None:
        if self.u32(260):
            bell = ctypes.c_uint32.from_address(self.base + 256)
            bell.value = bell.value + 1
            _libc.syscall(
                _SYS_FUTEX, ctypes.c_void_p(self.base + 256), _FUTEX_WAKE, 1 << 30, 0, 0, 0
            )

    def next_token(self) -> int:
        self.token = (self.token + 1) & 0xFFFFFFFF or 1
        return self.token

    def wait(self, ch: int, token: int, timeout: float = 20.0) -> Reply:
        off = self.channel_off(ch)
        done = ctypes.c_uint32.from_address(self.base + off + 4)
        deadline = time.monotonic() + timeout
        spins = 0
        while done.value != token:
            if time.monotonic() > deadline:
                raise TimeoutError(f"channel {ch}: no completion for token {token}")
            spins += 1
            if spins > 1000:
                time.sleep(0.0002)
        result = ctypes.c_int32.from_address(self.base + off + 8).value
        ret = struct.unpack_from("<8Q", self.mm, off + 16)
        return Reply(result, ret)

    def call(self, op: str, *fields: object, ch: int = 0, ctx: int = 0, tail: bytes = b"") -> Reply:
        tok = self.next_token()
        self.submit(request(op, *fields, channel=ch, token=tok, ctx=ctx, tail=tail))
        return self.wait(ch, tok)

    def post(self, op: str, *fields: object, ctx: int = 0, tail: bytes = b"") -> None:
        self.submit(request(op, *fields, channel=NO_CHANNEL, ctx=ctx, tail=tail))
