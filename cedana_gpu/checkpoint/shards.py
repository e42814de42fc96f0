"""Device memory shards: ``<ckpt>/gpu/img-0`` … ``img-(N-1)`` (+ codec suffix).

``write_regions`` splits the regions (large ones into chunks of at most
``chunk_size``) into N contiguous runs of about equal bytes, one per shard,
and writes the shards in parallel. Each shard has two threads and a few
reusable buffers: a *reader* fills a buffer from the device (``read_fn``,
the native ``cgc_read_device``, which releases the GIL), packing consecutive
small regions into one buffer, while a *writer* compresses and writes the
previous buffer. The device read and the file write (and the compression)
therefore overlap, and shards run side by side.

``read_regions`` does the reverse, one reader (file → buffers, decompressing)
and one writer (checksum, then ``write_fn`` to the device) per shard. Every
record's checksum is checked *before* its bytes go to the device; a damaged,
short or missing shard raises ``CorruptCheckpoint`` naming the shard and the
address.

The functions take plain callables so the library needs neither CUDA nor the
native build:

- ``read_fn(addr, size, dst) -> checksum``: copy ``size`` device bytes at
  ``addr`` into the writable memoryview ``dst`` and return their checksum;
- ``write_fn(addr, src)``: copy ``src`` to the device at ``addr``;
- ``checksum_fn(buf) -> int``: the checksum ``read_fn`` computes (the native
  ``cgc_checksum``, CRC32C).
"""

from __future__ import annotations

import mmap
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from cedana_gpu.checkpoint import durable
from cedana_gpu.checkpoint.codec import CodecError, StreamReader, StreamWriter
from cedana_gpu.checkpoint.compression import suffix
from cedana_gpu.checkpoint.manifest import RegionRecord
from cedana_gpu.checkpoint.progress import ProgressSink
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint

SHARD_DIR = "gpu"
"""Where the shards are in a checkpoint directory."""

DEFAULT_CHUNK_SIZE = 4 << 20
"""Largest record, and the size of each pipeline buffer (a buffer holds many small regions).

4 MiB: a shard's three buffers stay in the last-level cache, so the file write
reads what the device read just wrote from cache; on a 32 MiB-L3 host, 4 MiB
buffers dumped at 97-115% of a plain sequential write, 8 MiB at ~84%, 16 MiB
at ~79% (best of 7, 1 GiB). DMA from a GPU is at full speed well below 4 MiB.
"""

DEFAULT_BUFFERS = 3
"""Buffers per shard: one being filled, one being written, one spare to absorb jitter."""

ReadFn = Callable[[int, int, memoryview], int]
WriteFn = Callable[[int, memoryview], None]
ChecksumFn = Callable[[memoryview], int]
BufferFactory = Callable[[int], memoryview]

_SHARD_RE = re.compile(r"img-(\d+)(\.lz4|\.gz|\.zz)?")
_POLL = 0.02  # seconds between checks for a failure elsewhere while waiting on a queue


def shard_name(index: int, compression: str) -> str:
    """``img-<index>`` plus the codec's suffix (``.lz4``, ``.gz``, ``.zz``)."""
    return f"img-{index}{suffix(compression)}"


def shard_path(directory: str | os.PathLike[str], index: int, compression: str) -> Path:
    return Path(directory) / shard_name(index, compression)


def is_shard_file(relpath: str) -> bool:
    """Whether a path relative to the checkpoint directory is a shard (``gpu/img-3.lz4``)."""
    head, _, name = relpath.rpartition("/")
    return head == SHARD_DIR and _SHARD_RE.fullmatch(name) is not None


def anonymous_buffer(size: int) -> memoryview:
    """Default buffer: anonymous memory, page-aligned, committed only as it is touched."""
    return memoryview(mmap.mmap(-1, max(size, 1)))[:size]


def plan(
    regions: Iterable[tuple[int, int]], streams: int, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[list[tuple[int, int]]]:
    """Split regions into pieces of at most ``chunk_size``, in ``streams`` runs of ~equal bytes.

    Runs are contiguous in the given order (each shard reads the device
    sequentially); a region that straddles a run boundary is cut there.
    Empty regions are dropped: they have no bytes to store.
    """
    if streams < 1:
        raise ValueError(f"streams must be at least 1, not {streams}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    regs = [(int(a), int(s)) for a, s in regions]
    for a, s in regs:
        if a < 0 or s < 0:
            raise ValueError(f"bad region (0x{a:x}, {s})")
    total = sum(s for _, s in regs)
    target = -(-total // streams) if total else 1
    runs: list[list[tuple[int, int]]] = [[] for _ in range(streams)]
    shard = 0
    filled = 0
    for addr, size in regs:
        while size > 0:
            room = target - filled if shard < streams - 1 else size
            take = min(size, chunk_size, room)
            runs[shard].append((addr, take))
            addr += take
            size -= take
            filled += take
            if filled >= target and shard < streams - 1:
                shard += 1
                filled = 0
    return runs


_T = TypeVar("_T")


class _Aborted(Exception):
    """Another thread failed; this one stops."""


def _get(q: queue.Queue[_T], abort: threading.Event) -> _T:
    """The next item of ``q``; ``_Aborted`` once another thread failed."""
    while True:
        try:
            return q.get(timeout=_POLL)
        except queue.Empty:
            if abort.is_set():
                raise _Aborted from None


def _run(targets: Sequence[tuple[str, Callable[[], None]]], abort: threading.Event) -> None:
    """Run the targets in threads; on the first failure stop the others, then raise it."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wrap(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as e:  # re-raised in the calling thread below
            with lock:
                errors.append(e)
            abort.set()

    threads = [
        threading.Thread(target=wrap, args=(fn,), name=name, daemon=True) for name, fn in targets
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        abort.set()
        for t in threads:
            t.join()
        raise
    real = [e for e in errors if not isinstance(e, _Aborted)]
    if real:
        raise real[0]
    if errors:  # pragma: no cover - an abort always has a cause
        raise errors[0]


def write_regions(
    directory: str | os.PathLike[str],
    regions: Iterable[tuple[int, int]],
    read_fn: ReadFn,
    streams: int,
    compression: str,
    progress: ProgressSink | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    buffers: int = DEFAULT_BUFFERS,
    buffer_factory: BufferFactory | None = None,
    sync: bool = False,
) -> list[RegionRecord]:
    """Write the regions' device bytes into ``streams`` shards in ``directory``, in parallel.

    ``regions``: (addr, size) pairs. Returns one record per piece (a region,
    or a chunk of a large one), in region order, for the manifest. All N
    shard files are created, even ones with no bytes. ``sync``: fsync each
    shard before returning. File errors raise ``CheckpointError``; whatever
    ``read_fn`` raises is raised as is (the first failure of any thread).
    """
    suffix(compression)  # check the name before creating anything
    directory = Path(directory)
    runs = plan(regions, streams, chunk_size)
    factory = buffer_factory or anonymous_buffer
    abort = threading.Event()
    results: list[list[RegionRecord]] = [[] for _ in runs]
    targets: list[tuple[str, Callable[[], None]]] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create {directory}: {e.strerror}") from None
    for index, pieces in enumerate(runs):
        path = shard_path(directory, index, compression)
        targets += _shard_writer(
            index, path, pieces, read_fn, compression, progress, chunk_size, buffers, factory,
            sync, abort, results,
        )  # fmt: skip
    _run(targets, abort)
    return [r for shard in results for r in shard]


def _shard_writer(
    index: int,
    path: Path,
    pieces: list[tuple[int, int]],
    read_fn: ReadFn,
    compression: str,
    progress: ProgressSink | None,
    chunk_size: int,
    buffers: int,
    factory: BufferFactory,
    sync: bool,
    abort: threading.Event,
    results: list[list[RegionRecord]],
) -> list[tuple[str, Callable[[], None]]]:
    """The two threads of one shard's dump: device → buffers, buffers → file."""
    n = len(pieces)
    shard_bytes = sum(s for _, s in pieces)
    cap = max(1, min(chunk_size, shard_bytes))
    checksums = [0] * n
    stored = [0] * n
    free_q: queue.Queue[memoryview] = queue.Queue()
    full_q: queue.Queue[tuple[memoryview, int, int, int] | None] = queue.Queue()

    def reader() -> None:
        nbuf = min(buffers, max(1, -(-shard_bytes // cap)))
        for _ in range(nbuf):
            free_q.put(factory(cap))
        i = 0
        while i < n:
            if abort.is_set():
                raise _Aborted
            buf = _get(free_q, abort)
            pos = 0
            start = i
            while i < n:
                addr, size = pieces[i]
                if pos + size > cap:
                    break
                checksums[i] = int(read_fn(addr, size, buf[pos : pos + size]))
                pos += size
                i += 1
            full_q.put((buf, pos, start, i))
        full_q.put(None)

    def writer() -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise CheckpointError(f"cannot create {path}: {e.strerror}") from None
        try:
            out = StreamWriter(fd, compression)
            head = out.start()
            flushed = 0
            end = head
            while True:
                item = _get(full_q, abort)
                if item is None:
                    break
                buf, used, a, b = item
                written = out.write(buf[:used])
                end += written
                # Hand what was written to the disk now, so that the dump's
                # fsync before its commit finds it (mostly) written already:
                # the disk works while the device is read, not after.
                flushed = durable.start_writeback(fd, flushed, end)
                if written == used:  # uncompressed: each record is stored as is
                    for j in range(a, b):
                        stored[j] = pieces[j][1]
                else:  # share the compressed bytes in proportion to size, exactly
                    cum = prev = 0
                    for j in range(a, b):
                        cum += pieces[j][1]
                        share = written * cum // used
                        stored[j] = share - prev
                        prev = share
                free_q.put(buf)
                if progress is not None:
                    progress.add(used)
            tail = out.finish()
            if sync:
                os.fsync(fd)
        except OSError as e:
            raise CheckpointError(f"cannot write {path}: {e.strerror}") from None
        finally:
            os.close(fd)
        if n:
            stored[0] += head
            stored[-1] += tail
        offset = 0
        records = results[index]
        for j, (addr, size) in enumerate(pieces):
            records.append(RegionRecord(addr, size, index, offset, stored[j], checksums[j]))
            offset += size

    return [(f"ckpt-dump-read-{index}", reader), (f"ckpt-dump-write-{index}", writer)]


def shard_runs(records: Iterable[RegionRecord], streams: int) -> list[list[RegionRecord]]:
    """Records grouped by shard and ordered by offset; ``CorruptCheckpoint`` if they
    do not tile each shard's stream from 0 (structure only, no file access)."""
    runs: list[list[RegionRecord]] = [[] for _ in range(streams)]
    for r in records:
        if not 0 <= r.shard < streams:
            raise CorruptCheckpoint(
                f"region 0x{r.addr:x} is in shard {r.shard} of {streams}: the checkpoint is corrupt"
            )
        if r.size < 0 or r.stored_size < 0 or r.addr < 0:
            raise CorruptCheckpoint(
                f"region 0x{r.addr:x} has a negative size or address: the checkpoint is corrupt"
            )
        runs[r.shard].append(r)
    for index, run in enumerate(runs):
        run.sort(key=lambda r: r.offset)
        expect = 0
        for r in run:
            if r.offset != expect:
                raise CorruptCheckpoint(
                    f"shard {index}: region 0x{r.addr:x} is at offset {r.offset}, "
                    f"expected {expect}: the checkpoint is corrupt"
                )
            expect += r.size
    return runs


def read_regions(
    directory: str | os.PathLike[str],
    records: Iterable[RegionRecord],
    write_fn: WriteFn,
    streams: int,
    compression: str,
    checksum_fn: ChecksumFn,
    progress: ProgressSink | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    buffers: int = DEFAULT_BUFFERS,
    buffer_factory: BufferFactory | None = None,
) -> None:
    """Read the shards in ``directory`` back to the device, in parallel, verifying every byte.

    Each record's bytes are checked with ``checksum_fn`` before
    ``write_fn(addr, view)`` sees them (``view`` is only valid during the
    call). A checksum mismatch, an undecodable, short, overlong or missing
    shard raises ``CorruptCheckpoint`` naming the shard and the address.
    """
    suffix(compression)
    directory = Path(directory)
    runs = shard_runs(records, streams)
    factory = buffer_factory or anonymous_buffer
    abort = threading.Event()
    targets: list[tuple[str, Callable[[], None]]] = []
    for index, run in enumerate(runs):
        path = shard_path(directory, index, compression)
        targets += _shard_reader(
            index, path, run, write_fn, compression, checksum_fn, progress, chunk_size, buffers,
            factory, abort,
        )  # fmt: skip
    _run(targets, abort)


def _shard_reader(
    index: int,
    path: Path,
    run: list[RegionRecord],
    write_fn: WriteFn,
    compression: str,
    checksum_fn: ChecksumFn,
    progress: ProgressSink | None,
    chunk_size: int,
    buffers: int,
    factory: BufferFactory,
    abort: threading.Event,
) -> list[tuple[str, Callable[[], None]]]:
    """The two threads of one shard's restore: file → buffers, buffers → device."""
    n = len(run)
    shard_bytes = sum(r.size for r in run)
    biggest = max((r.size for r in run), default=0)
    cap = max(1, biggest, min(chunk_size, shard_bytes))
    free_q: queue.Queue[memoryview] = queue.Queue()
    full_q: queue.Queue[tuple[memoryview, int, int, int] | None] = queue.Queue()

    def reader() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CorruptCheckpoint(
                f"shard {path} is missing: the checkpoint is incomplete"
            ) from None
        except OSError as e:
            raise CheckpointError(f"cannot open shard {path}: {e.strerror}") from None
        try:
            nbuf = min(buffers, max(1, -(-shard_bytes // cap)))
            try:
                for _ in range(nbuf):
                    free_q.put(factory(cap))
            except (OSError, MemoryError, OverflowError):
                raise CorruptCheckpoint(
                    f"shard {path}: a region of {biggest} bytes cannot be buffered: "
                    "the checkpoint is corrupt"
                ) from None
            stream = StreamReader(fd, compression)
            i = 0
            while i < n:
                if abort.is_set():
                    raise _Aborted
                buf = _get(free_q, abort)
                pos = 0
                start = i
                while i < n:
                    r = run[i]
                    if pos + r.size > cap:
                        break
                    try:
                        got = stream.readinto(buf[pos : pos + r.size])
                    except CodecError as e:
                        raise CorruptCheckpoint(
                            f"shard {path} cannot be decoded at region 0x{r.addr:x} ({e}): "
                            "the checkpoint is corrupt"
                        ) from None
                    if got < r.size:
                        raise CorruptCheckpoint(
                            f"shard {path} is truncated at region 0x{r.addr:x} "
                            f"({got} of {r.size} bytes): the checkpoint is corrupt"
                        )
                    pos += r.size
                    i += 1
                full_q.put((buf, pos, start, i))
            try:
                stream.finish()
            except CodecError as e:
                raise CorruptCheckpoint(f"shard {path}: {e}: the checkpoint is corrupt") from None
        except OSError as e:
            raise CheckpointError(f"cannot read shard {path}: {e.strerror}") from None
        finally:
            os.close(fd)
        full_q.put(None)

    def writer() -> None:
        while True:
            item = _get(full_q, abort)
            if item is None:
                return
            buf, used, a, b = item
            pos = 0
            for j in range(a, b):
                r = run[j]
                view = buf[pos : pos + r.size]
                if checksum_fn(view) != r.checksum:
                    raise CorruptCheckpoint(
                        f"shard {path}: checksum mismatch in region 0x{r.addr:x} "
                        f"({r.size} bytes): the checkpoint is corrupt"
                    )
                write_fn(r.addr, view)
                pos += r.size
            free_q.put(buf)
            if progress is not None:
                progress.add(used)

    return [(f"ckpt-restore-read-{index}", reader), (f"ckpt-restore-write-{index}", writer)]
