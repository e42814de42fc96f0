"""CRIU's page images as device-memory-style shards (driver engine checkpoints).

Under the driver engine the job's GPU memory is staged in its host memory by
the driver's checkpoint, so CRIU's page images (``criu/pages-<n>.img``) are
the big files of the checkpoint. They go through the same shard writer and
reader as the intercept engine's device memory (``shards.write_regions`` /
``read_regions``): compressed with the checkpoint's codec, split into
``gpu/img-0`` … ``img-<N-1>`` written and read in parallel, every record's
checksum verified before its bytes are used.

The page files are laid end to end in one address space: file ``i`` covers
``[addr_i, addr_i + size_i)``; the manifest's ``criu_pages`` member lists
``{path, addr, size}`` for each, its ``regions`` the records of the pieces,
and ``va_base``/``va_size`` that space. ``pack_pages`` moves the page files
into shards (removing them from ``criu/``); ``unpack_pages`` writes them back
into an images directory, for ``criu restore``.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cedana_gpu.checkpoint.compression import codec_of
from cedana_gpu.checkpoint.manifest import RegionRecord
from cedana_gpu.checkpoint.progress import ProgressSink
from cedana_gpu.checkpoint.shards import (
    SHARD_DIR,
    ChecksumFn,
    read_regions,
    shard_name,
    write_regions,
)
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint

CRIU_DIR = "criu"
MEMBER = "criu_pages"
"""The manifest member listing the page files held in the shards."""

_PAGES_RE = re.compile(r"pages-\d+\.img")


@dataclass(frozen=True)
class PageFile:
    path: str
    """Relative to the checkpoint directory (``criu/pages-1.img``)."""
    addr: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "addr": self.addr, "size": self.size}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PageFile:
        return cls(path=str(d["path"]), addr=int(d["addr"]), size=int(d["size"]))


def fits_in_memory(nbytes: int) -> bool:
    """Whether ``nbytes`` of scratch images fit in /dev/shm without crowding the
    machine: at most a quarter of the memory available and of /dev/shm's room.
    (Page images written to memory and read back cost no file system work.)"""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        available = int(fields["MemAvailable"].split()[0]) * 1024
        shm = os.statvfs("/dev/shm")
    except (OSError, KeyError, ValueError):
        return False
    return nbytes <= available // 4 and nbytes <= shm.f_bavail * shm.f_frsize // 4


def page_files(criu_dir: Path) -> list[Path]:
    """CRIU's page images in ``criu_dir``, in a stable order."""
    return sorted(p for p in criu_dir.iterdir() if _PAGES_RE.fullmatch(p.name) and p.is_file())


def layout(directory: Path, images: Path | None = None) -> list[PageFile]:
    """The page files of ``directory/criu`` (or of CRIU's ``images`` directory,
    wherever it dumped) laid end to end, named as they go in the checkpoint."""
    out: list[PageFile] = []
    addr = 0
    for p in page_files(images or directory / CRIU_DIR):
        size = p.stat().st_size
        out.append(PageFile(f"{CRIU_DIR}/{p.name}", addr, size))
        addr += size
    return out


class _Files:
    """Open page files by address: ``find(addr)`` -> (fd, offset in the file)."""

    def __init__(self, directory: Path, files: Sequence[PageFile], flags: int) -> None:
        self.starts = [f.addr for f in files]
        self.files = list(files)
        self.fds: list[int] = []
        try:
            for f in files:
                name = Path(f.path).name
                self.fds.append(os.open(directory / name, flags | os.O_CLOEXEC, 0o600))
        except BaseException:
            self.close()
            raise

    def find(self, addr: int, size: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0 or addr + size > self.files[i].addr + self.files[i].size:
            raise CorruptCheckpoint(
                f"page record 0x{addr:x} ({size} bytes) lies outside the page files: "
                "the checkpoint is corrupt"
            )
        return self.fds[i], addr - self.files[i].addr

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def pack_pages(
    directory: Path,
    compression: str,
    streams: int,
    checksum_fn: ChecksumFn,
    progress: ProgressSink | None = None,
    images: Path | None = None,
) -> tuple[list[PageFile], list[RegionRecord]]:
    """Move the page images of CRIU's ``images`` directory (default:
    ``directory/criu``) into ``directory/gpu/img-*`` shards, and CRIU's other
    images, when ``images`` is elsewhere, into ``directory/criu``.

    Returns the layout (the manifest's ``criu_pages``) and the records (its
    ``regions``). The page files are removed once the shards are written."""
    source = images or directory / CRIU_DIR
    files = layout(directory, source)
    try:
        handles = _Files(source, files, os.O_RDONLY)
    except OSError as e:
        raise CheckpointError(f"cannot open CRIU's page images: {e.strerror}") from None
    try:

        def read(addr: int, size: int, dst: memoryview) -> int:
            fd, offset = handles.find(addr, size)
            got = os.preadv(fd, [dst], offset)
            if got != size:
                raise CheckpointError(f"a CRIU page image ended early at 0x{addr:x}")
            return checksum_fn(dst)

        records = write_regions(
            directory / SHARD_DIR,
            [(f.addr, f.size) for f in files],
            read,
            streams,
            compression,
            progress,
        )
    finally:
        handles.close()
    try:
        for f in files:
            (source / Path(f.path).name).unlink()
        if source != directory / CRIU_DIR:
            for other in sorted(source.iterdir()):
                if other.is_file():
                    shutil.copyfile(other, directory / CRIU_DIR / other.name)
    except OSError as e:
        raise CheckpointError(f"cannot move CRIU's images: {e.strerror}") from None
    return files, records


def _verified(addr: int, src: memoryview) -> None:
    """The restore's "device" when the shard is used as it is: the bytes were checked."""


def _is_the_page_file(
    files: Sequence[PageFile], records: Sequence[RegionRecord], streams: int, compression: str
) -> bool:
    """Whether the checkpoint's only shard is, uncompressed, exactly its only page file."""
    if streams != 1 or len(files) != 1 or codec_of(compression) is not None:
        return False
    f = files[0]
    end = 0
    for r in sorted(records, key=lambda r: r.offset):
        if r.shard != 0 or r.offset != end or r.addr != f.addr + r.offset:
            return False
        end += r.size
    return end == f.size


def unpack_pages(
    directory: Path,
    files: Sequence[PageFile],
    records: Sequence[RegionRecord],
    streams: int,
    compression: str,
    images: Path,
    checksum_fn: ChecksumFn,
    progress: ProgressSink | None = None,
) -> None:
    """Write the page images held in ``directory``'s shards into ``images`` (CRIU's
    images directory of a restore), each record verified before it is written.
    An uncompressed single shard that is exactly the one page file is verified
    and linked instead of copied."""
    for f in files:
        name = Path(f.path)
        if name.parent.as_posix() != CRIU_DIR or not _PAGES_RE.fullmatch(name.name):
            raise CorruptCheckpoint(
                f"the manifest lists a bad page image {f.path!r}: the checkpoint is corrupt"
            )
    targets = [PageFile(Path(f.path).name, f.addr, f.size) for f in files]
    if _is_the_page_file(targets, records, streams, compression):
        # The one shard holds the one page file byte for byte: verified, it is
        # that page file (CRIU only reads it), and nothing is copied.
        read_regions(
            directory / SHARD_DIR, records, _verified, streams, compression, checksum_fn, progress
        )
        shard = (directory / SHARD_DIR / shard_name(0, compression)).absolute()
        try:
            os.symlink(shard, images / targets[0].path)
        except OSError as e:
            raise CheckpointError(f"cannot link the page image in {images}: {e.strerror}") from None
        return
    try:
        handles = _Files(images, targets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        for fd, f in zip(handles.fds, targets, strict=True):
            os.ftruncate(fd, f.size)
    except OSError as e:
        raise CheckpointError(f"cannot create the page images in {images}: {e.strerror}") from None
    try:

        def write(addr: int, src: memoryview) -> None:
            fd, offset = handles.find(addr, len(src))
            if os.pwritev(fd, [src], offset) != len(src):
                raise CheckpointError(f"short write of a page image at 0x{addr:x}")

        read_regions(
            directory / SHARD_DIR, records, write, streams, compression, checksum_fn, progress
        )
    finally:
        handles.close()
