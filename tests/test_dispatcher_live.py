"""The native dispatcher serving a real segment on the fake driver.

A small server process loads the fake driver and libcedana-gpu-controller.so
and serves one job's segment; this test process plays the job, writing
requests into the ring by hand: good ones (a kernel runs, results come back)
and bad ones (every one answered with an error, the server never dies, and
never touches memory outside the job's own allocations and segment).
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dispatcher_proto import (
    HOST_PINNED,
    HOST_STAGING,
    NO_CHANNEL,
    OP,
    OP_COUNT,
    REQ_FMT,
    SLOT_DATA,
    Segment,
    request,
    slots_for,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from preload import set_child_preload
from test_dispatcher_fuzz import Validator, make_validator, malformed

from cedana_gpu.paths import kernels_dir, native_dir

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

CUDA_SUCCESS = 0
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_NOT_READY = 600
CUDA_ERROR_INVALID_CONTEXT = 201
CUDA_ERROR_INVALID_HANDLE = 400
CUDA_ERROR_NOT_FOUND = 500
CUDA_ERROR_LAUNCH_TIMEOUT = 702
CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713

STATE_RUNNING, STATE_FROZEN, STATE_DEAD = 1, 3, 5
CTX = 0x0C00_0000_0000_0001
MODULE = 0x0D00_0000_0000_0001
FUNC_ADD = 0x0F00_0000_0000_0001
FUNC_AXPY = 0x0F00_0000_0000_0002

SERVER = r"""
import ctypes, json, os, sys
sys.path.insert(0, sys.argv[2])
from dispatcher_proto import Config, load_dispatcher, load_fake_driver

load_fake_driver()
lib = load_dispatcher()

def config(job_id, va_base=0):
    return Config(job_id=job_id.encode(), ring_slots=1024, nchannels=8, staging_size=1 << 16,
                  va_base=va_base, generation=1, timeout_ms=int(sys.argv[3]),
                  uid=os.getuid(), gid=os.getgid(),
                  shm_dir=sys.argv[4].encode() or None, segment_name=sys.argv[5].encode() or None)

def say(**kw):
    print(json.dumps(kw), flush=True)

h = ctypes.c_void_p()
cfg = config(sys.argv[1])
rc = lib.cgc_open(ctypes.byref(cfg), ctypes.byref(h))
if rc:
    say(rc=rc, error=lib.cgc_last_error(None).decode())
    sys.exit(1)
rc = lib.cgc_start(h)
say(rc=rc, error=lib.cgc_last_error(h).decode())
buf = ctypes.create_string_buffer(1 << 16)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "info":
        rc = lib.cgc_info_json(h, buf, len(buf))
        say(rc=rc, info=json.loads(buf.value) if rc == 0 else None)
    elif cmd == "freeze":
        rc = lib.cgc_freeze(h, int(args[0]))
        say(rc=rc, error=lib.cgc_last_error(h).decode())
    elif cmd == "unfreeze":
        say(rc=lib.cgc_unfreeze(h), error=lib.cgc_last_error(h).decode())
    elif cmd == "open2":
        h2 = ctypes.c_void_p()
        cfg2 = config(args[0], int(args[1]))
        rc = lib.cgc_open(ctypes.byref(cfg2), ctypes.byref(h2))
        err = lib.cgc_last_error(None if rc else h2).decode()
        if rc == 0:
            lib.cgc_close(h2)
        say(rc=rc, error=err)
    elif cmd == "stop":
        say(rc=lib.cgc_stop(h))
    elif cmd == "quit":
        lib.cgc_close(h)
        say(rc=0)
        break
"""


class Server:
    def __init__(
        self, job_id: str, timeout_ms: int = 5000, shm_dir: Path | None = None, name: str = ""
    ) -> None:
        self.job_id = job_id
        self.path = (shm_dir or Path("/dev/shm")) / (name or f"cedana-gpu.{job_id}")
        env = dict(os.environ)
        env["CEDANA_GPU_NATIVE_DIR"] = str(native_dir())
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        set_child_preload(env)
        for key in [k for k in env if k.startswith("FAKE_CUDA_")]:
            del env[key]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVER,
                job_id,
                str(TESTS),
                str(timeout_ms),
                str(shm_dir or ""),
                name,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        first = self.read()
        assert first["rc"] == 0, first
        self.seg = Segment(job_id, self.path)

    def read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the controller died (exit {self.proc.wait()})"
        return json.loads(line)

    def cmd(self, *words: object) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def info(self) -> dict:
        reply = self.cmd("info")
        assert reply["rc"] == 0
        return reply["info"]

    def alive(self) -> None:
        assert self.proc.poll() is None, f"the controller died (exit {self.proc.returncode})"
        # And still answers the job.
        assert self.seg.call("NOP", ch=0).result == CUDA_SUCCESS

    def close(self) -> int:
        self.seg.close()
        if self.proc.poll() is None:
            self.cmd("quit")
        return self.proc.wait(timeout=60)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(f"t-live-{uuid.uuid4().hex[:12]}")
    try:
        yield s
    finally:
        rc = s.close()
    assert rc == 0
    assert not s.path.exists(), "segment left behind"


def retain(seg: Segment) -> None:
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)


def alloc(seg: Segment, size: int) -> int:
    r = seg.call("MEM_ALLOC", 0, size, ctx=CTX)
    assert r.result == CUDA_SUCCESS, r
    return r.ret[0]


def htod(seg: Segment, dst: int, data: bytes, ch: int = 0) -> int:
    seg.write_staging(ch, data)
    return seg.call(
        "MEMCPY_HTOD", 0, dst, 0, len(data), 0, HOST_STAGING, 0, 0, 0, ctx=CTX, ch=ch
    ).result


def dtoh(seg: Segment, src: int, n: int, ch: int = 0) -> tuple[int, bytes]:
    r = seg.call("MEMCPY_DTOH", 0, 0, src, n, 0, HOST_STAGING, 0, 0, 0, ctx=CTX, ch=ch)
    return r.result, seg.read_staging(ch, n)


def load_module(seg: Segment, image: bytes, handle: int = MODULE) -> int:
    off = 0
    while off < len(image):
        chunk = image[off : off + seg.staging_size]
        seg.write_staging(0, chunk)
        r = seg.call("BLOB_PUT", off, len(chunk), len(image), ctx=CTX)
        assert r.result == CUDA_SUCCESS, r
        off += len(chunk)
    return seg.call("MODULE_LOAD", handle, len(image), ctx=CTX).result


def vector_add_image() -> bytes:
    return (kernels_dir() / "vector_add.fake.so").read_bytes()


def get_function(seg: Segment, fn: int, name: bytes, module: int = MODULE) -> list[tuple[int, int]]:
    r = seg.call("MODULE_GET_FUNCTION", module, fn, name, ctx=CTX)
    assert r.result == CUDA_SUCCESS, r
    n = r.ret[0]
    raw = struct.unpack(f"<{2 * n}I", seg.read_staging(0, 8 * n))
    return list(zip(raw[::2], raw[1::2], strict=True))


def launch(seg: Segment, fn: int, grid: int, block: int, args: bytes, stream: int = 0) -> None:
    seg.post("LAUNCH", fn, stream, grid, 1, 1, block, 1, 1, 0, len(args), 0, 0, ctx=CTX, tail=args)


def sync(seg: Segment, stream: int = 0) -> int:
    return seg.call("STREAM_SYNCHRONIZE", stream, 0, 0, 0, 0, 0, ctx=CTX).result


def floats(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


# ---- the segment --------------------------------------------------------------


def test_segment_is_private_and_described(server: Server) -> None:
    path = Path(f"/dev/shm/cedana-gpu.{server.job_id}")
    st_ = path.stat()
    assert stat.S_IMODE(st_.st_mode) == 0o600
    assert st_.st_uid == os.getuid()
    seg = server.seg
    assert seg.size == 65536 + 1024 * 256 + 8 * (4096 + (1 << 16))
    assert seg.state == STATE_RUNNING
    assert seg.ring_slots == 1024 and seg.nchannels == 8 and seg.staging_size == 1 << 16
    assert seg.va_base and seg.va_size
    assert seg.device_count() >= 1
    name = bytes(seg.mm[4616 : 4616 + 256]).split(b"\0")[0]
    assert name
    max_threads = struct.unpack_from("<i", seg.mm, 4616 + 256 + 16 + 8 + 8 + 4 * 1)[0]
    assert max_threads == 1024
    beat = seg.heartbeat
    deadline = time.monotonic() + 10
    while seg.heartbeat == beat:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.01)


def test_runs_a_kernel(server: Server) -> None:
    seg = server.seg
    retain(seg)
    n = 1000
    a, b, c = alloc(seg, 4 * n), alloc(seg, 4 * n), alloc(seg, 4 * n)
    assert seg.va_base <= a < seg.va_base + seg.va_size
    assert htod(seg, a, floats([float(i) for i in range(n)])) == CUDA_SUCCESS
    assert htod(seg, b, floats([2.0 * i for i in range(n)])) == CUDA_SUCCESS
    assert load_module(seg, vector_add_image()) == CUDA_SUCCESS
    assert get_function(seg, FUNC_ADD, b"vector_add") == [(0, 8), (8, 8), (16, 8), (24, 4)]
    launch(seg, FUNC_ADD, (n + 255) // 256, 256, struct.pack("<QQQi", a, b, c, n))
    assert sync(seg) == CUDA_SUCCESS
    rc, out = dtoh(seg, c, 4 * n)
    assert rc == CUDA_SUCCESS
    assert list(struct.unpack(f"<{n}f", out)) == [3.0 * i for i in range(n)]

    # A module global: written by a copy, read by the kernel.
    r = seg.call("MODULE_GET_GLOBAL", MODULE, 0, b"axpy_alpha", ctx=CTX)
    assert r.result == CUDA_SUCCESS and r.ret[1] == 4
    assert htod(seg, r.ret[0], floats([0.5])) == CUDA_SUCCESS
    get_function(seg, FUNC_AXPY, b"axpy")
    launch(seg, FUNC_AXPY, (n + 255) // 256, 256, struct.pack("<QQi", a, c, n))
    rc, out = dtoh(seg, c, 4 * n)
    assert list(struct.unpack(f"<{n}f", out)) == [3.5 * i for i in range(n)]

    # Memset, device-to-device copy, free.
    seg.post("MEMSET", 0, c, 0, n, 1, 0x3F800000, 4, 1, 0, ctx=CTX)
    assert seg.call("MEMCPY_DTOD", 0, a, c, 4 * n, 0, 0, 0, 0, 0, ctx=CTX).result == CUDA_SUCCESS
    rc, out = dtoh(seg, a, 4 * n)
    assert set(struct.unpack(f"<{n}f", out)) == {1.0}
    info = server.info()
    assert info["allocations"] == 3 and info["modules"] == 1 and info["functions"] == 2
    assert info["launches"] == 2 and info["globals"] == 1
    assert seg.call("MEM_FREE", a, 0, ctx=CTX).result == CUDA_SUCCESS
    assert server.info()["allocations"] == 2
    assert seg.async_error == 0


def test_streams_and_events(server: Server) -> None:
    seg = server.seg
    retain(seg)
    stream, ev0, ev1 = 0x0500_0000_0000_0001, 0x0E00_0000_0000_0001, 0x0E00_0000_0000_0002
    seg.post("STREAM_CREATE", stream, 0, 1, 0, 0, 0, ctx=CTX)
    seg.post("EVENT_CREATE", ev0, 0, 0, 0, 0, ctx=CTX)
    seg.post("EVENT_CREATE", ev1, 0, 0, 0, 0, ctx=CTX)
    a = alloc(seg, 1 << 20)
    seg.post("EVENT_RECORD", ev0, stream, 0, 0, 0, ctx=CTX)
    seg.post("MEMSET", stream, a, 0, 1 << 18, 1, 7, 4, 1, 0, ctx=CTX)
    seg.post("EVENT_RECORD", ev1, stream, 0, 0, 0, ctx=CTX)
    assert seg.call("EVENT_SYNCHRONIZE", ev1, 0, 0, 0, 0, ctx=CTX).result == CUDA_SUCCESS
    assert seg.call("EVENT_QUERY", ev1, 0, 0, 0, 0, ctx=CTX).result == CUDA_SUCCESS
    r = seg.call("EVENT_ELAPSED", ev0, 0, ev1, 0, 0, ctx=CTX)
    assert r.result == CUDA_SUCCESS
    (ms,) = struct.unpack("<f", struct.pack("<I", r.ret[0] & 0xFFFFFFFF))
    assert ms >= 0.0
    seg.post("STREAM_WAIT_EVENT", 0, ev1, 0, 0, 0, 0, ctx=CTX)
    assert sync(seg, stream) == CUDA_SUCCESS
    assert seg.call("STREAM_QUERY", stream, 0, 0, 0, 0, 0, ctx=CTX).result == CUDA_SUCCESS
    assert server.info()["streams"] == 1 and server.info()["events"] == 2
    seg.post("EVENT_DESTROY", ev0, 0, 0, 0, 0, ctx=CTX)
    seg.post("STREAM_DESTROY", stream, 0, 0, 0, 0, 0, ctx=CTX)
    server.alive()
    assert server.info()["streams"] == 0 and server.info()["events"] == 1
    assert seg.async_error == 0


def test_pinned_memory(server: Server) -> None:
    seg = server.seg
    retain(seg)
    pin_id, size = 7, 1 << 16
    path = Path(f"/dev/shm/cedana-gpu.{server.job_id}.pin.{pin_id}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, bytes(range(256)) * 16, 0)
        assert seg.call("HOST_REGISTER", 0, size, pin_id, 0, ctx=CTX).result == CUDA_SUCCESS
        a = alloc(seg, size)
        seg.post("MEMCPY_HTOD", 0, a, 0, 4096, 0, HOST_PINNED, pin_id, 1, 0, ctx=CTX)
        r = seg.call("MEMCPY_DTOH", 0, 0, a, 4096, 8192, HOST_PINNED, pin_id, 0, 0, ctx=CTX)
        assert r.result == CUDA_SUCCESS
        assert os.pread(fd, 4096, 8192) == bytes(range(256)) * 16
        # Outside the pinned file, or a file never registered.
        bad = seg.call("MEMCPY_DTOH", 0, 0, a, 4096, size - 100, HOST_PINNED, pin_id, 0, 0, ctx=CTX)
        assert bad.result == CUDA_ERROR_INVALID_VALUE
        bad = seg.call("MEMCPY_DTOH", 0, 0, a, 16, 0, HOST_PINNED, pin_id + 1, 0, 0, ctx=CTX)
        assert bad.result == CUDA_ERROR_INVALID_VALUE
        assert server.info()["pins"] == 1
        assert seg.call("HOST_UNREGISTER", 0, size, pin_id, 0, ctx=CTX).result == CUDA_SUCCESS
        r = seg.call("HOST_UNREGISTER", 0, size, pin_id, 0, ctx=CTX)
        assert r.result == CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED
    finally:
        os.close(fd)
        path.unlink()
    server.alive()


def test_pin_file_must_be_a_regular_file_not_a_link(server: Server, tmp_path: Path) -> None:
    seg = server.seg
    retain(seg)
    target = tmp_path / "secret"
    target.write_bytes(b"x" * 8192)
    link = Path(f"/dev/shm/cedana-gpu.{server.job_id}.pin.3")
    link.symlink_to(target)
    try:
        assert seg.call("HOST_REGISTER", 0, 4096, 3, 0, ctx=CTX).result == CUDA_ERROR_INVALID_VALUE
    finally:
        link.unlink()
    # Missing file; a file smaller than claimed.
    assert seg.call("HOST_REGISTER", 0, 4096, 4, 0, ctx=CTX).result == CUDA_ERROR_INVALID_VALUE
    small = Path(f"/dev/shm/cedana-gpu.{server.job_id}.pin.5")
    small.write_bytes(b"y" * 100)
    try:
        assert seg.call("HOST_REGISTER", 0, 4096, 5, 0, ctx=CTX).result == CUDA_ERROR_INVALID_VALUE
    finally:
        small.unlink()
    assert server.info()["pins"] == 0


def test_host_function_runs_in_the_job(server: Server) -> None:
    seg = server.seg
    retain(seg)
    seg.post("HOST_FUNC", 0, 4242, 0, 0, ctx=CTX)
    # Play the job's callback thread: take the posted entry, say it returned.
    deadline = time.monotonic() + 20
    while seg.u64(456) == 0:
        assert time.monotonic() < deadline, "host function never posted"
        time.sleep(0.001)
    entry = 512
    assert seg.u64(entry) == 4242
    struct.pack_into("<Q", seg.mm, 464, 1)  # cb_tail
    struct.pack_into("<I", seg.mm, entry + 8, 1)  # done
    assert sync(seg) == CUDA_SUCCESS
    assert seg.async_error == 0


def test_host_function_of_a_gone_job_gives_up() -> None:
    s = Server(f"t-live-{uuid.uuid4().hex[:12]}", timeout_ms=300)
    try:
        retain(s.seg)
        s.seg.post("HOST_FUNC", 0, 1, 0, 0, ctx=CTX)
        # Nobody takes the callback: after the timeout the stream moves on,
        # and the job hears of it through the sticky error.
        assert sync(s.seg) == CUDA_SUCCESS
        assert s.seg.clear_async_error() == CUDA_ERROR_LAUNCH_TIMEOUT
        s.alive()
    finally:
        assert s.close() == 0


# ---- freeze, stop ----------------------------------------------------------------


def test_freeze_parks_the_ring(server: Server) -> None:
    seg = server.seg
    retain(seg)
    assert server.cmd("freeze", 5000)["rc"] == 0
    assert seg.state == STATE_FROZEN
    assert server.info()["state"] == "frozen"
    tok = seg.next_token()
    seg.submit(request("NOP", channel=1, token=tok))
    time.sleep(0.2)
    assert seg.u32(seg.channel_off(1) + 4) != tok, "served a request while frozen"
    assert server.cmd("unfreeze")["rc"] == 0
    assert seg.state == STATE_RUNNING
    assert seg.wait(1, tok).result == CUDA_SUCCESS


def test_freeze_times_out_on_a_busy_job(server: Server) -> None:
    seg = server.seg
    struct.pack_into("<I", seg.mm, 100, 1)  # a job thread inside a call
    reply = server.cmd("freeze", 150)
    assert reply["rc"] != 0
    assert reply["error"].startswith("freeze timed out after 150 ms: the job is busy in 1 call")
    assert seg.state == STATE_RUNNING
    struct.pack_into("<I", seg.mm, 100, 0)
    server.alive()


def test_stop_marks_the_segment_dead(server: Server) -> None:
    assert server.cmd("stop")["rc"] == 0
    assert server.seg.state == STATE_DEAD
    assert server.info()["state"] == "dead"


def test_fixed_device_range_that_is_taken_fails_loudly(server: Server) -> None:
    reply = server.cmd("open2", f"t-live-{uuid.uuid4().hex[:12]}", server.seg.va_base)
    assert reply["rc"] != 0
    assert "is not available" in reply["error"]
    assert f"0x{server.seg.va_base:x}" in reply["error"]
    server.alive()


def test_segment_in_its_own_directory_under_its_own_name(tmp_path: Path) -> None:
    """A job with a private /dev/shm: segment and pinned files live in that
    directory, and a restored job keeps its segment's old name."""
    s = Server(f"t-live-{uuid.uuid4().hex[:12]}", shm_dir=tmp_path, name="cedana-gpu.old-name")
    try:
        assert s.path == tmp_path / "cedana-gpu.old-name" and s.path.is_file()
        assert s.info()["segment"] == str(s.path)
        retain(s.seg)
        pin = tmp_path / "cedana-gpu.old-name.pin.2"
        pin.write_bytes(b"\x11" * 8192)
        assert s.seg.call("HOST_REGISTER", 0, 8192, 2, 0, ctx=CTX).result == CUDA_SUCCESS
        assert s.info()["pins"] == 1
        s.alive()
    finally:
        assert s.close() == 0
    assert not s.path.exists()
    assert not pin.exists(), "pinned files go with the controller"


def test_bad_segment_names_are_refused(tmp_path: Path) -> None:
    for name in ("../escape", ".hidden", "a/b"):
        with pytest.raises(AssertionError, match="invalid segment name"):
            Server(f"t-live-{uuid.uuid4().hex[:12]}", shm_dir=tmp_path, name=name)
    assert list(tmp_path.iterdir()) == []


# ---- bad requests -----------------------------------------------------------------


def test_bad_handles_and_addresses_get_errors(server: Server) -> None:
    seg = server.seg
    retain(seg)
    a = alloc(seg, 4096)  # one granule: [a, a + 2 MiB)
    assert load_module(seg, vector_add_image()) == CUDA_SUCCESS
    get_function(seg, FUNC_ADD, b"vector_add")
    gran = server.info()["granularity"]
    cases = [
        # (request, expected result)
        (dict(op="MEM_ALLOC", fields=(0, 4096), ctx=0x1234), CUDA_ERROR_INVALID_CONTEXT),
        (dict(op="MEM_ALLOC", fields=(0, 4096), ctx=0), CUDA_ERROR_INVALID_CONTEXT),
        (dict(op="MEM_FREE", fields=(a + 8, 0)), CUDA_ERROR_INVALID_VALUE),
        (dict(op="MEM_FREE", fields=(0xDEAD0000, 0)), CUDA_ERROR_INVALID_VALUE),
        # Copies outside the job's allocations: below, past the end, unmapped.
        (
            dict(op="MEMCPY_HTOD", fields=(0, 0x1000, 0, 8, 0, HOST_STAGING, 0, 0, 0)),
            CUDA_ERROR_INVALID_VALUE,
        ),
        (
            dict(op="MEMCPY_HTOD", fields=(0, a + gran - 8, 0, 64, 0, HOST_STAGING, 0, 0, 0)),
            CUDA_ERROR_INVALID_VALUE,
        ),
        (
            dict(op="MEMCPY_DTOH", fields=(0, 0, a + 16 * gran, 8, 0, HOST_STAGING, 0, 0, 0)),
            CUDA_ERROR_INVALID_VALUE,
        ),
        (
            dict(op="MEMCPY_DTOH", fields=(0, 0, id(seg), 8, 0, HOST_STAGING, 0, 0, 0)),
            CUDA_ERROR_INVALID_VALUE,
        ),
        (
            dict(op="MEMCPY_DTOD", fields=(0, a, 0x7F0000000000, 8, 0, 0, 0, 0, 0)),
            CUDA_ERROR_INVALID_VALUE,
        ),
        (dict(op="MEMSET", fields=(0, a, 0, gran, 1, 0, 4, 0, 0)), CUDA_ERROR_INVALID_VALUE),
        (dict(op="MEMSET", fields=(0, a, gran, 8, 2, 0, 4, 0, 0)), CUDA_ERROR_INVALID_VALUE),
        (
            dict(
                op="MEMCPY_HTOD", fields=(0, a, 0, 64, seg.staging_size - 8, HOST_STAGING, 0, 0, 0)
            ),
            CUDA_ERROR_INVALID_VALUE,
        ),
        # Handles that do not exist.
        (dict(op="STREAM_SYNCHRONIZE", fields=(0x999, 0, 0, 0, 0, 0)), CUDA_ERROR_INVALID_HANDLE),
        (dict(op="EVENT_QUERY", fields=(0x999, 0, 0, 0, 0)), CUDA_ERROR_INVALID_HANDLE),
        (dict(op="EVENT_SYNCHRONIZE", fields=(0x999, 0, 0, 0, 0)), CUDA_ERROR_INVALID_HANDLE),
        (dict(op="MODULE_UNLOAD", fields=(0x999, 0)), CUDA_ERROR_INVALID_HANDLE),
        (
            dict(op="MODULE_GET_FUNCTION", fields=(0x999, 0x77, b"vector_add")),
            CUDA_ERROR_INVALID_HANDLE,
        ),
        (
            dict(op="MODULE_GET_FUNCTION", fields=(MODULE, 0x77, b"no_such_kernel")),
            CUDA_ERROR_NOT_FOUND,
        ),
        (dict(op="FUNC_GET_ATTRIBUTE", fields=(0x999, 0, 0)), CUDA_ERROR_INVALID_HANDLE),
        (dict(op="CTX_DESTROY", fields=(0x999, 0, 0)), CUDA_ERROR_INVALID_CONTEXT),
        (dict(op="CTX_DESTROY", fields=(CTX, 0, 0)), CUDA_ERROR_INVALID_CONTEXT),  # primary
        (
            dict(op="HOST_UNREGISTER", fields=(0, 4096, 99, 0)),
            CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED,
        ),
        # A module load without its image, or with a gap in it.
        (dict(op="MODULE_LOAD", fields=(0x5555, 100)), CUDA_ERROR_INVALID_VALUE),
        (dict(op="BLOB_PUT", fields=(64, 8, 1000)), CUDA_ERROR_INVALID_VALUE),
        # Creating what exists already.
        (dict(op="MODULE_LOAD", fields=(MODULE, 100)), CUDA_ERROR_INVALID_VALUE),
    ]
    for case, expected in cases:
        r = seg.call(case["op"], *case["fields"], ctx=case.get("ctx", CTX), ch=2)
        assert r.result == expected, f"{case}: got {r.result}"
    # The blob that a gap broke, then a real image in the wrong size.
    seg.write_staging(0, b"\0" * 16)
    assert seg.call("BLOB_PUT", 0, 16, 32, ctx=CTX).result == CUDA_SUCCESS
    assert seg.call("MODULE_LOAD", 0x5556, 16, ctx=CTX).result == CUDA_ERROR_INVALID_VALUE
    server.alive()
    assert seg.async_error == 0


def test_bad_queued_requests_raise_the_sticky_error(server: Server) -> None:
    seg = server.seg
    retain(seg)
    a = alloc(seg, 4096)
    assert load_module(seg, vector_add_image()) == CUDA_SUCCESS
    get_function(seg, FUNC_ADD, b"vector_add")
    # Unknown function; arguments shorter than the kernel's parameters;
    # unknown stream; a queued memset outside the allocations.
    queued = [
        (
            dict(op="LAUNCH", fields=(0x4444, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0)),
            CUDA_ERROR_INVALID_HANDLE,
        ),
        (
            dict(op="LAUNCH", fields=(FUNC_ADD, 0, 1, 1, 1, 1, 1, 1, 0, 8, 0, 0), tail=b"\0" * 8),
            CUDA_ERROR_INVALID_VALUE,
        ),
        (
            dict(
                op="LAUNCH",
                fields=(FUNC_ADD, 0x4545, 1, 1, 1, 1, 1, 1, 0, 28, 0, 0),
                tail=b"\0" * 28,
            ),
            CUDA_ERROR_INVALID_HANDLE,
        ),
        (dict(op="MEMSET", fields=(0, a - 4096, 0, 16, 1, 0, 1, 1, 0)), CUDA_ERROR_INVALID_VALUE),
        (dict(op="STREAM_DESTROY", fields=(0x4545, 0, 0, 0, 0, 0)), CUDA_ERROR_INVALID_HANDLE),
        (dict(op="EVENT_RECORD", fields=(0x4545, 0, 0, 0, 0)), CUDA_ERROR_INVALID_HANDLE),
        (dict(op="NOP", fields=(), raw=request("NOP", nslots=0)), CUDA_ERROR_INVALID_VALUE),
    ]
    for case, expected in queued:
        if "raw" in case:
            seg.submit(case["raw"], nslots=1)
        else:
            seg.post(case["op"], *case["fields"], ctx=CTX, tail=case.get("tail", b""))
        server.alive()
        assert seg.clear_async_error() == expected, case
    info = server.info()
    assert info["async_errors"] >= len(queued) and info["invalid"] >= 1


def test_lying_slot_count_swallows_only_the_liars_tickets(server: Server) -> None:
    seg = server.seg
    # Claims three slots but takes one ticket: the next two tickets' requests
    # are read as its continuation; the controller answers it with an error
    # and carries on with the ticket after.
    tok = seg.next_token()
    liar = request("NOP", channel=3, token=tok, nslots=3)
    seg.submit(liar, nslots=1)
    seg.submit(request("NOP", channel=4, token=77))
    seg.submit(request("NOP", channel=4, token=78))
    assert seg.wait(3, tok).result == CUDA_ERROR_INVALID_VALUE
    server.alive()


def test_garbage_slots(server: Server) -> None:
    seg = server.seg
    for pattern in (b"\xff", b"\x00", b"\xa5", bytes(range(256))):
        seg.submit((pattern * SLOT_DATA)[:SLOT_DATA], nslots=1)
        server.alive()
        seg.clear_async_error()
    # Every op with nothing but zeros after its header, on a channel.
    for op in range(OP_COUNT):
        tok = seg.next_token()
        seg.submit(request(op, channel=5, token=tok, length=32, nslots=1)[:32], nslots=1)
        r = seg.wait(5, tok)
        assert r.result in (CUDA_SUCCESS, CUDA_ERROR_INVALID_VALUE), (op, r)
        assert (r.result == CUDA_SUCCESS) == (op == OP["NOP"])
    server.alive()


LIVE = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _consistent_slots(data: bytes) -> int:
    (nslots,) = struct.unpack_from("<I", data, 4)
    return nslots if 1 <= nslots <= 64 else 1


@pytest.fixture(scope="module")
def decoder() -> Validator:
    return make_validator()


@LIVE
@given(req=malformed())
def test_malformed_requests_answered_live(
    server: Server, decoder: Validator, req: tuple[str, bytes]
) -> None:
    """What the decoder rejects, the live controller answers with an error."""
    op, data = req
    seg = server.seg
    (channel,) = struct.unpack_from("<I", data, 8)
    tok = seg.next_token()
    data = data[:12] + struct.pack("<I", tok) + data[16:]
    # A job that lies in its header but keeps the ring discipline: it takes
    # as many tickets as it claims (one, for a claim the ring cannot hold).
    n = _consistent_slots(data)
    data = data[: n * SLOT_DATA].ljust(n * SLOT_DATA, b"\0")
    assume(decoder(data, seg.nchannels, seg.staging_size)[0] != 0)
    seg.submit(data, nslots=n)
    if channel < seg.nchannels:
        assert seg.wait(channel, tok).result != CUDA_SUCCESS, op
    else:
        server.alive()
        assert seg.clear_async_error() != 0, op
    server.alive()


@LIVE
@given(
    op=st.integers(0, OP_COUNT + 2).filter(lambda o: o != OP["HOST_FUNC"]),
    body=st.binary(min_size=0, max_size=3 * SLOT_DATA),
    ctx=st.sampled_from([0, CTX, 0x1234]),
)
def test_random_payloads_answered_live(server: Server, op: int, body: bytes, ctx: int) -> None:
    """Anything after a sane header is answered on its channel, never a crash.

    (Host functions are left out: nobody here would run them.)"""
    seg = server.seg
    retain(seg)
    tok = seg.next_token()
    length = 32 + len(body)
    seg.submit(struct.pack(REQ_FMT, op, slots_for(length), 6, tok, length, 0, ctx) + body)
    r = seg.wait(6, tok, timeout=60)
    assert isinstance(r.result, int)
    seg.clear_async_error()
    server.alive()


def test_truncated_pin_file_reads_as_zeros(server: Server) -> None:
    seg = server.seg
    retain(seg)
    pin_id, size = 9, 1 << 16
    path = Path(f"/dev/shm/cedana-gpu.{server.job_id}.pin.{pin_id}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, b"\x5a" * size, 0)
        assert seg.call("HOST_REGISTER", 0, size, pin_id, 0, ctx=CTX).result == CUDA_SUCCESS
        a = alloc(seg, size)
        os.ftruncate(fd, 0)  # the job pulls the pages away
        r = seg.call("MEMCPY_HTOD", 0, a, 0, size, 0, HOST_PINNED, pin_id, 0, 0, ctx=CTX)
        assert r.result == CUDA_SUCCESS
        rc, out = dtoh(seg, a, 4096)
        assert rc == CUDA_SUCCESS and out == bytes(4096)
        server.alive()
    finally:
        os.close(fd)
        path.unlink()


def test_truncated_segment_does_not_kill_the_controller(server: Server) -> None:
    seg = server.seg
    retain(seg)
    a = alloc(seg, 4096)
    seg.post("MEMSET", 0, a, 0, 1024, 1, 0, 4, 1, 0, ctx=CTX)
    os.truncate(f"/dev/shm/cedana-gpu.{server.job_id}", 4096)
    # The controller's next look at its ring faults; it must survive that.
    deadline = time.monotonic() + 20
    while not server.info()["poisoned"]:
        assert time.monotonic() < deadline, "the controller never noticed"
        time.sleep(0.01)
    assert server.proc.poll() is None
    assert server.cmd("stop")["rc"] == 0


def test_nothing_answered_on_a_channel_outside_the_geometry(server: Server) -> None:
    seg = server.seg
    # The job grows nchannels in the header: the controller keeps its own.
    struct.pack_into("<I", seg.mm, 44, 1000)
    seg.submit(request("NOP", channel=500, token=5))
    server.alive()
    assert seg.clear_async_error() == CUDA_ERROR_INVALID_VALUE
    seg.submit(request("NOP", channel=NO_CHANNEL))
    server.alive()
