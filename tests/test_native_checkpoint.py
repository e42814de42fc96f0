"""Checkpoint support of the native dispatcher (libcedana-gpu-controller.so).

cgc_checksum against known CRC32C values; then, on the fake driver, a job's
GPU state driven through the ring by hand (tests/dispatcher_proto.py), frozen,
exported (cgc_export_state, cgc_regions, cgc_read_device), and imported into a
second controller at the same device addresses (cgc_import_state,
cgc_write_device): the job's old handles and pointers work there. Also the
refusals of an import that cannot fit, and a dump of 100,000 allocations
(carved into slabs, restored at the same addresses). What these cost is
measured by bench/checkpoint.py and bench/checksum.py, not here.

Controllers run in a helper process (the fake driver runs kernels in the
process that loads it); this process plays the job.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import random
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dispatcher_proto import HOST_PINNED, HOST_STAGING, Segment
from preload import set_child_preload

from cedana_gpu.controller import shm_layout
from cedana_gpu.paths import kernels_dir, native_dir

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

CUDA_SUCCESS = 0
CTX = 0x0C00_0000_0000_0001
CTX2 = 0x0C00_0000_0000_0002
MODULE = 0x0D00_0000_0000_0001
FUNC_ADD = 0x0F00_0000_0000_0001
FUNC_AXPY = 0x0F00_0000_0000_0002
STREAM = 0x0500_0000_0000_0001
EV0, EV1 = 0x0E00_0000_0000_0001, 0x0E00_0000_0000_0002


# ---- cgc_checksum ----------------------------------------------------------------


def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(native_dir() / "controller" / "libcedana-gpu-controller.so"))
    lib.cgc_checksum.restype = ctypes.c_uint64
    lib.cgc_checksum.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64)
    lib.cgc_checksum_hardware.restype = ctypes.c_int
    return lib


def checksum(data: bytes, seed: int = 0) -> int:
    buf = ctypes.create_string_buffer(data, len(data))
    return int(_lib().cgc_checksum(buf, len(data), seed))


def crc32c_reference(data: bytes, crc: int = 0) -> int:
    """Bit by bit, straight from the definition (reflected 0x82f63b78)."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_checksum_vectors() -> None:
    assert checksum(b"123456789") == 0xE3069283
    assert checksum(b"") == 0
    assert checksum(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert checksum(b"\xff" * 32) == 0x62A8AB43  # 32 bytes of ones
    assert checksum(bytes(range(32))) == 0x46DD794E  # incrementing
    assert checksum(bytes(range(31, -1, -1))) == 0x113FDB5C  # decrementing


@pytest.mark.parametrize(
    "n", [1, 7, 8, 9, 63, 255, 256, 767, 768, 769, 3 * 256 + 5, 3 * 8192, 3 * 8192 + 13, 70001]
)
def test_checksum_matches_reference_and_chains(n: int) -> None:
    rng = random.Random(n)
    data = rng.randbytes(n)
    want = crc32c_reference(data)
    assert checksum(data) == want
    for cut in {0, 1, n // 3, n - 1, n}:
        assert checksum(data[cut:], checksum(data[:cut])) == want


def test_checksum_unaligned_and_software_agree() -> None:
    data = random.Random(1).randbytes(100_000)
    buf = ctypes.create_string_buffer(data, len(data))
    lib = _lib()
    base = ctypes.addressof(buf)
    for off in range(9):
        assert lib.cgc_checksum(base + off, 40_000 - off, 0) == crc32c_reference(data[off:40_000])


def test_checksum_chains_over_a_large_buffer() -> None:
    """256 MiB through the wide (hardware) path: the whole equals the chained halves,
    and a one-byte change anywhere changes it."""
    n = 256 << 20
    buf = (ctypes.c_char * n)()
    ctypes.memset(buf, 0x5A, n)
    lib = _lib()
    base = ctypes.addressof(buf)
    whole = lib.cgc_checksum(base, n, 0)
    half = n // 2 + 3  # an unaligned cut
    assert lib.cgc_checksum(base + half, n - half, lib.cgc_checksum(base, half, 0)) == whole
    buf[n - 1] = b"\x5b"
    assert lib.cgc_checksum(base, n, 0) != whole


# ---- a controller in a helper process ----------------------------------------------

SERVER = r"""
import ctypes, json, os, sys, time, threading
sys.path.insert(0, sys.argv[1])
from dispatcher_proto import Config, load_dispatcher, load_fake_driver

load_fake_driver()
lib = load_dispatcher()
vp, u64 = ctypes.c_void_p, ctypes.c_uint64
u64p = ctypes.POINTER(u64)
for name, res, args in (
    ("cgc_regions", ctypes.c_int, (vp, u64p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t))),
    ("cgc_read_device", ctypes.c_int, (vp, u64, vp, u64, u64p)),
    ("cgc_write_device", ctypes.c_int, (vp, u64, vp, u64)),
    ("cgc_write_device_checksum", ctypes.c_int, (vp, u64, vp, u64, u64p)),
    ("cgc_export_state", ctypes.c_int, (vp, ctypes.c_char_p)),
    ("cgc_import_state", ctypes.c_int, (vp, ctypes.c_char_p)),
    ("cgc_checksum", u64, (vp, ctypes.c_size_t, u64)),
):
    f = getattr(lib, name)
    f.restype, f.argtypes = res, args

h = ctypes.c_void_p()

def say(**kw):
    print(json.dumps(kw), flush=True)

def err():
    return lib.cgc_last_error(h if h.value else None).decode()

def regions():
    pairs = (u64 * 2048)()
    n = ctypes.c_size_t()
    rc = lib.cgc_regions(h, pairs, 1024, ctypes.byref(n))
    assert rc == 0, err()
    return [(pairs[2 * i], pairs[2 * i + 1]) for i in range(n.value)]

for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    if op == "open":
        name = cmd.get("segment_name")
        cfg = Config(job_id=cmd["job_id"].encode(), ring_slots=1024, nchannels=8,
                     staging_size=1 << 16, va_base=cmd.get("va_base", 0),
                     va_size=cmd.get("va_size", 0), generation=cmd.get("generation", 1),
                     timeout_ms=5000, uid=os.getuid(), gid=os.getgid(), shm_dir=None,
                     segment_name=name.encode() if name else None)
        rc = lib.cgc_open(ctypes.byref(cfg), ctypes.byref(h))
        say(rc=rc, error=err() if rc else "")
    elif op == "start":
        rc = lib.cgc_start(h)
        say(rc=rc, error=err())
    elif op == "freeze":
        rc = lib.cgc_freeze(h, 5000)
        say(rc=rc, error=err())
    elif op == "unfreeze":
        rc = lib.cgc_unfreeze(h)
        say(rc=rc, error=err())
    elif op == "info":
        buf = ctypes.create_string_buffer(1 << 16)
        rc = lib.cgc_info_json(h, buf, len(buf))
        say(rc=rc, info=json.loads(buf.value))
    elif op == "export":
        t = time.perf_counter()
        rc = lib.cgc_export_state(h, cmd["dir"].encode())
        say(rc=rc, error=err(), seconds=time.perf_counter() - t)
    elif op == "import":
        t = time.perf_counter()
        rc = lib.cgc_import_state(h, cmd["dir"].encode())
        say(rc=rc, error=err(), seconds=time.perf_counter() - t)
    elif op == "regions":
        say(rc=0, regions=regions())
    elif op == "dump_regions":
        # Every region into its own file, from several threads at once.
        out, results = cmd["dir"], {}
        def work(i, addr, size):
            buf = bytearray(size)
            ck = u64(0)
            p = (ctypes.c_char * size).from_buffer(buf)
            rc = lib.cgc_read_device(h, addr, p, size, ctypes.byref(ck))
            with open(os.path.join(out, f"{addr:x}.bin"), "wb") as f:
                f.write(buf)
            results[addr] = (rc, ck.value, lib.cgc_checksum(p, size, 0))
        regs = regions()
        threads = [threading.Thread(target=work, args=(i, a, s)) for i, (a, s) in enumerate(regs)]
        for t in threads: t.start()
        for t in threads: t.join()
        say(rc=0, regions=regs, results={str(k): v for k, v in results.items()})
    elif op == "load_regions":
        bad = []
        for addr, size in cmd["regions"]:
            data = open(os.path.join(cmd["dir"], f"{addr:x}.bin"), "rb").read()
            buf = ctypes.create_string_buffer(data, len(data))
            ck = u64(0)
            rc = lib.cgc_write_device_checksum(h, addr, buf, len(data), ctypes.byref(ck))
            if rc or ck.value != lib.cgc_checksum(buf, len(data), 0):
                bad.append([addr, rc, err()])
        say(rc=0, bad=bad)
    elif op == "read":
        size = cmd["size"]
        buf = ctypes.create_string_buffer(size)
        ck = u64(0)
        rc = lib.cgc_read_device(h, cmd["addr"], buf, size, ctypes.byref(ck))
        say(rc=rc, error=err(), checksum=ck.value, data=buf.raw.hex() if size <= 4096 else "")
    elif op == "rw_large":
        # Write a large pattern with cgc_write_device, read it back with
        # cgc_read_device: the bytes and the checksum the read reports must match.
        addr, size = cmd["addr"], cmd["size"]
        tile = bytes(range(251))  # a prime length: no two pages alike
        data = tile * (size // 251) + tile[: size % 251]
        src = (ctypes.c_uint8 * size).from_buffer_copy(data)
        dst = (ctypes.c_uint8 * size)()
        rc = lib.cgc_write_device(h, addr, src, size)
        ck = u64(0)
        rc = rc or lib.cgc_read_device(h, addr, dst, size, ctypes.byref(ck))
        want = lib.cgc_checksum(src, size, 0)
        say(rc=rc, error=err(), same=bytes(src) == bytes(dst), checksum_ok=ck.value == want)
    elif op == "close":
        lib.cgc_close(h)
        h = ctypes.c_void_p()
        say(rc=0)
    elif op == "quit":
        if h.value:
            lib.cgc_close(h)
        say(rc=0)
        break
"""


class Controller:
    def __init__(self) -> None:
        env = dict(os.environ)
        env["CEDANA_GPU_NATIVE_DIR"] = str(native_dir())
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        set_child_preload(env)
        for key in [k for k in env if k.startswith("FAKE_CUDA_")]:
            del env[key]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(TESTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def __call__(self, op: str, **kw: object) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the controller died (exit {self.proc.wait()})"
        return json.loads(line)

    def ok(self, op: str, **kw: object) -> dict:
        r = self(op, **kw)
        assert r["rc"] == 0, r
        return r

    def quit(self) -> None:
        if self.proc.poll() is None:
            self("quit")
        assert self.proc.wait(timeout=60) == 0


@pytest.fixture
def controllers() -> Iterator[list[Controller]]:
    made: list[Controller] = []
    yield made
    for c in made:
        c.quit()


def new_controller(made: list[Controller]) -> Controller:
    c = Controller()
    made.append(c)
    return c


# ---- the job's side ------------------------------------------------------------------


def alloc(seg: Segment, size: int, ctx: int = CTX) -> int:
    r = seg.call("MEM_ALLOC", 0, size, ctx=ctx)
    assert r.result == CUDA_SUCCESS, r
    return r.ret[0]


def htod(seg: Segment, dst: int, data: bytes, ctx: int = CTX) -> None:
    for off in range(0, len(data), seg.staging_size):
        chunk = data[off : off + seg.staging_size]
        seg.write_staging(0, chunk)
        r = seg.call("MEMCPY_HTOD", 0, dst + off, 0, len(chunk), 0, HOST_STAGING, 0, 0, 0, ctx=ctx)
        assert r.result == CUDA_SUCCESS, r


def dtoh(seg: Segment, src: int, n: int, ctx: int = CTX) -> bytes:
    out = b""
    for off in range(0, n, seg.staging_size):
        m = min(seg.staging_size, n - off)
        r = seg.call("MEMCPY_DTOH", 0, 0, src + off, m, 0, HOST_STAGING, 0, 0, 0, ctx=ctx)
        assert r.result == CUDA_SUCCESS, r
        out += seg.read_staging(0, m)
    return out


def load_module(seg: Segment, image: bytes) -> None:
    off = 0
    while off < len(image):
        chunk = image[off : off + seg.staging_size]
        seg.write_staging(0, chunk)
        assert seg.call("BLOB_PUT", off, len(chunk), len(image), ctx=CTX).result == 0
        off += len(chunk)
    assert seg.call("MODULE_LOAD", MODULE, len(image), ctx=CTX).result == 0


def launch(seg: Segment, fn: int, n: int, args: bytes, stream: int = 0) -> None:
    grid = (n + 255) // 256
    seg.post("LAUNCH", fn, stream, grid, 1, 1, 256, 1, 1, 0, len(args), 0, 0, ctx=CTX, tail=args)


def floats(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def pattern(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# ---- dump and restore ----------------------------------------------------------------


def test_export_import_roundtrip(controllers: list[Controller], tmp_path: Path) -> None:
    job = f"t-ck-{uuid.uuid4().hex[:10]}"
    seg_name = f"cedana-gpu.{job}"
    a_ctl = new_controller(controllers)
    a_ctl.ok("open", job_id=job)
    a_ctl.ok("start")
    seg = Segment(job)
    va_base, va_size = seg.va_base, seg.va_size

    # Contexts, allocations of every size class and big ones, contents.
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)
    seg.post("CTX_CREATE", CTX2, 0, 0, ctx=CTX)
    sizes = [1, 200, 256, 257, 1000, 4096, 5000, 65536, 100_000, 1 << 20, (1 << 20) + 1, 3 << 20]
    sizes += [random.Random(7).randint(1, 3000) for _ in range(150)]
    allocs: dict[int, tuple[int, bytes]] = {}
    for i, size in enumerate(sizes):
        ctx = CTX2 if i % 5 == 0 else CTX
        p = alloc(seg, size, ctx)
        assert p % 256 == 0 and va_base <= p < va_base + va_size
        data = pattern(i, size)
        htod(seg, p, data, ctx)
        allocs[p] = (size, data)
    # No two allocations overlap.
    spans = sorted((p, p + s) for p, (s, _) in allocs.items())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))

    # A module, two functions, a global set by the job, a stream, events.
    load_module(seg, (kernels_dir() / "vector_add.fake.so").read_bytes())
    for fn, name in ((FUNC_ADD, b"vector_add"), (FUNC_AXPY, b"axpy")):
        assert seg.call("MODULE_GET_FUNCTION", MODULE, fn, name, ctx=CTX).result == 0
    r = seg.call("MODULE_GET_GLOBAL", MODULE, 0, b"axpy_alpha", ctx=CTX)
    assert r.result == 0
    alpha_addr = r.ret[0]
    seg.post("FUNC_SET_ATTRIBUTE", FUNC_ADD, 8, 2048, ctx=CTX)  # max dynamic shared memory
    htod(seg, alpha_addr, floats([0.5]))
    seg.post("STREAM_CREATE", STREAM, 0, 1, -1, 0, 0, ctx=CTX)
    seg.post("EVENT_CREATE", EV0, 0, 0, 0, 0, ctx=CTX)
    seg.post("EVENT_CREATE", EV1, 0, 0, 2, 0, ctx=CTX)  # CU_EVENT_DISABLE_TIMING
    seg.post("EVENT_RECORD", EV0, STREAM, 0, 0, 0, ctx=CTX)

    # Pinned host memory with contents.
    pin_id, pin_size = 3, 1 << 16
    pin_path = Path(f"/dev/shm/{seg_name}.pin.{pin_id}")
    fd = os.open(pin_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, pin_size)
    pin_data = pattern(99, pin_size)
    os.pwrite(fd, pin_data, 0)
    os.close(fd)
    assert seg.call("HOST_REGISTER", 0, pin_size, pin_id, 0, ctx=CTX).result == 0

    n = 1000
    va, vb, vc = alloc(seg, 4 * n), alloc(seg, 4 * n), alloc(seg, 4 * n)
    htod(seg, va, floats([float(i) for i in range(n)]))
    htod(seg, vb, floats([2.0 * i for i in range(n)]))
    assert seg.call("STREAM_SYNCHRONIZE", STREAM, 0, 0, 0, 0, 0, ctx=CTX).result == 0
    seg.call("EVENT_RECORD", EV1, STREAM, 0, 0, 0, ctx=CTX)
    info_a = a_ctl.ok("info")["info"]
    assert seg.async_error == 0

    # Dump.
    a_ctl.ok("freeze")
    state = tmp_path / "gpu"
    exported = a_ctl.ok("export", dir=str(state))
    doc = json.loads((state / "state.json").read_text())
    assert doc["format"] == "cedana-gpu-state" and doc["version"] == 1
    assert doc["segment"]["name"] == seg_name and doc["va_base"] == va_base
    assert len(doc["allocations"]) == info_a["allocations"]
    assert {f["name"] for f in doc["functions"]} == {"vector_add", "axpy"}
    assert [g["name"] for g in doc["globals"]] == ["axpy_alpha"]
    assert (state / "modules" / "0.img").read_bytes() == (
        kernels_dir() / "vector_add.fake.so"
    ).read_bytes()
    dumped = a_ctl.ok("dump_regions", dir=str(tmp_path))
    regions = dumped["regions"]
    assert regions == sorted(regions) and len(regions) < 20  # slabs, not one per allocation
    for addr, _size in regions:
        rc, ck, file_ck = dumped["results"][str(addr)]
        assert rc == 0 and ck == file_ck
        assert ck == checksum((tmp_path / f"{addr:x}.bin").read_bytes())
    # Every allocation lies in a region.
    for p, (size, _) in allocs.items():
        assert any(a <= p and p + size <= a + s for a, s in regions)
    print(f"\nexport: {exported['seconds'] * 1e3:.2f} ms, {len(regions)} regions")
    seg.close()
    a_ctl.ok("close")  # removes the segment and the pinned file
    assert not pin_path.exists()

    # Restore into a new controller (a new job id, the job's segment name).
    fd = os.open(pin_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, pin_size)
    os.pwrite(fd, pin_data, 0)
    os.close(fd)
    b_ctl = new_controller(controllers)
    b_ctl.ok(
        "open",
        job_id=f"{job}-r",
        segment_name=seg_name,
        va_base=va_base,
        va_size=va_size,
        generation=2,
    )
    b_ctl.ok("import", dir=str(state))
    assert b_ctl.ok("load_regions", dir=str(tmp_path), regions=regions)["bad"] == []
    b_ctl.ok("start")
    seg = Segment(job)  # the segment under its old name: the job's view
    assert seg.u64(24) == 2  # generation
    assert bytes(seg.mm[120:184]).rstrip(b"\0").decode() == job  # header job id: the job's own
    info_b = b_ctl.ok("info")["info"]
    for key in ("allocations", "modules", "functions", "streams", "events", "pins", "contexts"):
        assert info_b[key] == info_a[key], key

    # Every allocation's bytes came back.
    for p, (size, data) in allocs.items():
        assert dtoh(seg, p, size, CTX) == data
    # Old function and stream handles, old pointers, the global's old address.
    launch(seg, FUNC_ADD, n, struct.pack("<QQQi", va, vb, vc, n), STREAM)
    assert seg.call("STREAM_SYNCHRONIZE", STREAM, 0, 0, 0, 0, 0, ctx=CTX).result == 0
    assert list(struct.unpack(f"<{n}f", dtoh(seg, vc, 4 * n))) == [3.0 * i for i in range(n)]
    launch(seg, FUNC_AXPY, n, struct.pack("<QQi", va, vc, n), STREAM)  # c += alpha * a
    assert seg.call("STREAM_SYNCHRONIZE", STREAM, 0, 0, 0, 0, 0, ctx=CTX).result == 0
    assert list(struct.unpack(f"<{n}f", dtoh(seg, vc, 4 * n))) == [3.5 * i for i in range(n)]
    assert struct.unpack("<f", dtoh(seg, alpha_addr, 4))[0] == 0.5
    r = seg.call("MODULE_GET_GLOBAL", MODULE, 0, b"axpy_alpha", ctx=CTX)
    assert r.result == 0 and r.ret[0] == alpha_addr
    htod(seg, alpha_addr, floats([2.0]))
    launch(seg, FUNC_AXPY, n, struct.pack("<QQi", va, vc, n), STREAM)
    assert seg.call("STREAM_SYNCHRONIZE", STREAM, 0, 0, 0, 0, 0, ctx=CTX).result == 0
    assert list(struct.unpack(f"<{n}f", dtoh(seg, vc, 4 * n))) == [5.5 * i for i in range(n)]
    r = seg.call("FUNC_GET_ATTRIBUTE", FUNC_ADD, 8, 0, ctx=CTX)
    assert r.result == 0 and r.ret[0] == 2048
    # Events, the pinned file, the second context.
    assert seg.call("EVENT_SYNCHRONIZE", EV0, 0, 0, 0, 0, ctx=CTX).result == 0
    assert seg.call("EVENT_QUERY", EV1, 0, 0, 0, 0, ctx=CTX).result == 0
    r = seg.call("MEMCPY_HTOD", STREAM, va, 0, 4096, 0, HOST_PINNED, pin_id, 0, 0, ctx=CTX)
    assert r.result == 0
    assert dtoh(seg, va, 4096) == pin_data[:4096]
    p2 = next(p for i, p in enumerate(allocs) if i % 5 == 0)
    assert dtoh(seg, p2, allocs[p2][0], CTX2) == allocs[p2][1]
    # New allocations do not land on restored ones; frees work.
    fresh = [alloc(seg, s) for s in (100, 5000, 2 << 20)]
    for p in fresh:
        assert all(not (a <= p < a + s) for a, (s, _) in allocs.items())
    for p in list(allocs)[:20] + fresh:
        assert seg.call("MEM_FREE", p, 0, ctx=CTX).result == 0
    assert seg.call("MEM_FREE", next(iter(allocs)), 0, ctx=CTX).result != 0  # freed twice
    assert seg.async_error == 0
    seg.close()


def test_import_refuses_what_does_not_fit(controllers: list[Controller], tmp_path: Path) -> None:
    job = f"t-ckr-{uuid.uuid4().hex[:10]}"
    seg_name = f"cedana-gpu.{job}"
    a_ctl = new_controller(controllers)
    a_ctl.ok("open", job_id=job)
    a_ctl.ok("start")
    seg = Segment(job)
    va_base, va_size = seg.va_base, seg.va_size
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)
    alloc(seg, 3 << 20)
    alloc(seg, 100)
    load_module(seg, (kernels_dir() / "vector_add.fake.so").read_bytes())
    a_ctl.ok("freeze")
    good = tmp_path / "good"
    a_ctl.ok("export", dir=str(good))
    seg.close()
    a_ctl.ok("close")

    def variant(name: str, edit) -> Path:  # type: ignore[no-untyped-def]
        d = tmp_path / name
        subprocess.run(["cp", "-r", str(good), str(d)], check=True)
        doc = json.loads((d / "state.json").read_text())
        edit(doc, d)
        (d / "state.json").write_text(json.dumps(doc))
        return d

    def flip_module(doc: dict, d: Path) -> None:
        img = bytearray((d / "modules" / "0.img").read_bytes())
        img[100] ^= 1
        (d / "modules" / "0.img").write_bytes(bytes(img))

    cases = {
        "newer": (lambda doc, d: doc.update(version=2), "format version 2, newer"),
        "module": (flip_module, "module 0 (modules/0.img): checksum mismatch"),
        "small": (
            lambda doc, d: doc["chunks"].append([va_base, 1 << 50, 0, 0]),
            "device 0 (Cedana Fake GPU) has 16.0 GiB, the checkpoint needs 1048576.0 GiB",
        ),
        "geometry": (
            lambda doc, d: doc["segment"].update(nchannels=9),
            "segment geometry",
        ),
        "outside": (
            lambda doc, d: doc["chunks"].append([va_base + va_size, 2 << 20, 0, 0]),
            "lies outside the device address range",
        ),
        "overlap": (
            lambda doc, d: doc["chunks"].append(doc["chunks"][0]),
            "is not available",
        ),
    }
    for name, (edit, message) in cases.items():
        d = variant(name, edit)
        b = new_controller(controllers)
        b.ok(
            "open", job_id=f"{job}-{name}", segment_name=seg_name, va_base=va_base, va_size=va_size
        )
        r = b("import", dir=str(d))
        assert r["rc"] != 0 and message in r["error"], (name, r)
        b.ok("close")  # releases whatever was built
        assert not Path(f"/dev/shm/{seg_name}").exists()
        b.quit()
        controllers.remove(b)

    # Another address range, another segment name: refused, said how to fix.
    b = new_controller(controllers)
    b.ok("open", job_id=f"{job}-x")
    r = b("import", dir=str(good))
    assert r["rc"] != 0 and "open it with segment_name" in r["error"], r
    b.ok("close")
    b.ok(
        "open", job_id=f"{job}-y", segment_name=seg_name, va_base=va_base + va_size, va_size=va_size
    )
    r = b("import", dir=str(good))
    assert r["rc"] != 0 and "device address range" in r["error"], r
    # And the good one imports.
    b.ok("close")
    b.ok("open", job_id=f"{job}-z", segment_name=seg_name, va_base=va_base, va_size=va_size)
    b.ok("import", dir=str(good))


def test_many_allocations_round_trip(controllers: list[Controller], tmp_path: Path) -> None:
    """100,000 small allocations: a few hundred regions, all back at their addresses."""
    count = 100_000
    job = f"t-ckm-{uuid.uuid4().hex[:10]}"
    ctl = new_controller(controllers)
    ctl.ok("open", job_id=job)
    ctl.ok("start")
    seg = Segment(job)
    va_base, va_size = seg.va_base, seg.va_size
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)
    rng = random.Random(5)
    ptrs = [alloc(seg, rng.randint(1, 2048)) for _ in range(count)]
    assert len(set(ptrs)) == count
    info = ctl.ok("info")["info"]
    assert info["allocations"] == count
    ctl.ok("freeze")
    state = tmp_path / "gpu"
    ctl.ok("export", dir=str(state))
    regions = ctl.ok("regions")["regions"]
    seg.close()
    ctl.ok("close")

    b = new_controller(controllers)
    b.ok(
        "open",
        job_id=f"{job}-r",
        segment_name=f"cedana-gpu.{job}",
        va_base=va_base,
        va_size=va_size,
    )
    b.ok("import", dir=str(state))
    assert b.ok("regions")["regions"] == regions
    assert b.ok("info")["info"]["allocations"] == count
    assert len(regions) < 1000


def test_read_write_device_large(controllers: list[Controller]) -> None:
    job = f"t-ckb-{uuid.uuid4().hex[:10]}"
    ctl = new_controller(controllers)
    ctl.ok("open", job_id=job)
    ctl.ok("start")
    seg = Segment(job)
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)
    size = 256 << 20
    p = alloc(seg, size)
    htod(seg, p, pattern(3, 1 << 16))
    r = ctl.ok("read", addr=p + 1000, size=3000)
    assert bytes.fromhex(r["data"]) == pattern(3, 1 << 16)[1000:4000]
    assert r["checksum"] == checksum(pattern(3, 1 << 16)[1000:4000])
    # Outside any region: refused.
    bad = ctl("read", addr=seg.va_base + seg.va_size - 4096, size=16)
    assert bad["rc"] != 0 and "not inside one mapped region" in bad["error"]
    ctl.ok("freeze")
    r = ctl.ok("rw_large", addr=p, size=size)
    assert r["same"] and r["checksum_ok"], r
    seg.close()


def test_async_staged_copy_completes_when_taken(controllers: list[Controller]) -> None:
    """MEMCPY_HTOD from staging with async=1 returns before the stream runs it,
    and the bytes still land in order with the stream's other work."""
    job = f"t-cka-{uuid.uuid4().hex[:10]}"
    ctl = new_controller(controllers)
    ctl.ok("open", job_id=job)
    ctl.ok("start")
    seg = Segment(job)
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)
    seg.post("STREAM_CREATE", STREAM, 0, 1, 0, 0, 0, ctx=CTX)
    p = alloc(seg, 1 << 16)
    for i in range(20):
        data = pattern(i, 1 << 16)
        seg.write_staging(0, data)
        r = seg.call("MEMCPY_HTOD", STREAM, p, 0, len(data), 0, HOST_STAGING, 0, 1, 0, ctx=CTX)
        assert r.result == 0
        # The staging area is the job's again: scribbling on it changes nothing.
        seg.write_staging(0, bytes(len(data)))
        assert seg.call("STREAM_SYNCHRONIZE", STREAM, 0, 0, 0, 0, 0, ctx=CTX).result == 0
        assert dtoh(seg, p, len(data)) == data
    assert seg.async_error == 0
    seg.close()


def test_handle_region_counter_is_closed_while_frozen(
    controllers: list[Controller], tmp_path: Path
) -> None:
    """The job's processes claim handle regions from mint_regions; while the job
    is frozen the controller closes it (a claim then waits), the export writes
    the count without the closed bit, and unfreezing opens it again."""
    job = f"t-mr-{uuid.uuid4().hex[:10]}"
    ctl = new_controller(controllers)
    ctl.ok("open", job_id=job)
    ctl.ok("start")
    seg = Segment(job)
    try:
        closed = shm_layout.CGS_MINT_CLOSED
        word = ctypes.c_uint32.from_address(seg.base + shm_layout.cgs_header.mint_regions.offset)
        assert word.value == 0
        word.value = 3  # three regions claimed by the job's processes
        ctl.ok("freeze")
        assert word.value == 3 | closed
        ctl.ok("export", dir=str(tmp_path / "gpu"))
        state = json.loads((tmp_path / "gpu" / "state.json").read_text())
        assert state["mint_regions"] == 3
        ctl.ok("unfreeze")
        assert word.value == 3
    finally:
        seg.close()


def vmm(seg: Segment, op: str, **kw: Any) -> list[int]:
    """A VMM_* request (cgs_vmm): fields by name, the rest zero; its ret[]."""
    names = ("addr", "size", "alignment", "handle", "offset", "flags", "type", "handle_types")
    names += ("location_type", "location_id", "option", "naccess")
    fields = [kw.pop(n, 0) for n in names]
    devices = list(kw.pop("access_device", [0] * 8))
    flags = list(kw.pop("access_flags", [0] * 8))
    devices += [0] * (8 - len(devices))
    flags += [0] * (8 - len(flags))
    assert not kw, kw
    r = seg.call(f"VMM_{op}", *fields, *devices, *flags, ctx=CTX)
    assert r.result == CUDA_SUCCESS, (op, r)
    return list(r.ret)


PINNED, ON_DEVICE, READWRITE = 1, 1, 3


def test_vmm_round_trip(controllers: list[Controller], tmp_path: Path) -> None:
    """The job's reservations, physical allocations and mappings (with their
    contents and access) come back at the same addresses; a physical
    allocation the job released while mapped, and one it holds unmapped,
    too."""
    job = f"t-ckv-{uuid.uuid4().hex[:10]}"
    ctl = new_controller(controllers)
    ctl.ok("open", job_id=job)
    ctl.ok("start")
    seg = Segment(job)
    va_base, va_size = seg.va_base, seg.va_size
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)
    prop = {"type": PINNED, "location_type": ON_DEVICE, "location_id": 0}
    gran = vmm(seg, "GRANULARITY", **prop)[0]
    base = vmm(seg, "RESERVE", size=4 * gran)[0]
    assert va_base <= base and base + 4 * gran <= va_base + va_size
    first, second, spare = (vmm(seg, "CREATE", size=gran, **prop)[0] for _ in range(3))
    for i, h in enumerate((first, second)):
        vmm(seg, "MAP", addr=base + i * gran, size=gran, handle=h)
    vmm(
        seg,
        "SET_ACCESS",
        addr=base,
        size=2 * gran,
        naccess=1,
        access_flags=[READWRITE] + [0] * 7,
    )
    data = pattern(11, 2 * gran)
    htod(seg, base, data)
    vmm(seg, "RELEASE", handle=second)  # lives on through its mapping
    # The spare is mapped, written and unmapped: only its handle holds it.
    vmm(seg, "MAP", addr=base + 3 * gran, size=gran, handle=spare)
    vmm(seg, "SET_ACCESS", addr=base + 3 * gran, size=gran, naccess=1, access_flags=[READWRITE])
    spare_data = pattern(12, gran)
    htod(seg, base + 3 * gran, spare_data)
    vmm(seg, "UNMAP", addr=base + 3 * gran, size=gran)
    ctl.ok("freeze")
    state = tmp_path / "gpu"
    ctl.ok("export", dir=str(state))
    doc = json.loads((state / "state.json").read_text())
    assert [r["addr"] for r in doc["vmm_reservations"]] == [base]
    assert sorted(p["id"] for p in doc["vmm_physical"]) == sorted([first, second, spare])
    assert {(m["addr"], m["physical"], m["access"]) for m in doc["vmm_mappings"]} == {
        (base, first, READWRITE),
        (base + gran, second, READWRITE),
    }
    dumped = ctl.ok("dump_regions", dir=str(tmp_path))
    regions = dumped["regions"]
    assert all(r[0] == 0 for r in dumped["results"].values())
    seg.close()
    ctl.ok("close")

    b = new_controller(controllers)
    b.ok(
        "open",
        job_id=f"{job}-r",
        segment_name=f"cedana-gpu.{job}",
        va_base=va_base,
        va_size=va_size,
    )
    b.ok("import", dir=str(state))
    assert b.ok("load_regions", dir=str(tmp_path), regions=regions)["bad"] == []
    b.ok("start")
    seg = Segment(job)
    assert dtoh(seg, base, 2 * gran) == data
    # The spare's bytes came back with it: mapped again, they are there.
    vmm(seg, "MAP", addr=base + 2 * gran, size=gran, handle=spare)
    vmm(seg, "SET_ACCESS", addr=base + 2 * gran, size=gran, naccess=1, access_flags=[READWRITE])
    assert dtoh(seg, base + 2 * gran, gran) == spare_data
    assert vmm(seg, "GET_ACCESS", addr=base + gran, location_type=ON_DEVICE)[0] == READWRITE
    # The released handle stays released; the others are live handles.
    r = seg.call("VMM_RELEASE", 0, 0, 0, second, *[0] * 24, ctx=CTX)
    assert r.result != CUDA_SUCCESS
    vmm(seg, "UNMAP", addr=base, size=3 * gran)
    for h in (first, spare):
        vmm(seg, "RELEASE", handle=h)
    vmm(seg, "FREE", addr=base, size=4 * gran)
    assert seg.async_error == 0
    seg.close()


POOL = 0x0B00_0000_0000_0001
RELEASE_THRESHOLD, RESERVED_MEM_CURRENT, USED_MEM_CURRENT, USED_MEM_HIGH = 4, 5, 7, 8


def pool(seg: Segment, op: str, **kw: int) -> int:
    """A POOL_* request (cgs_pool): fields by name, the rest zero; its ret[0]."""
    names = ("handle", "stream", "dptr", "size", "value", "device", "attr", "is_default")
    fields = [kw.pop(n, 0) for n in names]
    assert not kw, kw
    if op == "FREE":
        seg.post("POOL_FREE", *fields, 0, ctx=CTX)
        return 0
    r = seg.call(f"POOL_{op}", *fields, 0, ctx=CTX)
    assert r.result == CUDA_SUCCESS, (op, r)
    return int(r.ret[0])


def test_pool_round_trip(controllers: list[Controller], tmp_path: Path) -> None:
    """A memory pool with a live block and a cached one: the contents, the
    attributes and which block is cached come back; the cached block is
    reused after the restore."""
    job = f"t-ckp-{uuid.uuid4().hex[:10]}"
    ctl = new_controller(controllers)
    ctl.ok("open", job_id=job)
    ctl.ok("start")
    seg = Segment(job)
    va_base, va_size = seg.va_base, seg.va_size
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)
    pool(seg, "CREATE", handle=POOL)
    pool(seg, "SET_ATTR", handle=POOL, attr=RELEASE_THRESHOLD, value=(1 << 64) - 1)
    n = 1 << 20
    live = pool(seg, "ALLOC", handle=POOL, size=n)
    cached = pool(seg, "ALLOC", handle=POOL, size=n)
    data = pattern(21, n)
    htod(seg, live, data)
    pool(seg, "FREE", dptr=cached)
    used = pool(seg, "GET_ATTR", handle=POOL, attr=USED_MEM_CURRENT)
    reserved = pool(seg, "GET_ATTR", handle=POOL, attr=RESERVED_MEM_CURRENT)
    assert used == n and reserved == 2 * n
    ctl.ok("freeze")
    state = tmp_path / "gpu"
    ctl.ok("export", dir=str(state))
    doc = json.loads((state / "state.json").read_text())
    assert [p["minted"] for p in doc["pools"]] == [POOL]
    assert sorted((b["addr"], b["cached"]) for b in doc["pool_blocks"]) == sorted(
        [(live, False), (cached, True)]
    )
    regions = ctl.ok("dump_regions", dir=str(tmp_path))["regions"]
    seg.close()
    ctl.ok("close")

    b = new_controller(controllers)
    b.ok(
        "open",
        job_id=f"{job}-r",
        segment_name=f"cedana-gpu.{job}",
        va_base=va_base,
        va_size=va_size,
    )
    b.ok("import", dir=str(state))
    assert b.ok("load_regions", dir=str(tmp_path), regions=regions)["bad"] == []
    b.ok("start")
    seg = Segment(job)
    assert dtoh(seg, live, n) == data
    assert pool(seg, "GET_ATTR", handle=POOL, attr=RELEASE_THRESHOLD) == (1 << 64) - 1
    assert pool(seg, "GET_ATTR", handle=POOL, attr=USED_MEM_CURRENT) == used
    assert pool(seg, "GET_ATTR", handle=POOL, attr=RESERVED_MEM_CURRENT) == reserved
    assert pool(seg, "GET_ATTR", handle=POOL, attr=USED_MEM_HIGH) == 2 * n
    # The cached block is the pool's again: the next allocation reuses it.
    assert pool(seg, "ALLOC", handle=POOL, size=n) == cached
    for p in (live, cached):
        pool(seg, "FREE", dptr=p)
    # Trimmed once the stream has reached the frees.
    assert seg.call("STREAM_SYNCHRONIZE", 0, 0, 0, 0, 0, 0, ctx=CTX).result == 0
    pool(seg, "TRIM", handle=POOL)
    assert pool(seg, "GET_ATTR", handle=POOL, attr=RESERVED_MEM_CURRENT) == 0
    pool(seg, "DESTROY", handle=POOL)
    assert seg.async_error == 0
    seg.close()
