#!/usr/bin/env python3
"""Checkpoint and restore benchmarks (issue 4): GPU dump/restore against plain file I/O.

Drives the controller's own GPU dump and restore (``cedana_gpu.controller.
gpu_state.dump_gpu`` / ``restore_gpu``: ``checkpoint.write_regions`` /
``read_regions`` over the native ``cgc_read_device`` / ``cgc_write_device``)
on a native dispatcher running on the fake driver in a helper process, whose
device memory this process (playing the job) allocates through the ring; the
helper fills it with model-like data. Measured in the same run, in the same
directory:

1. GPU dump (no compression) against a plain sequential write of the same
   bytes, and GPU restore against a plain sequential read of the same shard
   files into a destination of the same size (bars: 70%);
2. lz4 with ``--stream 2`` against ``--stream 1`` (bar: 1.5×), on
   trained-model-like floats and on a compressible case (ReLU activations);
3. dump and restore time against device memory size and against allocation
   count (bar: ≤ 20 µs per allocation);
4. the phases of a real ``cedana dump job`` / ``cedana restore job`` of a
   ``train_mlp`` job with CRIU (root only), read from ``--output json``.

Each variant runs once untimed, then in rounds whose order rotates; values
are medians, bars are held to the median of the per-round ratios. Part 4 and
the page-cache-dropped restores need root. The job's side of the ring is
``tests/dispatcher_proto.py``'s producer. These are benchmarks, not tests: a
missed bar is reported and the exit status is 0 all the same; it is 1 only
when a run itself fails. Results: docs/benchmarks.md.

    .venv/bin/python bench/checkpoint.py            # about 95 s on a quiet 2-core machine
    .venv/bin/python bench/checkpoint.py --json     # machine-readable
    .venv/bin/python bench/checkpoint.py --quick    # smoke run: small sizes, one round
    .venv/bin/python bench/checkpoint.py --full     # adds 4 GiB to the size sweep
    .venv/bin/python bench/checkpoint.py --save results.json   # table, and JSON to a file
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import mmap
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
TRAIN_MLP = REPO / "samples" / "train_mlp.py"
WORKER = "--worker"

MiB = 1 << 20
GiB = 1 << 30
IO_PIECE = 4 * MiB
"""Piece size of the plain baselines' reads and writes (``dd bs=4M``), and the
checkpoint library's own buffer size (``shards.DEFAULT_CHUNK_SIZE``)."""

HEADLINE_BYTES = 1 * GiB
SIZES = (64 * MiB, 256 * MiB, 1 * GiB)
FULL_SIZES = (*SIZES, 4 * GiB)
QUICK_SIZES = (64 * MiB,)
ALLOC_COUNTS = (1, 100, 10_000, 100_000)
QUICK_ALLOC_COUNTS = (1, 100, 1000)
SMALL_ALLOC = 1024
"""Bytes of each allocation in the allocation-count sweep (a bias or a norm's weights)."""

CLI_DEVICE_MIB = 256
CLI_STEPS = 300
CLI_SLEEP = 0.01  # s per step: the job is mid-run when it is dumped
CLI_DUMP_AT = 30  # dump once the job has printed this step

# The job's context handle in its requests (any value the job mints).
CTX = 0x0C00_0000_0000_0001

DUMP_BAR = 0.70
RESTORE_BAR = 0.70
LZ4_BAR = 1.5
ALLOC_BAR_US = 20.0


class BenchError(RuntimeError):
    """A run failed: printed as one line, exit status 1."""


# =====================================================================================
# The worker: a controller's dispatcher on the fake driver, driven over stdin/stdout.
# =====================================================================================


def _pattern(kind: str, nbytes: int, seed: int) -> memoryview:
    """``nbytes`` of device content of ``kind`` (a tile; regions are filled by cycling it).

    - ``weights``: float32 N(0, 0.02), as a trained model's parameters (lz4 finds
      next to nothing to compress);
    - ``activations``: ReLU(N(0,1) - 0.5) float32, about 69% exact zeros, as the
      activations and gradients a training step leaves on the device.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    n = nbytes // 4
    if kind == "weights":
        a = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
    elif kind == "activations":
        a = np.maximum(rng.standard_normal(n, dtype=np.float32) - np.float32(0.5), 0)
    else:
        raise ValueError(f"unknown data kind {kind!r}")
    return memoryview(a.astype(np.float32).tobytes())


def _device_view(addr: int, size: int) -> memoryview:
    """The fake driver's device memory is this process's memory: a view of it."""
    return memoryview((ctypes.c_char * size).from_address(addr)).cast("B")


def _write_file(path: str, pieces: Sequence[memoryview]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for piece in pieces:
            done = 0
            while done < len(piece):
                done += os.write(fd, piece[done:])
    finally:
        os.close(fd)


def _sliced(view: memoryview, step: int = IO_PIECE) -> list[memoryview]:
    return [view[o : o + step] for o in range(0, len(view), step)]


class Worker:
    """One controller-like process: the fake driver, ``native.Dispatcher``, ``gpu_state``."""

    def __init__(self) -> None:
        self.dispatcher: Any = None
        self.segment = ""
        self.info: dict[str, Any] = {}

    def _load(self) -> Any:
        from cedana_gpu import gpu_info
        from cedana_gpu.controller import native

        gpu_info.load_driver("fake")
        # What a controller has imported by the time it dumps or restores: the
        # first dump in a process would otherwise pay ~13 ms of imports.
        for name in ("cedana_gpu.checkpoint.shards", "cedana_gpu.cr.gpu_state"):
            importlib.import_module(name)

        return native.Dispatcher()

    def op_open(self, req: dict[str, Any]) -> dict[str, Any]:
        from cedana_gpu.controller import native

        if self.dispatcher is None:
            self.dispatcher = self._load()
        geometry = req.get("geometry") or {}
        job_id = req["job_id"]
        self.segment = req.get("segment_name") or f"cedana-gpu.{job_id}"
        config = native.DispatcherConfig(
            job_id=job_id,
            ring_slots=int(geometry.get("ring_slots", 0)),
            nchannels=int(geometry.get("nchannels", 0)),
            staging_size=int(geometry.get("staging_size", 0)),
            va_base=int(req.get("va_base", 0)),
            va_size=int(req.get("va_size", 0)),
            generation=int(req.get("generation", 1)),
            timeout_ms=10_000,
            segment_name=req.get("segment_name"),
        )
        self.dispatcher.open(config)
        self.info = self.dispatcher.info()
        return {"info": self.info, "segment": self.segment}

    def op_start(self, _req: dict[str, Any]) -> dict[str, Any]:
        self.dispatcher.start()
        return {}

    def op_freeze(self, _req: dict[str, Any]) -> dict[str, Any]:
        t = time.perf_counter()
        self.dispatcher.freeze(30_000)
        return {"seconds": time.perf_counter() - t}

    def op_info(self, _req: dict[str, Any]) -> dict[str, Any]:
        return {"info": self.dispatcher.info()}

    def op_fill(self, req: dict[str, Any]) -> dict[str, Any]:
        """Write ``kind`` data over every region (through ``cgc_write_device``)."""
        tile = _pattern(req["kind"], int(req.get("tile", 32 * MiB)), int(req.get("seed", 0)))
        regions = self.dispatcher.regions()
        t = time.perf_counter()
        total = 0
        for i, (addr, size) in enumerate(regions):
            # Start each region at another place in the tile: no two regions alike.
            pos = (i * 1_048_583 * 4) % len(tile)
            done = 0
            while done < size:
                n = min(size - done, len(tile) - pos)
                self.dispatcher.write_device(addr + done, tile[pos : pos + n], n)
                done += n
                pos = 0
            total += size
        return {"bytes": total, "regions": len(regions), "seconds": time.perf_counter() - t}

    def op_dump(self, req: dict[str, Any]) -> dict[str, Any]:
        """The controller's GPU dump, exactly as its control op ``dump_gpu`` calls it."""
        from cedana_gpu.cr import gpu_state

        ckpt = Path(req["dir"])
        ckpt.mkdir(mode=0o700, parents=True, exist_ok=True)
        t, cpu = time.perf_counter(), time.process_time()
        answer = gpu_state.dump_gpu(
            self.dispatcher,
            ckpt,
            shm_dir=Path("/dev/shm"),
            segment=self.segment,
            compression=req["compression"],
            streams=int(req["streams"]),
            progress=gpu_state.Counter(),  # as the controller: its progress op reads it
        )
        wall = time.perf_counter() - t
        cpu = time.process_time() - cpu
        stored = sum(p.stat().st_size for p in (ckpt / gpu_state.GPU_DIR).glob("img-*"))
        return {"answer": answer, "seconds": wall, "cpu": cpu, "stored": stored}

    def op_restore(self, req: dict[str, Any]) -> dict[str, Any]:
        """The controller's GPU restore (``restore_gpu``), on this freshly opened dispatcher."""
        from types import SimpleNamespace

        from cedana_gpu.checkpoint.manifest import RegionRecord
        from cedana_gpu.cr import gpu_state

        ckpt = Path(req["dir"])
        records = [
            RegionRecord.from_json(r)
            for r in json.loads((ckpt / gpu_state.REGIONS_FILE).read_text())
        ]
        manifest = SimpleNamespace(
            regions=records,
            streams=int(req["streams"]),
            compression=req["compression"],
            gpu_bytes=sum(r.size for r in records),
        )
        t, cpu = time.perf_counter(), time.process_time()
        phases = gpu_state.restore_gpu(
            self.dispatcher,
            ckpt,
            manifest,
            shm_dir=Path("/dev/shm"),
            segment=self.segment,
            progress=gpu_state.Counter(),
        )
        wall = time.perf_counter() - t
        return {"phases": phases, "seconds": wall, "cpu": time.process_time() - cpu}

    def op_checksum(self, _req: dict[str, Any]) -> dict[str, Any]:
        """Checksums of every region's device bytes (to check a restore)."""
        out = []
        for addr, size in self.dispatcher.regions():
            buf = memoryview(mmap.mmap(-1, size))
            out.append([addr, size, self.dispatcher.read_device(addr, buf, size)])
            buf.release()
        return {"regions": out}

    def op_write_plain(self, req: dict[str, Any]) -> dict[str, Any]:
        """A plain sequential write of ``bytes`` bytes to one file, in 4 MiB writes.

        ``source``: ``device`` writes the device memory itself (under the fake
        driver, host memory of the device's size: the bytes come from memory
        that is not in the CPU's cache, as a dump's do); ``buffer`` writes one
        4 MiB buffer again and again (hot in the cache: ``dd bs=4M``)."""
        nbytes = int(req["bytes"])
        if req["source"] == "device":
            pieces: list[memoryview] = []
            left = nbytes
            for addr, size in self.dispatcher.regions():
                take = min(size, left)
                pieces += _sliced(_device_view(addr, take))
                left -= take
                if not left:
                    break
        else:
            buf = memoryview(mmap.mmap(-1, IO_PIECE))
            buf[:] = _pattern("weights", IO_PIECE, 1)
            pieces = [buf[: min(IO_PIECE, nbytes - o)] for o in range(0, nbytes, IO_PIECE)]
        t, cpu = time.perf_counter(), time.process_time()
        _write_file(req["path"], pieces)
        wall = time.perf_counter() - t
        return {"seconds": wall, "cpu": time.process_time() - cpu, "bytes": nbytes}

    def op_read_plain(self, req: dict[str, Any]) -> dict[str, Any]:
        """A plain sequential read of the files, in 4 MiB reads.

        ``dest``: ``fresh`` reads into a new anonymous mapping of the files'
        total size (its pages are faulted in by the read, as a restore's
        device memory is); ``buffer`` reads into one reused 4 MiB buffer
        (hot in the cache, never faulted again)."""
        paths = [str(p) for p in req["paths"]]
        total = sum(os.stat(p).st_size for p in paths)
        t, cpu = time.perf_counter(), time.process_time()
        if req["dest"] == "fresh":
            area = mmap.mmap(-1, max(total, 1))
            view = memoryview(area)
        else:
            area = mmap.mmap(-1, IO_PIECE)
            view = memoryview(area)
        pos = 0
        for p in paths:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            try:
                while True:
                    if req["dest"] == "fresh":
                        with view[pos : pos + IO_PIECE] as dst:
                            n = os.readv(fd, [dst])
                    else:
                        n = os.readv(fd, [view])
                    if n == 0:
                        break
                    pos += n
            finally:
                os.close(fd)
        seconds = time.perf_counter() - t
        cpu = time.process_time() - cpu
        view.release()
        area.close()
        if pos != total:
            raise RuntimeError(f"read {pos} bytes of {total}")
        return {"seconds": seconds, "cpu": cpu, "bytes": total}

    def op_close(self, _req: dict[str, Any]) -> dict[str, Any]:
        if self.dispatcher is not None:
            self.dispatcher.close()
        return {}


def worker_main() -> int:
    w = Worker()
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the protocol stream
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        if op == "quit":
            with contextlib.suppress(Exception):
                w.op_close({})
            out.write(json.dumps({"ok": True}) + "\n")
            out.flush()
            return 0
        try:
            answer = getattr(w, f"op_{op}")(req)
            answer["ok"] = True
        except Exception as e:  # reported to the driving process, one line
            answer = {"ok": False, "error": f"{op}: {type(e).__name__}: {e}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


class WorkerProc:
    """The driving side of one worker process."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env.pop("CEDANA_GPU_SHM", None)
        for key in [k for k in env if k.startswith("FAKE_CUDA_")]:
            del env[key]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )

    def __call__(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"the worker died (status {self.proc.wait()})") from None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the worker died during {op} (status {self.proc.wait()})")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise BenchError(str(answer.get("error")))
        return answer

    def quit(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BenchError, OSError):
                self("quit")
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def worker():  # type: ignore[no-untyped-def]
    w = WorkerProc()
    try:
        yield w
    finally:
        w.quit()


# =====================================================================================
# The job: allocations through the ring (tests/dispatcher_proto.py's producer).
# =====================================================================================


def _proto() -> Any:
    sys.path.insert(0, str(TESTS))
    try:
        import dispatcher_proto
    finally:
        sys.path.remove(str(TESTS))
    return dispatcher_proto


def job_segment(job_id: str) -> Any:
    return _proto().Segment(job_id)


def allocate(seg: Any, sizes: Sequence[int]) -> float:
    """MEM_ALLOC each size through the ring; seconds. Pipelined as a multi-threaded
    job would: a request in flight on every channel, each channel's answer taken
    before the channel is used again."""
    proto = _proto()
    t = time.perf_counter()
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)
    pending: dict[int, int] = {}
    bad = 0

    def take(ch: int) -> None:
        nonlocal bad
        if seg.wait(ch, pending.pop(ch)).result != 0:
            bad += 1

    for i, size in enumerate(sizes):
        ch = i % seg.nchannels
        if ch in pending:
            take(ch)
        tok = seg.next_token()
        seg.submit(proto.request("MEM_ALLOC", 0, size, channel=ch, token=tok, ctx=CTX))
        pending[ch] = tok
    for ch in list(pending):
        take(ch)
    if bad or seg.async_error != 0:
        raise BenchError(f"MEM_ALLOC through the ring failed {bad} times ({seg.async_error})")
    return time.perf_counter() - t


def tensor_sizes(total: int) -> list[int]:
    """Allocations of a model of ``total`` bytes: per 32 MiB, one each of 16, 8, 4
    and 2 MiB and one more of 2 MiB (weights, optimizer state, buffers). Multiples
    of the 2 MiB mapping granularity: an allocation of more than 512 KiB gets a
    chunk of its own, rounded up to 2 MiB (gpu/controller/memory.c)."""
    unit = [16 * MiB, 8 * MiB, 4 * MiB, 2 * MiB, 2 * MiB]
    out: list[int] = []
    while sum(out) < total:
        out += unit
    while sum(out) > total:
        out.pop()
    if sum(out) < total:
        out.append(total - sum(out))
    return out


# =====================================================================================
# Measurements
# =====================================================================================


def sync_disk() -> None:
    """Flush dirty pages between measurements, so no write-back runs under the next one."""
    os.sync()


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


@dataclass
class DeviceJob:
    """A dispatcher holding a job's device memory, frozen, ready to dump."""

    w: WorkerProc
    job_id: str
    segment: str
    info: dict[str, Any]
    bytes: int
    regions: int
    allocations: int
    alloc_s: float
    fill_s: float


@contextlib.contextmanager
def device_job(sizes: Sequence[int], kind: str, progress: Callable[[str], None]):  # type: ignore[no-untyped-def]
    job_id = f"bench-ck-{uuid.uuid4().hex[:10]}"
    with worker() as w:
        w("open", job_id=job_id)
        w("start")
        seg = job_segment(job_id)
        try:
            alloc_s = allocate(seg, sizes)
            fill = w("fill", kind=kind)
            info = w("info")["info"]
            if int(info.get("allocations", -1)) != len(sizes):
                raise BenchError(
                    f"the dispatcher has {info.get('allocations')} allocations, not {len(sizes)}"
                )
            w("freeze")
            job = DeviceJob(
                w,
                job_id,
                f"cedana-gpu.{job_id}",
                info,
                int(fill["bytes"]),
                int(fill["regions"]),
                len(sizes),
                alloc_s,
                float(fill["seconds"]),
            )
            progress(
                f"{len(sizes)} allocations, {job.bytes / MiB:.0f} MiB in {job.regions} regions "
                f"({kind}); alloc {alloc_s:.2f} s, fill {job.fill_s:.2f} s"
            )
            yield job
        finally:
            seg.close()
            with contextlib.suppress(BenchError):
                w("close")


def dump(job: DeviceJob, directory: Path, compression: str, streams: int) -> dict[str, Any]:
    if directory.exists():
        shutil.rmtree(directory)
    r = job.w("dump", dir=str(directory), compression=compression, streams=streams)
    return {
        "seconds": r["seconds"],
        "cpu": r["cpu"],
        "phases": r["answer"]["phases"],
        "bytes": r["answer"]["bytes"],
        "stored": r["stored"],
        "records": r["answer"]["records"],
        "regions": r["answer"]["regions"],
        "answer": r["answer"],
    }


def restore(job_meta: dict[str, Any], directory: Path, compression: str, streams: int) -> dict:  # type: ignore[type-arg]
    """Restore ``directory`` into a new dispatcher in a new process, as a restore does."""
    ans = job_meta
    with worker() as w:
        w(
            "open",
            job_id=f"bench-ckr-{uuid.uuid4().hex[:10]}",
            segment_name=ans["segment"],
            va_base=ans["va_base"],
            va_size=ans["va_size"],
            geometry=ans["geometry"],
            generation=2,
        )
        r = w("restore", dir=str(directory), compression=compression, streams=streams)
        if job_meta.get("check"):
            got = w("checksum")["regions"]
            if got != job_meta["check"]:
                raise BenchError("the restored device memory differs from the dumped one")
        w("close")
    return {"seconds": r["seconds"], "cpu": r["cpu"], "phases": r["phases"]}


def shard_files(directory: Path) -> list[Path]:
    return sorted((directory / "gpu").glob("img-*"), key=lambda p: p.name)


def rotate(items: Sequence[str], k: int) -> list[str]:
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---- 1 + 2: throughput against plain I/O, lz4 streams, for one device size ---------------


@dataclass
class SizeResult:
    """One device memory size: seconds and CPU seconds per variant, per round.

    Variants: ``dump`` (none, --stream 1), ``dump2`` (none, --stream 2),
    ``write_device`` / ``write_buffer`` (plain writes), ``restore``,
    ``read_fresh`` / ``read_buffer`` (plain reads), and with ``cold`` the
    same restore and fresh read with the page cache dropped before each.
    ``lz4``: per data kind, ``stream1``/``stream2`` seconds and CPU seconds.
    """

    bytes: int
    allocations: int
    regions: int
    rounds: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    dump_phases: list[dict[str, float]] = field(default_factory=list)
    restore_phases: list[dict[str, float]] = field(default_factory=list)
    lz4: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, variant: str, seconds: float, cpu: float) -> None:
        self.seconds.setdefault(variant, []).append(seconds)
        self.cpu.setdefault(variant, []).append(cpu)

    def t(self, variant: str) -> float:
        return med(self.seconds.get(variant, []))

    def paired(self, ours: str, base: str) -> float:
        """Median over rounds of ours' throughput / the baseline's in the same round
        (the two ran next to each other: a drift in the machine's speed cancels)."""
        pairs = zip(self.seconds.get(ours, []), self.seconds.get(base, []), strict=True)
        return med([b / o for o, b in pairs if o > 0])

    def best(self, ours: str, base: str) -> float:
        """Fastest round of ours against the fastest round of the baseline."""
        o, b = self.seconds.get(ours, []), self.seconds.get(base, [])
        return min(b) / min(o) if o and b else float("nan")

    def cpu_per_gb(self, variant: str) -> float:
        """CPU seconds per GB moved (median of rounds)."""
        return med([c / (self.bytes / 1e9) for c in self.cpu.get(variant, [])])

    def cores(self, variant: str) -> float:
        """CPU seconds per second of the process doing it (median of rounds)."""
        pairs = zip(self.cpu.get(variant, []), self.seconds.get(variant, []), strict=True)
        return med([c / s for c, s in pairs if s > 0])


def measure_size(
    total: int,
    rounds: int,
    workdir: Path,
    progress: Callable[[str], None],
    *,
    baselines: bool,
    lz4: bool,
    cold: bool,
) -> SizeResult:
    """Dump and restore ``total`` bytes of device memory, and the plain I/O baselines.

    Every variant runs once untimed first (round 0: the VM's first touch of
    memory is slow), then ``rounds`` times, the order rotating each round.
    Dumps are deleted as soon as they are timed; the checkpoint the restores
    read is written afterwards, and the disk synced, so that no write-back
    runs under a measurement."""
    base = workdir / f"size-{total // MiB}"
    base.mkdir(parents=True, exist_ok=True)
    keep = base / "ckpt"
    mib = total // MiB
    with device_job(tensor_sizes(total), "weights", progress) as job:
        res = SizeResult(job.bytes, job.allocations, job.regions, rounds)
        variants = ["dump"]
        if baselines:
            variants += ["write_device", "write_buffer", "dump2"]
        for k in range(rounds + 1):
            for v in rotate(variants, k):
                sync_disk()
                progress(f"{mib} MiB round {k}/{rounds}: {v}" + (" (warm-up)" if not k else ""))
                if v in ("dump", "dump2"):
                    target = base / "timed"
                    d = dump(job, target, "none", 1 if v == "dump" else 2)
                    shutil.rmtree(target)
                    if k:
                        res.add(v, d["seconds"], d["cpu"])
                        if v == "dump":
                            res.dump_phases.append(d["phases"])
                else:
                    path = base / "plain-write.bin"
                    src = "device" if v == "write_device" else "buffer"
                    r = job.w("write_plain", path=str(path), source=src, bytes=job.bytes)
                    path.unlink()
                    if k:
                        res.add(v, r["seconds"], r["cpu"])
        if lz4:
            for kind in ("weights", "activations"):
                if kind != "weights":
                    job.w("fill", kind=kind, seed=7)
                d_kind: dict[str, Any] = {"bytes": job.bytes, "stored": 0}
                for k in range(rounds + 1):
                    for st in rotate(["1", "2"], k):
                        sync_disk()
                        progress(
                            f"lz4 {kind} round {k}/{rounds}: --stream {st}"
                            + (" (warm-up)" if not k else "")
                        )
                        target = base / f"lz4-{st}"
                        d = dump(job, target, "lz4", int(st))
                        shutil.rmtree(target)
                        d_kind["stored"] = d["stored"]
                        if k:
                            d_kind.setdefault(f"stream{st}_s", []).append(d["seconds"])
                            d_kind.setdefault(f"stream{st}_cpu", []).append(d["cpu"])
                res.lz4[kind] = d_kind
            job.w("fill", kind="weights")
        progress(f"{mib} MiB: the checkpoint the restores read")
        d = dump(job, keep, "none", 1)
        ans = d["answer"]
        meta: dict[str, Any] = {
            "segment": job.segment,
            "va_base": ans["va_base"],
            "va_size": ans["va_size"],
            "geometry": ans["geometry"],
            "check": job.w("checksum")["regions"],
        }
    sync_disk()
    # The dumping controller is gone (its segment too): restore in fresh processes.
    shards = [str(p) for p in shard_files(keep)]
    variants = ["restore"]
    if baselines:
        variants += ["read_fresh", "read_buffer"]
    with worker() as plain:
        for k in range(rounds + 1):
            for v in rotate(variants, k):
                progress(f"{mib} MiB round {k}/{rounds}: {v}" + (" (warm-up)" if not k else ""))
                sync_disk()
                if v == "restore":
                    # The first restore also checks every byte against the dumped ones.
                    r = restore(meta if k == 0 else {**meta, "check": None}, keep, "none", 1)
                    if k:
                        res.restore_phases.append(r["phases"])
                else:
                    dest = "fresh" if v == "read_fresh" else "buffer"
                    r = plain("read_plain", paths=shards, dest=dest)
                if k:
                    res.add(v, r["seconds"], r["cpu"])
        if cold:
            for k in range(1, rounds + 1):
                for v in rotate(["restore", "read_fresh"], k):
                    progress(f"{mib} MiB cold round {k}/{rounds}: {v}")
                    if not drop_caches():
                        raise BenchError("cannot drop the page cache (needs root)")
                    if v == "restore":
                        r = restore({**meta, "check": None}, keep, "none", 1)
                    else:
                        r = plain("read_plain", paths=shards, dest="fresh")
                    res.add(f"cold_{v}", r["seconds"], r["cpu"])
    shutil.rmtree(base)
    return res


# ---- 3b: allocation count -------------------------------------------------------------


@dataclass
class CountResult:
    allocations: int
    bytes: int
    regions: int
    alloc_s: float
    dump_s: list[float] = field(default_factory=list)
    restore_s: list[float] = field(default_factory=list)
    dump_phases: list[dict[str, float]] = field(default_factory=list)
    restore_phases: list[dict[str, float]] = field(default_factory=list)
    state_json: int = 0


def measure_count(
    count: int, rounds: int, workdir: Path, progress: Callable[[str], None]
) -> CountResult:
    base = workdir / f"count-{count}"
    keep = base / "ckpt"
    with device_job([SMALL_ALLOC] * count, "weights", progress) as job:
        res = CountResult(count, job.bytes, job.regions, job.alloc_s)
        meta: dict[str, Any] = {}
        for k in range(rounds + 1):  # round 0: warm-up, not counted
            sync_disk()
            progress(f"{count} allocations round {k}/{rounds}: dump")
            d = dump(job, keep, "none", 1)
            if k:
                res.dump_s.append(d["seconds"])
                res.dump_phases.append(d["phases"])
            ans = d["answer"]
            meta = {
                "segment": job.segment,
                "va_base": ans["va_base"],
                "va_size": ans["va_size"],
                "geometry": ans["geometry"],
            }
        res.state_json = (keep / "gpu" / "state.json").stat().st_size
    sync_disk()
    for k in range(rounds + 1):
        progress(f"{count} allocations round {k}/{rounds}: restore")
        r = restore(meta, keep, "none", 1)
        if k:
            res.restore_s.append(r["seconds"])
            res.restore_phases.append(r["phases"])
    shutil.rmtree(base)
    return res


# ---- 4: the CLI, with CRIU --------------------------------------------------------------


def cedana(*args: str) -> list[str]:
    return [sys.executable, "-m", "cedana_gpu", *args]


def cli_env(state: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: the tests' own (tests/cr_helpers.py)."""
    sys.path.insert(0, str(TESTS))
    try:
        from cr_helpers import clean_env
    finally:
        sys.path.remove(str(TESTS))
    return clean_env(state, **extra)


def run_cli(state: Path, *args: str, timeout: float = 600) -> str:
    out = subprocess.run(
        cedana(*args),
        env=cli_env(state),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        tail = (out.stdout + out.stderr).strip().splitlines()[-3:]
        raise BenchError(f"cedana {' '.join(args[:2])} failed: " + " | ".join(tail))
    return out.stdout


def _job(state: Path, jid: str) -> dict[str, Any]:
    for j in json.loads(run_cli(state, "ps", "--output", "json")):
        if j["jid"] == jid:
            return dict(j)
    raise BenchError(f"job {jid} is not listed")


def _log(state: Path, jid: str) -> str:
    p = state / "jobs" / jid / "job.log"
    return p.read_text(errors="replace") if p.exists() else ""


def _wait(pred: Callable[[], Any], what: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _checksum(text: str) -> str:
    found = [ln for ln in text.splitlines() if ln.startswith("checksum: ")]
    return found[-1].split(": ", 1)[1].strip() if found else ""


def _manifest(path: Path) -> dict[str, Any]:
    """The manifest of a checkpoint directory or archive (its first member)."""
    import tarfile

    with contextlib.suppress(OSError, ValueError, tarfile.TarError):
        if path.is_dir():
            return dict(json.loads((path / "manifest.json").read_text()))
        with tarfile.open(path) as tf:
            f = tf.extractfile("manifest.json")
            if f is not None:
                return dict(json.loads(f.read()))
    return {}


@dataclass
class CliRun:
    compression: str
    streams: int
    dump: dict[str, Any]
    manifest_phases: dict[str, float]
    restore: dict[str, Any]
    checksum: str


def cli_round(state: Path, ckdir: Path, args: list[str], compression: str, streams: int) -> CliRun:
    jid = f"bench{uuid.uuid4().hex[:10]}"
    run_cli(state, "exec", "--gpu", "--gpu-driver", "fake", "--jid", jid, "--", *args)
    try:
        rx = re.compile(rf"^step {CLI_DUMP_AT} ", re.M)

        def reached() -> bool:
            if rx.search(_log(state, jid)):
                return True
            if _job(state, jid)["state"] not in ("starting", "running"):
                raise BenchError(f"job {jid} ended before step {CLI_DUMP_AT}: {_log(state, jid)}")
            return False

        _wait(reached, f"job {jid} to reach step {CLI_DUMP_AT}")
        d = json.loads(
            run_cli(
                state,
                "dump",
                "job",
                jid,
                "--dir",
                str(ckdir),
                "--compression",
                compression,
                "--stream",
                str(streams),
                "--output",
                "json",
            )
        )
    except BaseException:
        with contextlib.suppress(Exception):
            run_cli(state, "job", "kill", jid, timeout=60)
        raise
    manifest_phases = _manifest(Path(d["path"])).get("phases") or {}
    r = json.loads(run_cli(state, "restore", "job", jid, "--output", "json"))
    new = r["job"]
    _wait(
        lambda: _job(state, new)["state"] not in ("starting", "running"),
        f"restored job {new} to end",
    )
    log = _log(state, new)
    return CliRun(compression, streams, d, manifest_phases, r, _checksum(log))


@dataclass
class CliResult:
    args: list[str]
    runs: list[CliRun] = field(default_factory=list)
    reference_checksum: str = ""
    skipped: str = ""


def measure_cli(
    workdir: Path,
    rounds: int,
    device_mib: int,
    progress: Callable[[str], None],
) -> CliResult:
    args = [
        sys.executable,
        str(TRAIN_MLP),
        "--steps",
        str(CLI_STEPS),
        "--device-mib",
        str(device_mib),
        "--print-every",
        "1",
        "--sleep-per-step",
        str(CLI_SLEEP),
    ]
    res = CliResult(args)
    if os.geteuid() != 0:
        res.skipped = "needs root (CRIU)"
        return res
    state = workdir / "cli-state"
    ckdir = workdir / "cli-ckpt"
    state.mkdir()
    ckdir.mkdir()
    try:
        variants = [("none", 1)] * rounds + [("lz4", 2)]
        for k, (comp, streams) in enumerate(variants):
            progress(f"cedana dump/restore {k + 1}/{len(variants)}: {comp} --stream {streams}")
            sync_disk()
            res.runs.append(cli_round(state, ckdir, args, comp, streams))
            shutil.rmtree(ckdir)
            ckdir.mkdir()
        progress("train_mlp uninterrupted, directly on the fake driver (reference checksum)")
        from cedana_gpu.paths import fake_libdir

        out = subprocess.run(
            args,
            env=cli_env(Path("/nonexistent"), LD_LIBRARY_PATH=str(fake_libdir())),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        res.reference_checksum = _checksum(out.stdout)
    finally:
        with contextlib.suppress(Exception):
            for j in json.loads(run_cli(state, "ps", "--output", "json")):
                if j["state"] in ("starting", "running"):
                    run_cli(state, "job", "kill", j["jid"], timeout=60)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(ckdir, ignore_errors=True)
    return res


# =====================================================================================
# Results
# =====================================================================================


@dataclass
class Metric:
    name: str
    unit: str
    baseline: float
    ours: float
    bar: str
    met: bool | None
    ratio: float
    note: str = ""
    best_ratio: float = float("nan")
    """Best round of ours / best round of the baseline (throughputs)."""


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else float("nan")


def headline_metrics(r: SizeResult) -> list[Metric]:
    """Throughput rows: ours and baseline in GB/s, ratio = ours / baseline."""
    b = r.bytes
    out: list[Metric] = []

    def row(name: str, ours: str, base: str, bar: float | None, note: str) -> None:
        if ours not in r.seconds or base not in r.seconds:
            return
        o, p = gbps(b, r.t(ours)), gbps(b, r.t(base))
        ratio = r.paired(ours, base)
        met = None if bar is None else ratio >= bar
        cores = (
            f"CPU: ours {r.cores(ours):.2f} cores, {r.cpu_per_gb(ours):.2f} CPU-s/GB; "
            f"baseline {r.cores(base):.2f} cores, {r.cpu_per_gb(base):.2f} CPU-s/GB"
        )
        note = f"{note}; {cores}" if note else cores
        bar_s = f"≥ {bar:.0%}" if bar else ""
        out.append(Metric(name, "GB/s", p, o, bar_s, met, ratio, note, r.best(ours, base)))

    row(
        "GPU dump, none, --stream 1",
        "dump",
        "write_device",
        DUMP_BAR,
        "baseline: plain write of the device memory itself",
    )
    row("  same, against a write of a hot 4 MiB buffer", "dump", "write_buffer", None, "")
    row("GPU dump, none, --stream 2", "dump2", "write_device", None, "")
    row(
        "GPU restore, none, --stream 1",
        "restore",
        "read_fresh",
        RESTORE_BAR,
        "baseline: plain read into a fresh mapping of the same size",
    )
    row("  same, against a read into a reused 4 MiB buffer", "restore", "read_buffer", None, "")
    row(
        "GPU restore, page cache dropped",
        "cold_restore",
        "cold_read_fresh",
        None,
        "both read from the disk",
    )
    return out


def lz4_metrics(r: SizeResult) -> list[Metric]:
    out = []
    for kind, d in r.lz4.items():
        s1, s2 = med(d["stream1_s"]), med(d["stream2_s"])
        ratio = med([a / b for a, b in zip(d["stream1_s"], d["stream2_s"], strict=True) if b])
        comp = d["bytes"] / d["stored"] if d["stored"] else float("nan")
        c1 = med([c / t for c, t in zip(d["stream1_cpu"], d["stream1_s"], strict=True)])
        c2 = med([c / t for c, t in zip(d["stream2_cpu"], d["stream2_s"], strict=True)])
        label = "trained-model-like weights" if kind == "weights" else "ReLU activations"
        out.append(
            Metric(
                f"lz4 dump, {label}",
                "GB/s",
                gbps(d["bytes"], s1),
                gbps(d["bytes"], s2),
                f"≥ {LZ4_BAR}×",
                ratio >= LZ4_BAR,
                ratio,
                f"compressed {comp:.2f}:1; CPU: --stream 1 {c1:.2f} cores, --stream 2 {c2:.2f}",
                min(d["stream1_s"]) / min(d["stream2_s"]),
            )
        )
    return out


def fmt_cell(v: float, unit: str) -> str:
    if v != v:  # nan
        return "—"
    if unit == "GB/s":
        return f"{v:.2f}"
    if unit == "s":
        return f"{v:.3f}"
    return f"{v:.3g}"


def table(head: list[str], rows: list[list[str]]) -> str:
    allrows = [head, *rows]
    widths = [max(len(r[c]) for r in allrows) for c in range(len(head))]
    lines = []
    for n, r in enumerate(allrows):
        cells = [
            c.ljust(w) if k == 0 else c.rjust(w)
            for k, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def metric_table(metrics: list[Metric], base_name: str, ours_name: str) -> str:
    rows = []
    for m in metrics:
        met = "—" if m.met is None else ("yes" if m.met else "MISSED")
        rows.append(
            [
                m.name,
                m.unit,
                fmt_cell(m.baseline, m.unit),
                fmt_cell(m.ours, m.unit),
                "—" if m.ratio != m.ratio else f"{m.ratio:.2f}",
                "—" if m.best_ratio != m.best_ratio else f"{m.best_ratio:.2f}",
                m.bar or "—",
                met,
            ]
        )
    return table(["metric", "unit", base_name, ours_name, "ratio", "best", "bar", "met?"], rows)


def size_table(sizes: list[SizeResult]) -> str:
    rows = []
    for r in sizes:
        d, rs = r.t("dump"), r.t("restore")
        rows.append(
            [
                f"{r.bytes / MiB:.0f} MiB",
                str(r.allocations),
                str(r.rounds),
                f"{d:.3f}",
                f"{gbps(r.bytes, d):.2f}",
                f"{r.paired('dump', 'write_device'):.2f}",
                f"{rs:.3f}",
                f"{gbps(r.bytes, rs):.2f}",
                f"{r.paired('restore', 'read_fresh'):.2f}",
            ]
        )
    return table(
        [
            "device memory",
            "allocs",
            "rounds",
            "dump s",
            "GB/s",
            "vs write",
            "restore s",
            "GB/s",
            "vs read",
        ],
        rows,
    )


def count_metrics(counts: list[CountResult]) -> tuple[str, list[Metric]]:
    rows = []
    metrics: list[Metric] = []
    first = counts[0] if counts else None
    for c in counts:
        d, r = med(c.dump_s), med(c.restore_s)
        per_d = d / c.allocations * 1e6
        per_r = r / c.allocations * 1e6
        marg_d = marg_r = float("nan")
        if first is not None and c.allocations > first.allocations:
            n = c.allocations - first.allocations
            marg_d = (d - med(first.dump_s)) / n * 1e6
            marg_r = (r - med(first.restore_s)) / n * 1e6
        st = med([p.get("gpu_state", 0.0) for p in c.dump_phases])
        it = med([p.get("gpu_state", 0.0) for p in c.restore_phases])
        rows.append(
            [
                f"{c.allocations:,}",
                str(c.regions),
                f"{c.bytes / MiB:.1f}",
                f"{d * 1e3:.1f}",
                f"{st * 1e3:.1f}",
                f"{per_d:.2f}",
                "—" if marg_d != marg_d else f"{marg_d:.2f}",
                f"{r * 1e3:.1f}",
                f"{it * 1e3:.1f}",
                f"{per_r:.2f}",
                "—" if marg_r != marg_r else f"{marg_r:.2f}",
            ]
        )
    if counts:
        big = counts[-1]
        for what, s in (("dump", med(big.dump_s)), ("restore", med(big.restore_s))):
            per = s / big.allocations * 1e6
            metrics.append(
                Metric(
                    f"{what} cost per allocation, {big.allocations:,} allocations",
                    "µs",
                    float("nan"),
                    per,
                    f"≤ {ALLOC_BAR_US:.0f} µs",
                    per <= ALLOC_BAR_US,
                    float("nan"),
                    "whole GPU dump/restore time / allocations",
                )
            )
    text = table(
        [
            "allocations",
            "regions",
            "MiB",
            "dump ms",
            "export ms",
            "µs/alloc",
            "marginal",
            "restore ms",
            "import ms",
            "µs/alloc",
            "marginal",
        ],
        rows,
    )
    return text, metrics


CLI_DUMP_PHASES = (
    ("freeze", "freeze"),
    ("gpu_dump", "GPU dump (control op, as the CLI sees it)"),
    ("gpu_state", "  handle tables + modules (cgc_export_state)"),
    ("gpu_memory", "  device memory (write_regions)"),
    ("gpu_pins", "  pinned host memory"),
    ("criu_dump", "CRIU dump"),
    ("archive", "manifest + archive + rename"),
    ("other", "the rest (connect, job end recorded, store)"),
    ("total", "total (cedana dump job)"),
)
CLI_RESTORE_PHASES = (
    ("check", "check (manifest, files, checksums; unpack)"),
    ("start", "start (new controller up to the job running)"),
    ("gpu_pins", "  pinned host memory"),
    ("gpu_state", "  handle tables + modules (cgc_import_state)"),
    ("gpu_memory", "  device memory (read_regions, verified)"),
    ("criu_restore", "  CRIU restore"),
    ("controller", "  controller: GPU + CRIU + start serving"),
    ("startup", "  controller process start-up (start - controller)"),
    ("other", "the rest"),
    ("total", "total (cedana restore job)"),
)


def cli_dump_phases(r: CliRun) -> dict[str, float]:
    """The CLI's dump phases, the controller's GPU sub-phases (from the manifest), the rest."""
    ph = {k: float(v) for k, v in r.manifest_phases.items()}
    ph.update({k: float(v) for k, v in r.dump["phases"].items()})
    if "total" in ph:
        parts = ("freeze", "gpu_dump", "criu_dump", "archive")
        ph["other"] = ph["total"] - sum(ph.get(k, 0.0) for k in parts)
    return ph


def cli_restore_phases(r: CliRun) -> dict[str, float]:
    ph = {k: float(v) for k, v in r.restore["phases"].items()}
    if "start" in ph and "controller" in ph:
        ph["startup"] = ph["start"] - ph["controller"]
    if "total" in ph:
        ph["other"] = ph["total"] - ph.get("check", 0.0) - ph.get("start", 0.0)
    return ph


def cli_tables(c: CliResult) -> str:
    if c.skipped:
        return f"skipped: {c.skipped}"
    if not c.runs:
        return "no runs"
    groups: dict[tuple[str, int], list[CliRun]] = {}
    for r in c.runs:
        groups.setdefault((r.compression, r.streams), []).append(r)
    keys = list(groups)
    head = ["phase"] + [f"{comp} s{st} (n={len(groups[(comp, st)])})" for comp, st in keys]
    rows = []
    for what, phases_of, names in (
        ("dump", cli_dump_phases, CLI_DUMP_PHASES),
        ("restore", cli_restore_phases, CLI_RESTORE_PHASES),
    ):
        for key, label in names:
            row = [f"{what}: {label}"]
            for g in keys:
                vals = [ph[key] for ph in map(phases_of, groups[g]) if key in ph]
                row.append(f"{med(vals):.3f}" if vals else "—")
            rows.append(row)
    size_row = ["checkpoint size MiB"]
    for g in keys:
        size_row.append(f"{med([r.dump['size'] for r in groups[g]]) / MiB:.1f}")
    rows.append(size_row)
    lines = [table(head, rows)]
    sums = {r.checksum for r in c.runs}
    if c.reference_checksum:
        same = sums == {c.reference_checksum}
        lines.append(
            f"restored jobs' checksums {'all equal' if same else 'DIFFER FROM'} the "
            f"uninterrupted run's ({c.reference_checksum[:16]}…)"
        )
    return "\n".join(lines)


# =====================================================================================
# The whole run
# =====================================================================================


def fs_type(path: Path) -> tuple[str, str]:
    """(mount point, file system type) of ``path``, from /proc/mounts."""
    best = ("", "?")
    target = str(path.resolve())
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1].replace("\\040", " ")
            if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                best[0]
            ):
                best = (mnt, parts[2])
    except OSError:
        pass
    return best


def cpu_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, this process and its waited-for children)."""
    busy = float("nan")
    with contextlib.suppress(OSError, ValueError, IndexError):
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq steal: busy = all but idle and iowait
        busy = (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def machine(workdir: Path) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    mnt, fstype = fs_type(workdir)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem / GiB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nvidia_devices": sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*")),
        "driver": "fake (CPU)",
        "directory": str(workdir),
        "mount": mnt,
        "fs_type": fstype,
        "loadavg_start": loadavg(),
    }


@dataclass
class Results:
    rounds: int
    started: str = ""
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    sizes: list[SizeResult] = field(default_factory=list)
    counts: list[CountResult] = field(default_factory=list)
    cli: CliResult | None = None
    metrics: list[Metric] = field(default_factory=list)


@dataclass
class Plan:
    rounds: int
    sizes: tuple[int, ...]
    headline: int
    counts: tuple[int, ...]
    count_rounds: int
    cli_rounds: int
    cli_device_mib: int
    cold: bool


def run_all(plan: Plan, workdir: Path, progress: Callable[[str], None]) -> Results:
    res = Results(plan.rounds)
    res.started = datetime.now(UTC).isoformat(timespec="seconds")
    res.machine = machine(workdir)
    t0 = time.perf_counter()
    busy0, ours0 = cpu_busy()
    for size in plan.sizes:
        head = size == plan.headline
        res.sizes.append(
            measure_size(
                size,
                plan.rounds if head or size < plan.headline else min(plan.rounds, 3),
                workdir,
                progress,
                baselines=True,
                lz4=head,
                cold=head and plan.cold,
            )
        )
    for count in plan.counts:
        res.counts.append(measure_count(count, plan.count_rounds, workdir, progress))
    # Everything so far ran in this process and its workers: the rest of the
    # machine's busy CPU time is other work, competing for the same cores.
    busy1, ours1 = cpu_busy()
    span = time.perf_counter() - t0
    res.machine["other_cores"] = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / span
    res.machine["our_cores"] = (ours1 - ours0) / span
    if plan.cli_rounds:
        res.cli = measure_cli(workdir, plan.cli_rounds, plan.cli_device_mib, progress)
    headline = next(r for r in res.sizes if r.bytes == plan.headline)
    res.metrics = headline_metrics(headline) + lz4_metrics(headline)
    res.metrics += count_metrics(res.counts)[1]
    res.seconds = time.perf_counter() - t0
    res.machine["loadavg_end"] = loadavg()
    return res


def to_json(res: Results) -> dict[str, Any]:
    return asdict(res)


def report(res: Results, plan: Plan) -> str:
    m = res.machine
    head = next(r for r in res.sizes if r.bytes == plan.headline)
    top = [x for x in res.metrics if not x.name.startswith(("dump cost", "restore cost"))]
    lines = [
        f"checkpoint benchmarks, {res.started}, {res.rounds} alternating rounds, "
        f"{res.seconds:.0f} s",
        f"machine: {m['cpus']} CPUs ({m['cpu_model'] or 'unknown CPU'}), "
        f"{m['memory_gib']} GiB, kernel {m['kernel']}, driver: {m['driver']}; "
        f"NVIDIA devices: {', '.join(m['nvidia_devices']) or 'none'}",
        f"directory: {m['directory']} ({m['fs_type']} at {m['mount']}); "
        "page cache warm unless said (files just written), os.sync() before each measurement",
        f"load average (1 min) {m['loadavg_start']:.2f} at the start, "
        f"{m['loadavg_end']:.2f} at the end; during 1-3 this benchmark used "
        f"{m['our_cores']:.2f} cores on average, other processes {m['other_cores']:.2f}",
        "",
        f"1-2. {head.bytes / MiB:.0f} MiB of device memory in {head.allocations} allocations "
        f"({head.regions} regions), values: medians of the rounds; ratio: median of "
        "the per-round ratios ours / baseline (lz4: --stream 2 / --stream 1), which the bar "
        "is held to; best: fastest round / fastest round",
        "",
        metric_table(top, "baseline", "ours"),
        "",
        *[f"  {x.name.strip()}: {x.note}" for x in top if x.note],
        "",
        "3a. against device memory size (none, --stream 1; medians; vs write / vs read: "
        "median of per-round throughput ratios to the plain write / the plain fresh read)",
        "",
        size_table(res.sizes),
        "",
        f"3b. against allocation count ({SMALL_ALLOC} B each; ms are medians of "
        f"{plan.count_rounds}; µs/alloc = whole time / allocations; "
        "marginal = (t(N) - t(1)) / (N - 1))",
        "",
    ]
    text, cm = count_metrics(res.counts)
    lines += [text, "", metric_table(cm, "—", "ours"), ""]
    if res.cli is not None:
        lines += [
            f"4. cedana dump job / cedana restore job of train_mlp "
            f"--device-mib {plan.cli_device_mib} (CRIU, seconds, medians)",
            "",
            cli_tables(res.cli),
            "",
        ]
    missed = [x for x in res.metrics if x.met is False]
    if missed:
        lines.append(f"MISSED {len(missed)} bar(s):")
        for x in missed:
            if x.unit == "µs":
                lines.append(f"  {x.name}: {x.ours:.2f} µs, bar {x.bar}")
            else:
                lines.append(f"  {x.name}: ratio {x.ratio:.2f}, bar {x.bar}")
    else:
        lines.append("all bars met")
    if not m["nvidia_devices"]:
        lines.append(
            "not measured: the real-GPU bar (dump ≥ 80% of the device-to-host copy "
            "bandwidth): no NVIDIA GPU here"
        )
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [WORKER]:
        return worker_main()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--quick", action="store_true", help="small sizes, one round: checks it runs")
    ap.add_argument("--full", action="store_true", help="add 4 GiB to the device memory sweep")
    ap.add_argument("--no-cli", action="store_true", help="skip cedana dump/restore with CRIU")
    ap.add_argument(
        "--no-cold",
        action="store_true",
        help="skip the restores with the page cache dropped (done as root by default)",
    )
    ap.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the checkpoints and plain files go (default: the temp dir)",
    )
    ap.add_argument("--save", type=Path, metavar="FILE", help="also write the JSON results here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.quick:
        plan = Plan(1, QUICK_SIZES, QUICK_SIZES[-1], QUICK_ALLOC_COUNTS, 1, 0 if args.no_cli else 1,
                    16, False)  # fmt: skip
    else:
        plan = Plan(
            args.rounds,
            FULL_SIZES if args.full else SIZES,
            HEADLINE_BYTES,
            ALLOC_COUNTS,
            2,
            0 if args.no_cli else 2,
            CLI_DEVICE_MIB,
            not args.no_cold and os.geteuid() == 0,
        )

    def progress(msg: str) -> None:
        print(f"... {msg}", file=sys.stderr, flush=True)

    try:
        args.dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="cedana-bench-ckpt-", dir=args.dir))
    except OSError as e:
        print(f"checkpoint: cannot create a directory in {args.dir}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        res = run_all(plan, workdir, progress)
    except BenchError as e:
        print(f"checkpoint: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    doc = json.dumps(to_json(res), indent=2, ensure_ascii=False)
    if args.save:
        try:
            args.save.write_text(doc + "\n")
        except OSError as e:
            print(f"checkpoint: cannot write {args.save}: {e.strerror}", file=sys.stderr)
            return 1
    if args.json:
        print(doc)
    else:
        print(report(res, plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
