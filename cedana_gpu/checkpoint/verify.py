"""Checks of a checkpoint before anything is started from it, and file records at dump time.

``verify_files`` is everything that can be checked without the device:
every file the manifest lists is there with its size and checksum; every
shard is there and its size is what its regions account for; the regions
tile their shards, lie in the checkpoint's address range and do not overlap.
The shards' *contents* are checked by ``shards.read_regions``, record by
record, before each goes to the device (reading them twice would double the
restore's I/O). ``check_checkpoint`` also reads ``gpu/state.json`` against
its schema: the native controller reads it only once the restore has
started a controller, too late to refuse the checkpoint in one line.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

from cedana_gpu.checkpoint.archive import open_checkpoint, safe_name
from cedana_gpu.checkpoint.compression import codec_of
from cedana_gpu.checkpoint.manifest import MANIFEST_NAME, FileRecord, Manifest, load_manifest
from cedana_gpu.checkpoint.progress import ProgressSink
from cedana_gpu.checkpoint.shards import (
    SHARD_DIR,
    ChecksumFn,
    is_shard_file,
    shard_name,
    shard_runs,
)
from cedana_gpu.checkpoint.state_doc import STATE_NAME, load_state
from cedana_gpu.cr.pipeline import fault_point
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint


def file_checksum(path: str | os.PathLike[str], checksum_fn: ChecksumFn) -> tuple[int, int]:
    """(size, checksum) of a file, checksummed in one call over a private mapping.

    The mapping is copy-on-write (so the view is writable, as ctypes'
    ``from_buffer`` wants) and costs no copy: pages are only read.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return 0, checksum_fn(memoryview(bytearray()))
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    try:
        with memoryview(mm) as view:
            return size, checksum_fn(view)
    finally:
        # If checksum_fn still holds an export, the GC unmaps it later.
        with contextlib.suppress(BufferError):
            mm.close()


def file_records(
    directory: str | os.PathLike[str],
    checksum_fn: ChecksumFn,
    progress: ProgressSink | None = None,
) -> list[FileRecord]:
    """Records for every file below ``directory`` but the manifest and the shards.

    Call it at dump time, once everything but the manifest is written.
    """
    d = Path(directory)
    out: list[FileRecord] = []
    for root, dirs, files in os.walk(d):
        dirs.sort()
        base = Path(root)
        rel_root = base.relative_to(d).as_posix()
        for name in sorted(files):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if rel in (MANIFEST_NAME, f".{MANIFEST_NAME}.partial") or is_shard_file(rel):
                continue
            try:
                size, checksum = file_checksum(base / name, checksum_fn)
            except OSError as e:
                raise CheckpointError(f"cannot read {base / name}: {e.strerror}") from None
            out.append(FileRecord(rel, size, checksum))
            if progress is not None:
                progress.add(size)
    return out


def verify_layout(directory: str | os.PathLike[str], manifest: Manifest) -> None:
    """The cheap structural checks: shards present and of the right size, regions sane."""
    d = Path(directory)
    # The shards' sizes first: this stops at the first missing shard, so a
    # ``streams`` of 10**12 costs one stat more than the shards there are, not
    # a list of 10**12 runs (shard_runs) before the first check.
    sizes: list[int] = []
    for index in range(manifest.streams):
        rel = f"{SHARD_DIR}/{shard_name(index, manifest.compression)}"
        try:
            sizes.append(os.stat(d / rel).st_size)
        except FileNotFoundError:
            raise CorruptCheckpoint(
                f"{d}: shard {rel} is missing: the checkpoint is incomplete"
            ) from None
        except OSError as e:
            raise CheckpointError(f"cannot read {d / rel}: {e.strerror}") from None
    runs = shard_runs(manifest.regions, manifest.streams)
    uncompressed = codec_of(manifest.compression) is None
    for index, run in enumerate(runs):
        rel = f"{SHARD_DIR}/{shard_name(index, manifest.compression)}"
        size = sizes[index]
        if not run:
            continue
        if uncompressed:
            for r in run:
                if r.stored_size != r.size:
                    raise CorruptCheckpoint(
                        f"{d}: region 0x{r.addr:x} in {rel} has stored_size {r.stored_size} "
                        f"but size {r.size}: the checkpoint is corrupt"
                    )
        expect = sum(r.stored_size for r in run)
        if size != expect:
            raise CorruptCheckpoint(
                f"{d}: shard {rel} has {size} bytes, its regions account for {expect}: "
                "the checkpoint is truncated or corrupt"
            )
    lo, hi = manifest.va_base, manifest.va_base + manifest.va_size
    prev_end = -1
    prev_addr = 0
    for r in sorted(manifest.regions, key=lambda r: r.addr):
        if manifest.va_size and not (lo <= r.addr and r.addr + r.size <= hi):
            raise CorruptCheckpoint(
                f"{d}: region 0x{r.addr:x} ({r.size} bytes) lies outside the checkpoint's "
                f"address range 0x{lo:x}-0x{hi:x}: the checkpoint is corrupt"
            )
        if r.addr < prev_end:
            raise CorruptCheckpoint(
                f"{d}: regions 0x{prev_addr:x} and 0x{r.addr:x} overlap: the checkpoint is corrupt"
            )
        prev_end, prev_addr = r.addr + r.size, r.addr


def verify_files(
    directory: str | os.PathLike[str],
    manifest: Manifest,
    checksum_fn: ChecksumFn,
    progress: ProgressSink | None = None,
    *,
    algorithm: str | None = None,
) -> None:
    """Refuse (``CorruptCheckpoint``, one line) a checkpoint directory that is not whole.

    ``algorithm``: the name of ``checksum_fn``'s checksum; if given and the
    manifest's differs, ``CheckpointError``.
    """
    d = Path(directory)
    if algorithm is not None and manifest.checksum != algorithm:
        raise CheckpointError(
            f"{d}: the checkpoint's checksums are {manifest.checksum}, this cedana-gpu "
            f"computes {algorithm}: restore it with the cedana-gpu that made it"
        )
    verify_layout(d, manifest)
    for rec in manifest.files:
        name = safe_name(rec.path)
        if name is None or name == MANIFEST_NAME or is_shard_file(name):
            raise CorruptCheckpoint(
                f"{d}: the manifest lists a bad file name {rec.path!r}: the checkpoint is corrupt"
            )
        path = d / name
        try:
            size = os.stat(path).st_size
            if size != rec.size:
                raise CorruptCheckpoint(
                    f"{d}: {rec.path} has {size} bytes, the manifest says {rec.size}: "
                    "the checkpoint is truncated or corrupt"
                )
            _, checksum = file_checksum(path, checksum_fn)
            fault_point()  # a restore's check phase: its reads fail here
        except FileNotFoundError:
            raise CorruptCheckpoint(
                f"{d}: {rec.path} is missing: the checkpoint is incomplete"
            ) from None
        except OSError as e:
            raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
        if checksum != rec.checksum:
            raise CorruptCheckpoint(
                f"{d}: {rec.path} does not match its checksum: the checkpoint is corrupt"
            )
        if progress is not None:
            progress.add(size)
    _refuse_unlisted(d, {rec.path for rec in manifest.files})


CRIU_RESTORE_STATS = "criu/stats-restore"
"""What ``criu restore`` writes into its images directory unless given ``--work-dir``."""


def _refuse_unlisted(d: Path, listed: set[str]) -> None:
    """A file the manifest does not list is refused, not ignored: CRIU reads
    whatever images its directory holds (as root), and the controller every
    pinned-memory file, so an added file would be restored unchecked."""
    for root, dirs, files in os.walk(d):
        dirs.sort()
        rel_root = Path(root).relative_to(d).as_posix()
        for name in sorted(files):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if rel == MANIFEST_NAME or rel in listed or is_shard_file(rel):
                continue
            if rel == CRIU_RESTORE_STATS:
                continue  # CRIU's own output: restores before --work-dir left it here
            raise CorruptCheckpoint(
                f"{d}: {rel} is not listed in the manifest (a file was added to the "
                "checkpoint): refusing it; remove the file or dump again"
            )


def check_checkpoint(
    path: str | os.PathLike[str],
    scratch_dir: str | os.PathLike[str],
    checksum_fn: ChecksumFn,
    progress: ProgressSink | None = None,
    *,
    algorithm: str | None = None,
) -> tuple[Path, Manifest]:
    """Everything a restore checks before it starts anything.

    Opens ``path`` (directory or archive, unpacked into ``scratch_dir``),
    loads the manifest, verifies the files, then loads ``gpu/state.json``
    (when there is one: a job without the GPU has none) against its schema.
    Returns the directory to restore from and the manifest. Raises
    ``CheckpointError`` / ``CorruptCheckpoint`` with one line.
    """
    d = open_checkpoint(path, scratch_dir, progress)
    manifest = load_manifest(d)
    verify_files(d, manifest, checksum_fn, algorithm=algorithm)
    # After the files: a damaged state document is named by its checksum
    # first; this catches one that is intact but not what the schema allows.
    state = d / SHARD_DIR / STATE_NAME
    if state.exists():
        load_state(state)
    return d, manifest
