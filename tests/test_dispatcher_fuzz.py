"""Property tests of the dispatcher's request decoder, ``cgc_validate_request``.

The dispatcher runs every request a job writes into its segment through this
check before it resolves a single handle, so it must hold for any bytes:
never crash, never read past the request, answer a clean error with a reason
for anything malformed, and accept what the protocol allows.

Each request is placed so that it ends exactly at a page the process cannot
read: a decoder that looked one byte past what it was given would crash the
test instead of passing it.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Callable

import pytest
from dispatcher_proto import (
    BODY,
    MAX_REQUEST_SLOTS,
    NO_CHANNEL,
    OP_BODY,
    OP_COUNT,
    OPS,
    SLOT_DATA,
    SYNC_OPS,
    load_dispatcher,
    request,
    slots_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_REQUEST = MAX_REQUEST_SLOTS * SLOT_DATA
LAUNCH_SIZE = 88
MAX_LAUNCH_ARGS = MAX_REQUEST - LAUNCH_SIZE
SYMBOL_NAME_OFFSET = 48
SYMBOL_SIZE = 496
MAX_BLOB = 1 << 31
MAX_LINK_LOG = 1 << 20  # CGS_LINK_MAX_LOG
U64 = (1 << 64) - 1
HDR = struct.Struct("<IIIIIIQ")
CUDA_ERROR_INVALID_VALUE = 1

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Guarded:
    """Bytes that end right where an unreadable page begins."""

    PAGE = mmap.PAGESIZE

    def __init__(self, capacity: int) -> None:
        self.pages = (capacity + self.PAGE - 1) // self.PAGE + 1
        self.mm = mmap.mmap(-1, self.pages * self.PAGE)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        self.guard = self.base + (self.pages - 1) * self.PAGE
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.mprotect(ctypes.c_void_p(self.guard), self.PAGE, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect")

    def place(self, data: bytes) -> int:
        addr = self.guard - len(data)
        ctypes.memmove(addr, data, len(data))
        return addr


Validator = Callable[[bytes, int, int], tuple[int, str]]


def make_validator() -> Validator:
    """cgc_validate_request on guarded bytes: (result, reason)."""
    lib = load_dispatcher()
    lib.cgc_validate_request.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint32,
        ctypes.c_uint64,
        ctypes.c_char_p,
        ctypes.c_size_t,
    )
    guarded = Guarded(MAX_REQUEST + 4096)
    why = ctypes.create_string_buffer(256)

    def run(data: bytes, nchannels: int, staging: int) -> tuple[int, str]:
        addr = ctypes.c_void_p(guarded.place(data))
        why.value = b"\xff"
        rc = lib.cgc_validate_request(addr, len(data), nchannels, staging, why, 256)
        return rc, why.value.decode()

    return run


@pytest.fixture(scope="module")
def validate() -> Validator:
    return make_validator()


def check_rejected(rc: int, why: str) -> None:
    assert rc > 0, "a malformed request was accepted"
    assert why and "\n" not in why, f"the reason must be one line, got {why!r}"


# ---- arbitrary bytes --------------------------------------------------------


@SETTINGS
@given(
    data=st.binary(max_size=MAX_REQUEST + 300),
    nchannels=st.integers(0, 4096),
    staging=st.integers(0, 1 << 32),
)
def test_arbitrary_bytes_never_crash(validate, data: bytes, nchannels: int, staging: int) -> None:
    rc, why = validate(data, nchannels, staging)
    assert rc >= 0
    if rc:
        check_rejected(rc, why)


@SETTINGS
@given(
    op=st.integers(0, OP_COUNT + 3),
    nslots=st.integers(0, MAX_REQUEST_SLOTS + 2),
    channel=st.one_of(st.integers(0, 40), st.just(NO_CHANNEL), st.integers(0, 2**32 - 1)),
    length=st.integers(0, MAX_REQUEST + 300),
    body=st.binary(max_size=MAX_REQUEST),
)
def test_random_headers_never_crash(
    validate, op: int, nslots: int, channel: int, length: int, body: bytes
) -> None:
    data = struct.pack("<IIIIIIQ", op, nslots, channel, 7, length, 0, 0) + body
    rc, why = validate(data, 32, 1 << 20)
    if rc == 0:
        # Whatever passed must really be consistent.
        assert op < OP_COUNT
        assert 1 <= nslots <= MAX_REQUEST_SLOTS and slots_for(length) == nslots
        assert 32 <= length <= len(data)
        assert channel == NO_CHANNEL or channel < 32
    else:
        check_rejected(rc, why)


# ---- well-formed requests -----------------------------------------------------

CHANNELS = 32
STAGING = 1 << 20

u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
handle = st.integers(1, U64)
small = st.integers(0, 1 << 40)


@st.composite
def device_range(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(0, 1 << 40))
    addr = draw(st.integers(0, U64 - size))
    return addr, size


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[str, bytes]:
    """A request the protocol allows, of any op, with any channel it may use."""
    op = draw(st.sampled_from(OPS))
    sync = op in SYNC_OPS
    channel = draw(st.integers(0, CHANNELS - 1))
    if not sync and draw(st.booleans()):
        channel = NO_CHANNEL
    ctx = draw(st.integers(0, U64))
    kind = OP_BODY[op]
    tail = b""
    fields: tuple[object, ...] = ()
    if kind == "ctx":
        h = draw(handle)
        fields = (h, draw(st.integers(0, 7)), draw(u32))
    elif kind == "mem":
        size = draw(st.integers(1, U64)) if op == "MEM_ALLOC" else draw(st.integers(0, U64))
        fields = (draw(st.integers(0, U64)), size)
    elif kind == "copy":
        dev, size = draw(device_range())
        other = draw(st.integers(0, U64 - size))
        async_ = draw(st.integers(0, 1))
        if op == "MEMCPY_DTOD":
            host_kind, host_off = draw(u32), draw(st.integers(0, U64))
            if channel == NO_CHANNEL:
                async_ = 1
        else:
            host_kind = draw(st.sampled_from([1, 2]))
            if host_kind == 1:
                channel = draw(st.integers(0, CHANNELS - 1))
                size = draw(st.integers(0, STAGING))
                host_off = draw(st.integers(0, STAGING - size))
                dev = draw(st.integers(0, U64 - size))
            else:
                host_off = draw(st.integers(0, U64 - size))
                if channel == NO_CHANNEL:
                    async_ = 1
        dst, src = (dev, other) if op != "MEMCPY_DTOH" else (other, dev)
        fields = (
            draw(st.integers(0, U64)),
            dst,
            src,
            size,
            host_off,
            host_kind,
            draw(u32),
            async_,
            draw(u32),
        )
    elif kind == "memset":
        elem = draw(st.sampled_from([1, 2, 4]))
        width = draw(st.integers(0, 1 << 24))
        height = draw(st.integers(1, 1 << 12))
        pitch = draw(st.integers(width * elem, width * elem + 4096)) if height > 1 else draw(small)
        span = width * elem + (pitch * (height - 1) if height > 1 else 0)
        dst = draw(st.integers(0, U64 - span))
        async_ = 1 if channel == NO_CHANNEL else draw(st.integers(0, 1))
        fields = (
            draw(st.integers(0, U64)),
            dst,
            pitch,
            width,
            height,
            draw(u32),
            elem,
            async_,
            draw(u32),
        )
    elif kind == "stream":
        h = draw(st.integers(3, U64)) if op == "STREAM_CREATE" else draw(st.integers(0, U64))
        fields = (h, draw(st.integers(0, U64)), draw(u32), draw(i32), draw(u32), 0)
    elif kind == "event":
        h = draw(handle) if op == "EVENT_CREATE" else draw(st.integers(0, U64))
        fields = (h, draw(st.integers(0, U64)), draw(st.integers(0, U64)), draw(u32), draw(u32))
    elif kind == "blob":
        total = draw(st.integers(1, MAX_BLOB))
        size = draw(st.integers(0, min(STAGING, total)))
        offset = draw(st.integers(0, total - size))
        fields = (offset, size, total)
    elif kind == "module":
        size = draw(st.integers(1, MAX_BLOB)) if op == "MODULE_LOAD" else draw(st.integers(0, U64))
        fields = (draw(handle), size)
    elif kind == "symbol":
        name = draw(
            st.binary(min_size=1, max_size=SYMBOL_SIZE - SYMBOL_NAME_OFFSET - 1).filter(
                lambda b: 0 not in b
            )
        )
        fn = draw(handle)
        full = draw(st.booleans())
        body = struct.pack("<QQ", draw(st.integers(0, U64)), fn) + name + b"\0"
        if full:
            body = body.ljust(SYMBOL_SIZE - 32, b"\0")
        n = 32 + len(body)
        hdr = HDR.pack(OPS.index(op), slots_for(n), channel, draw(u32), n, 0, ctx)
        return op, hdr + body
    elif kind == "func_attr":
        fields = (draw(st.integers(0, U64)), draw(i32), draw(i32))
    elif kind == "launch":
        args = draw(st.one_of(st.binary(max_size=1024), st.just(bytes(MAX_LAUNCH_ARGS))))
        fields = (
            draw(st.integers(0, U64)),
            draw(st.integers(0, U64)),
            *draw(st.tuples(u32, u32, u32, u32, u32, u32, u32)),
            len(args),
            draw(u32),
            0,
        )
        tail = args
    elif kind == "pin":
        size = draw(st.integers(1, U64)) if op == "HOST_REGISTER" else draw(st.integers(0, U64))
        fields = (draw(st.integers(0, U64)), size, draw(u32), draw(u32))
    elif kind == "host_func":
        fields = (draw(st.integers(0, U64)), draw(st.integers(0, U64)), draw(u32), 0)
    elif kind == "vmm":
        addr = draw(st.integers(0, U64))
        size = draw(st.integers(0, U64 - addr))
        naccess = draw(st.integers(1, 8)) if op == "VMM_SET_ACCESS" else draw(st.integers(0, 8))
        fields = (
            addr,
            size,
            *draw(st.tuples(*[st.integers(0, U64)] * 4)),
            *draw(st.tuples(u32, u32, i32, i32, u32)),
            naccess,
            *draw(st.tuples(*[i32] * 8)),
            *draw(st.tuples(*[u32] * 8)),
        )
    elif kind == "link":
        log = st.integers(0, MAX_LINK_LOG) if op == "LINK_CREATE" else st.integers(0, U64)
        fields = (
            draw(st.integers(1, U64)),
            draw(st.integers(1, MAX_BLOB) if op == "LINK_ADD" else st.integers(0, U64)),
            draw(log),
            draw(log),
            draw(st.integers(0, 2) if op == "LINK_READ" else u32),
            draw(u32),
            draw(st.binary(min_size=64, max_size=64)),
        )
    elif kind == "pool":
        nonzero = st.integers(1, U64)
        fields = (
            draw(st.integers(0, U64) if op == "POOL_FREE" else nonzero),
            draw(st.integers(0, U64)),
            draw(nonzero if op == "POOL_FREE" else st.integers(0, U64)),
            draw(nonzero if op == "POOL_ALLOC" else st.integers(0, U64)),
            draw(st.integers(0, U64)),
            draw(st.integers(0, 7) if op == "POOL_CREATE" else i32),
            *draw(st.tuples(u32, u32, u32)),
        )
    return op, request(op, *fields, channel=channel, token=draw(u32), ctx=ctx, tail=tail)


@SETTINGS
@given(req=well_formed())
def test_well_formed_requests_pass(validate, req: tuple[str, bytes]) -> None:
    op, data = req
    rc, why = validate(data, CHANNELS, STAGING)
    assert rc == 0, f"{op}: rejected a well-formed request: {why}"


@SETTINGS
@given(req=well_formed(), extra=st.integers(0, SLOT_DATA * 2))
def test_requests_padded_to_their_slots_pass(validate, req: tuple[str, bytes], extra: int) -> None:
    """The dispatcher hands the decoder whole slots: bytes past `length` are ignored."""
    op, data = req
    n = slots_for(len(data))
    padded = data.ljust(n * SLOT_DATA, b"\xa5")
    rc, why = validate(padded, CHANNELS, STAGING)
    assert rc == 0, f"{op}: {why}"


# ---- structured but wrong -------------------------------------------------------


def set_header(data: bytes, **kw: int) -> bytes:
    names = ("op", "nslots", "channel", "token", "length", "_pad", "ctx")
    vals = dict(zip(names, HDR.unpack_from(data), strict=True))
    vals.update(kw)
    return HDR.pack(*(vals[n] for n in names)) + data[HDR.size :]


def set_field(data: bytes, op: str, index: int, value: object) -> bytes:
    fmt = BODY[OP_BODY[op]]
    fields = list(struct.unpack_from(fmt, data, 32))
    fields[index] = value
    return data[:32] + struct.pack(fmt, *fields) + data[32 + struct.calcsize(fmt) :]


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, bytes]:
    """A well-formed request with exactly one thing broken."""
    op, data = draw(well_formed())
    (length,) = struct.unpack_from("<I", data, 16)
    (channel,) = struct.unpack_from("<I", data, 8)
    breakers: list[Callable[[], bytes]] = [
        lambda: set_header(data, op=draw(st.integers(OP_COUNT, 2**32 - 1))),
        lambda: set_header(data, nslots=0),
        lambda: set_header(data, nslots=draw(st.integers(MAX_REQUEST_SLOTS + 1, 2**32 - 1))),
        lambda: set_header(data, nslots=slots_for(length) + draw(st.integers(1, 3))),
        lambda: set_header(data, length=draw(st.integers(0, 31)), nslots=1),
        lambda: set_header(data, channel=draw(st.integers(CHANNELS, NO_CHANNEL - 1))),
        # Claim more bytes than were received.
        lambda: (
            set_header(
                data,
                length=len(data) + (k := draw(st.integers(1, SLOT_DATA))),
                nslots=slots_for(len(data) + k),
            )
            if len(data) + SLOT_DATA <= MAX_REQUEST
            else set_header(data, nslots=0)
        ),
    ]
    if op in SYNC_OPS:
        breakers.append(lambda: set_header(data, channel=NO_CHANNEL))
    kind = OP_BODY[op]
    if kind and kind != "symbol":
        # Too short for its own struct (but consistent in itself).
        def short() -> bytes:
            n = draw(st.integers(32, 32 + struct.calcsize(BODY[kind]) - 1))
            return set_header(data[:n], length=n, nslots=slots_for(n))

        breakers.append(short)
    if kind == "copy" and op != "MEMCPY_DTOD":
        (host_kind,) = struct.unpack_from("<I", data, 32 + 40)
        breakers.append(lambda: set_field(data, op, 5, draw(st.integers(3, 2**32 - 1))))
        breakers.append(lambda: set_field(data, op, 5, 0))
        if host_kind == 1:
            breakers.append(
                lambda: set_field(data, op, 4, STAGING + draw(st.integers(1, U64 - STAGING)))
            )
            breakers.append(lambda: set_field(set_field(data, op, 3, STAGING + 1), op, 4, 0))
            breakers.append(lambda: set_header(data, channel=NO_CHANNEL))
    if kind == "copy":
        dev_index = 2 if op == "MEMCPY_DTOH" else 1
        breakers.append(
            lambda: set_field(
                set_field(data, op, 3, draw(st.integers(1, 1 << 20))), op, dev_index, U64
            )
        )
    if kind == "memset":
        breakers.append(
            lambda: set_field(data, op, 6, draw(st.sampled_from([0, 3, 5, 8, 2**32 - 1])))
        )
        breakers.append(lambda: set_field(data, op, 4, 0))
        breakers.append(lambda: set_field(set_field(data, op, 3, 1 << 40), op, 1, U64 - 100))
        if channel == NO_CHANNEL:
            breakers.append(lambda: set_field(data, op, 7, 0))
    if kind == "blob":
        breakers.append(lambda: set_field(data, op, 2, 0))
        breakers.append(lambda: set_field(data, op, 2, MAX_BLOB + draw(st.integers(1, 1 << 40))))
        breakers.append(lambda: set_field(set_field(data, op, 2, STAGING * 4), op, 1, STAGING + 1))
        breakers.append(
            lambda: set_field(set_field(data, op, 2, 100), op, 0, draw(st.integers(101, U64)))
        )
    if kind == "link":
        breakers.append(lambda: set_field(data, op, 0, 0))
    if op == "LINK_ADD":
        breakers.append(lambda: set_field(data, op, 1, 0))
        breakers.append(lambda: set_field(data, op, 1, MAX_BLOB + draw(st.integers(1, 1 << 40))))
    if op == "LINK_CREATE":
        too_big = MAX_LINK_LOG + draw(st.integers(1, 1 << 40))
        breakers.append(lambda: set_field(data, op, 3, too_big))
    if op == "LINK_READ":
        breakers.append(lambda: set_field(data, op, 4, draw(st.integers(3, 2**32 - 1))))
    if op == "MODULE_LOAD":
        breakers.append(lambda: set_field(data, op, 1, 0))
        breakers.append(lambda: set_field(data, op, 0, 0))
    if kind == "symbol":

        def no_nul() -> bytes:
            name = draw(
                st.binary(min_size=1, max_size=SYMBOL_SIZE - SYMBOL_NAME_OFFSET).filter(
                    lambda b: 0 not in b
                )
            )
            body = data[32:SYMBOL_NAME_OFFSET] + name
            n = 32 + len(body) - 0
            return set_header(data[:32] + body, length=n, nslots=slots_for(n))

        breakers.append(no_nul)
        breakers.append(
            lambda: set_header(data[:SYMBOL_NAME_OFFSET], length=SYMBOL_NAME_OFFSET, nslots=1)
        )
        breakers.append(
            lambda: set_header(
                data[:SYMBOL_NAME_OFFSET] + b"\0" + data[SYMBOL_NAME_OFFSET + 1 :],
                length=length,
            )
        )
    if kind == "launch":
        breakers.append(
            lambda: set_field(
                data, op, 9, length - LAUNCH_SIZE + draw(st.integers(1, 2**32 - 1 - length))
            )
        )
    if op in ("CTX_CREATE", "PRIMARY_RETAIN"):
        breakers.append(
            lambda: set_field(
                data, op, 1, draw(st.one_of(st.integers(-(2**31), -1), st.integers(8, 2**31 - 1)))
            )
        )
        breakers.append(lambda: set_field(data, op, 0, 0))
    if op == "STREAM_CREATE":
        breakers.append(lambda: set_field(data, op, 0, draw(st.integers(0, 2))))
    if op == "EVENT_CREATE":
        breakers.append(lambda: set_field(data, op, 0, 0))
    if op == "MEM_ALLOC":
        breakers.append(lambda: set_field(data, op, 1, 0))
    if op == "HOST_REGISTER":
        breakers.append(lambda: set_field(data, op, 1, 0))
    if kind == "vmm":
        # A range that wraps around the address space.
        breakers.append(
            lambda: set_field(
                set_field(data, op, 0, U64 - 4095), op, 1, draw(st.integers(4096, U64))
            )
        )
        if op == "VMM_SET_ACCESS":
            breakers.append(
                lambda: set_field(data, op, 11, draw(st.sampled_from([0, 9, 2**32 - 1])))
            )
    if kind == "pool":
        if op == "POOL_FREE":
            breakers.append(lambda: set_field(data, op, 2, 0))
        else:
            breakers.append(lambda: set_field(data, op, 0, 0))
        if op == "POOL_ALLOC":
            breakers.append(lambda: set_field(data, op, 3, 0))
        if op == "POOL_CREATE":
            breakers.append(
                lambda: set_field(
                    data,
                    op,
                    5,
                    draw(st.one_of(st.integers(-(2**31), -1), st.integers(8, 2**31 - 1))),
                )
            )
    breaker = draw(st.sampled_from(breakers))
    return op, breaker()


@SETTINGS
@given(req=malformed())
def test_malformed_requests_are_rejected(validate, req: tuple[str, bytes]) -> None:
    op, data = req
    rc, why = validate(data, CHANNELS, STAGING)
    check_rejected(rc, why)
    assert rc == CUDA_ERROR_INVALID_VALUE, f"{op}: {rc} {why}"


def test_reason_names_the_problem(validate) -> None:
    rc, why = validate(request("NOP", nslots=0), CHANNELS, STAGING)
    assert rc == CUDA_ERROR_INVALID_VALUE and "slot count" in why
    rc, why = validate(request("MEM_ALLOC", 0, 4096), CHANNELS, STAGING)
    assert rc == CUDA_ERROR_INVALID_VALUE and "needs a channel" in why
    rc, why = validate(request(OP_COUNT + 5), CHANNELS, STAGING)
    assert rc == CUDA_ERROR_INVALID_VALUE and "unknown op" in why
    copy = request("MEMCPY_HTOD", 0, 1 << 45, 0, 64, STAGING - 8, 1, 0, 0, 0, channel=3)
    rc, why = validate(copy, CHANNELS, STAGING)
    assert rc == CUDA_ERROR_INVALID_VALUE and "staging" in why
    assert validate(b"", CHANNELS, STAGING)[0] == CUDA_ERROR_INVALID_VALUE
