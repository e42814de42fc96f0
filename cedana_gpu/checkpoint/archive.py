"""One-file checkpoints: ``<name>.tar`` holding the checkpoint directory.

``pack`` writes the archive under a temporary name (``.<name>.tar.partial``)
and renames it when complete. ``manifest.json`` is its first member. With a
codec (``lz4``/``gzip``/``zlib``), the files under ``criu/`` are compressed
on the way in and get the codec's suffix (``criu/pages-1.img.lz4``); the
shards are stored as they are (``write_regions`` already compressed them).
Members are plain GNU tar entries, so ``tar x`` plus ``lz4 -d``/``gzip -d``
unpack a checkpoint by hand.

``open_checkpoint`` takes a path, decides by what it *is* (a directory, or a
file that starts with a tar header), and returns a directory to restore
from: the directory itself, or the archive unpacked into a scratch
directory, CRIU images decompressed. It refuses an archive that is
truncated, has a damaged header, or holds anything but files and
directories (``CorruptCheckpoint``). The manifest describes the unpacked
tree, so ``verify.verify_files`` then checks every file's size and checksum.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from cedana_gpu.checkpoint.codec import CodecError, StreamReader, StreamWriter, write_all
from cedana_gpu.checkpoint.compression import codec_of, suffix
from cedana_gpu.checkpoint.manifest import FORMAT_VERSION, MANIFEST_NAME
from cedana_gpu.checkpoint.progress import ProgressSink
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint

CRIU_DIR = "criu"
"""CRIU's images in a checkpoint directory (compressed in archives with a codec)."""

BLOCK = tarfile.BLOCKSIZE
COPY_SIZE = 8 << 20
_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


def partial_path(final: str | os.PathLike[str]) -> Path:
    """Where a checkpoint (directory or archive) is written before its final rename."""
    p = Path(final)
    return p.parent / f".{p.name}.partial"


def path_size(path: str | os.PathLike[str]) -> int:
    """Bytes of a checkpoint: the archive's size, or the sum of the directory's files."""
    p = Path(path)
    if not p.is_dir():
        return p.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(p):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _entries(src: Path) -> list[tuple[str, Path, os.stat_result]]:
    """The tree's entries, manifest first, then sorted (directories before their contents)."""
    out: list[tuple[str, Path, os.stat_result]] = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        base = Path(root)
        rel_root = base.relative_to(src).as_posix()
        for name in sorted(dirs) + sorted(files):
            path = base / name
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            st = os.lstat(path)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise CheckpointError(
                    f"{path} is not a regular file or directory: it cannot go in a checkpoint"
                )
            out.append((rel, path, st))
    # os.walk lists a directory's subdirectories before its files; keep files
    # with their directory order but put the manifest first.
    out.sort(key=lambda e: (e[0] != MANIFEST_NAME,))
    return out


def _header(name: str, size: int, st: os.stat_result, directory: bool = False) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    ti.size = 0 if directory else size
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.mtime = int(st.st_mtime)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    return ti.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def _pad(fd: int, size: int) -> None:
    rest = -size % BLOCK
    if rest:
        write_all(fd, bytes(rest))


def _copy(src: int, dst: int, count: int, src_offset: int | None = None) -> int:
    """Copy ``count`` bytes in the kernel where it can; return how many were copied."""
    done = 0
    try:
        while done < count:
            off = None if src_offset is None else src_offset + done
            n = os.copy_file_range(src, dst, count - done, off)
            if n == 0:
                return done
            done += n
        return done
    except OSError as e:
        if e.errno not in _FALLBACK_ERRNOS:
            raise
    buf = bytearray(min(COPY_SIZE, max(count - done, 1)))
    view = memoryview(buf)
    while done < count:
        want = min(len(buf), count - done)
        if src_offset is None:
            n = os.readv(src, [view[:want]])
        else:
            n = os.preadv(src, [view[:want]], src_offset + done)
        if n == 0:
            break
        write_all(dst, view[:n])
        done += n
    return done


def pack(
    directory: str | os.PathLike[str],
    out_tar: str | os.PathLike[str],
    compression: str,
    progress: ProgressSink | None = None,
    *,
    sync: bool = False,
    rename: bool = True,
) -> Path:
    """Write ``directory`` as the archive ``out_tar`` (atomically); return ``out_tar``.

    ``rename=False``: write ``out_tar`` itself, for a caller that names it
    temporarily and commits it with its own rename (a dump).

    ``compression`` is ``tar`` (nothing compressed) or a codec: then the files
    under ``criu/`` are compressed with it. Write the manifest into the
    directory before packing: it goes in first. File errors raise
    ``CheckpointError``; no partial archive is left behind.
    """
    codec = codec_of(compression)
    if compression == "none":
        raise ValueError("compression 'none' keeps the checkpoint a directory: nothing to pack")
    src = Path(directory)
    out = Path(out_tar)
    tmp = partial_path(out) if rename else out
    ext = suffix(compression)
    try:
        entries = _entries(src)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise CheckpointError(f"cannot pack {src} into {out}: {e.strerror}") from None
    done = False
    try:
        buf = bytearray(COPY_SIZE) if codec else bytearray()
        for rel, path, st in entries:
            if stat.S_ISDIR(st.st_mode):
                write_all(fd, _header(rel, 0, st, directory=True))
                continue
            with open(path, "rb", buffering=0) as f:
                if codec and rel.startswith(CRIU_DIR + "/"):
                    _add_compressed(fd, f.fileno(), rel + ext, st, compression, buf, progress)
                    continue
                write_all(fd, _header(rel, st.st_size, st))
                n = _copy(f.fileno(), fd, st.st_size)
                if n != st.st_size:
                    raise CheckpointError(f"{path} changed while it was packed: dump again")
                _pad(fd, n)
                if progress is not None:
                    progress.add(n)
        write_all(fd, bytes(2 * BLOCK))  # end of archive
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        if rename:
            os.replace(tmp, out)
        done = True
    except OSError as e:
        raise CheckpointError(f"cannot write {out}: {e.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            tmp.unlink(missing_ok=True)
    return out


def _add_compressed(
    fd: int,
    src: int,
    name: str,
    st: os.stat_result,
    compression: str,
    buf: bytearray,
    progress: ProgressSink | None,
) -> None:
    """Append a member whose data is ``src`` compressed, writing its header last.

    GNU headers have the same length whatever the size (large sizes are
    base-256 in the same field), so a placeholder is written first and
    overwritten once the compressed size is known: one pass, no temporary.
    """
    start = os.lseek(fd, 0, os.SEEK_CUR)
    placeholder = _header(name, 0, st)
    write_all(fd, placeholder)
    out = StreamWriter(fd, compression)
    size = out.start()
    view = memoryview(buf)
    read = 0
    while True:
        n = os.readv(src, [view])
        if n == 0:
            break
        read += n
        size += out.write(view[:n])
        if progress is not None:
            progress.add(n)
    size += out.finish()
    if read != st.st_size:
        raise CheckpointError(f"{name} changed while it was packed: dump again")
    header = _header(name, size, st)
    if len(header) != len(placeholder):  # pragma: no cover - GNU format guarantees it
        raise CheckpointError(f"cannot write the archive header of {name}")
    os.pwrite(fd, header, start)
    _pad(fd, size)


def _is_tar_header(block: bytes) -> bool:
    if len(block) < BLOCK or block[257:262] != b"ustar":
        return False
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored in _header_checksums(block[:BLOCK])


def _header_checksums(block: bytes) -> tuple[int, int]:
    """A tar header's checksum, unsigned and signed bytes (old tars used either).

    Computed here rather than with ``tarfile``'s private helper: the sum of
    the header's bytes with the checksum field itself counted as spaces.
    """
    blanked = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blanked)
    signed = sum(b - 256 if b > 127 else b for b in blanked)
    return unsigned, signed


def safe_name(name: str) -> str | None:
    """``name`` normalised if it is a relative path inside the checkpoint that can
    name a file, else None (absolute, ``..``, empty, a NUL or a character the
    file system's encoding has no bytes for)."""
    p = PurePosixPath(name)
    if p.is_absolute() or not p.parts or any(part in ("..", ".", "") for part in p.parts):
        return None
    if "\0" in name:
        return None
    try:
        os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate other than surrogateescape's
        return None
    return p.as_posix()


def open_checkpoint(
    path: str | os.PathLike[str],
    scratch_dir: str | os.PathLike[str],
    progress: ProgressSink | None = None,
) -> Path:
    """A directory to restore from: ``path`` itself, or the archive unpacked into ``scratch_dir``.

    Decides by content: a directory, or a file that starts with a tar header.
    Refuses (one line) a missing path, a file that is not an archive
    (``CheckpointError``), a truncated or damaged archive (``CorruptCheckpoint``),
    a newer checkpoint format. On failure nothing is left in ``scratch_dir``.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise CheckpointError(f"{p}: no such checkpoint") from None
    except OSError as e:
        raise CheckpointError(f"{p}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return p
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{p} is neither a checkpoint directory nor a checkpoint archive")
    try:
        with open(p, "rb") as f:
            head = f.read(BLOCK)
    except OSError as e:
        raise CheckpointError(f"cannot read {p}: {e.strerror}") from None
    if not _is_tar_header(head):
        if len(head) < BLOCK and head[:1]:
            raise CorruptCheckpoint(f"{p}: a truncated archive or not a checkpoint at all")
        raise CheckpointError(f"{p} is neither a checkpoint directory nor a checkpoint archive")
    scratch = Path(scratch_dir)
    created = not scratch.exists()
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        _unpack(p, st.st_size, scratch, progress)
    except BaseException:
        if created:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            for child in scratch.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    return scratch


def _truncated(p: Path, what: str = "") -> CorruptCheckpoint:
    detail = f" ({what})" if what else ""
    return CorruptCheckpoint(
        f"{p}: the archive is truncated or damaged{detail}: it cannot be restored"
    )


def _unpack(p: Path, file_size: int, scratch: Path, progress: ProgressSink | None) -> None:
    try:
        tf = tarfile.open(p, "r:")  # noqa: SIM115 - closed by the `with tf` below
    except (tarfile.TarError, EOFError) as e:
        raise _truncated(p, str(e)) from None
    except OSError as e:
        raise CheckpointError(f"cannot read {p}: {e.strerror}") from None
    with tf:
        members: list[tuple[str, tarfile.TarInfo]] = []
        try:
            while (m := tf.next()) is not None:
                name = safe_name(m.name)
                if name is None or not (m.isreg() or m.isdir()):
                    raise CorruptCheckpoint(
                        f"{p}: unexpected archive member {m.name!r}: not a cedana-gpu checkpoint"
                    )
                if m.isreg() and m.offset_data + m.size > file_size:
                    raise _truncated(p, f"{name} is cut short")
                members.append((name, m))
        except (tarfile.TarError, EOFError) as e:
            raise _truncated(p, str(e)) from None
        # The archive must end with its two zero blocks right after the last member:
        # otherwise it was cut at a member boundary, or a header is damaged.
        end = tf.offset
        with open(p, "rb") as f:
            f.seek(end)
            tail = f.read(2 * BLOCK)
        if len(tail) < 2 * BLOCK or any(tail):
            raise _truncated(p)
        by_name = dict(members)
        if MANIFEST_NAME not in by_name:
            raise CorruptCheckpoint(f"{p}: the archive has no {MANIFEST_NAME}: not a checkpoint")
        compression = _archive_compression(p, tf, by_name[MANIFEST_NAME])
        codec = codec_of(compression)
        targets = _destinations(p, members, compression)
        try:
            _extract(
                p, scratch, targets, compression, progress, bytearray(COPY_SIZE if codec else 0)
            )
        except OSError as e:
            raise CheckpointError(f"cannot unpack {p} into {scratch}: {e.strerror}") from None


def _destinations(
    p: Path, members: list[tuple[str, tarfile.TarInfo]], compression: str
) -> list[tuple[str, tarfile.TarInfo, bool]]:
    """(where in the scratch directory, member, decompress?) for every member.

    ``CorruptCheckpoint`` if a name is both a file's and a directory's (another
    member's, or a parent of one): tar's header checksum is a plain sum, so a
    damaged header can rename or retype a member and still pass for one, and
    unpacking it would fail half-way with an OSError.
    """
    codec = codec_of(compression)
    ext = suffix(compression)
    out: list[tuple[str, tarfile.TarInfo, bool]] = []
    files: set[str] = set()
    dirs: set[str] = set()
    for name, m in members:
        compressed = bool(codec) and name.startswith(CRIU_DIR + "/") and name.endswith(ext)
        dest = safe_name(name[: -len(ext)]) if compressed else name
        if dest is None:
            raise CorruptCheckpoint(
                f"{p}: unexpected archive member {m.name!r}: not a cedana-gpu checkpoint"
            )
        (dirs if m.isdir() else files).add(dest)
        parts = dest.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        out.append((dest, m, compressed))
    clash = files & dirs
    if clash:
        raise CorruptCheckpoint(
            f"{p}: archive member {min(clash)!r} is both a file and a directory: "
            "the checkpoint is corrupt"
        )
    return out


def _extract(
    p: Path,
    scratch: Path,
    targets: list[tuple[str, tarfile.TarInfo, bool]],
    compression: str,
    progress: ProgressSink | None,
    buf: bytearray,
) -> None:
    with open(p, "rb", buffering=0) as f:
        fd = f.fileno()
        for dest_name, m, compressed in targets:
            dest = scratch / dest_name
            if m.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                if compressed:
                    n = _decompress_member(p, fd, m, compression, out, buf)
                else:
                    n = _copy(fd, out, m.size, m.offset_data)
                    if n != m.size:
                        raise _truncated(p, f"{dest_name} is cut short")
            finally:
                os.close(out)
            if progress is not None:
                progress.add(n)


def _archive_compression(p: Path, tf: tarfile.TarFile, m: tarfile.TarInfo) -> str:
    """The compression the manifest in the archive names (a light look; the caller loads it)."""
    f = tf.extractfile(m)
    try:
        d = json.loads(f.read() if f else b"")
    except (ValueError, RecursionError, tarfile.TarError, EOFError):
        # ValueError: not JSON (JSONDecodeError), not text (UnicodeDecodeError), or
        # an integer of more digits than json reads; RecursionError: deep nesting.
        raise CorruptCheckpoint(
            f"{p}: the manifest in the archive is garbled: the checkpoint is corrupt"
        ) from None
    if not isinstance(d, dict):
        raise CorruptCheckpoint(
            f"{p}: the manifest in the archive is garbled: the checkpoint is corrupt"
        )
    version = d.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {version} is newer than this cedana-gpu supports "
            f"({FORMAT_VERSION}): upgrade cedana-gpu"
        )
    compression = d.get("compression")
    if not isinstance(compression, str):
        raise CorruptCheckpoint(
            f"{p}: the manifest in the archive has no 'compression': the checkpoint is corrupt"
        )
    codec_of(compression)  # unknown → CheckpointError
    return compression


def _decompress_member(
    p: Path, fd: int, m: tarfile.TarInfo, compression: str, out: int, buf: bytearray
) -> int:
    reader = StreamReader(fd, compression, m.offset_data, m.size)
    view = memoryview(buf)
    total = 0
    try:
        while n := reader.readinto(view):
            write_all(out, view[:n])
            total += n
        reader.finish()
    except CodecError as e:
        raise CorruptCheckpoint(
            f"{p}: {m.name} cannot be decompressed ({e}): the checkpoint is corrupt"
        ) from None
    return total
