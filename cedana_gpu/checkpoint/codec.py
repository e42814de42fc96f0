"""Streaming codecs for checkpoint files (the names live in ``compression``).

The codecs of ``--compression`` ``lz4`` / ``gzip`` / ``zlib`` write the LZ4
frame format, gzip and raw zlib; ``lz4 -d``, ``gzip -d``,
``zlib-flate -uncompress`` read them. The names and suffixes are re-exported
from ``compression`` for the callers that import them from here.

Levels are the fastest ones (LZ4's default, zlib level 1): a dump is on the
critical path of a preemption, where the node may be gone in seconds, so
seconds saved matter more than bytes; the higher levels cost several times
the CPU for a ratio a few percent better on tensor data.
"""

from __future__ import annotations

import os
import zlib
from typing import Protocol, TypeAlias

import lz4.frame

from cedana_gpu.checkpoint.compression import (
    CODECS,
    COMPRESSIONS,
    SUFFIXES,
    check_compression,
    codec_of,
    is_archive,
    suffix,
)
from cedana_gpu.errors import CheckpointError

__all__ = [
    "CODECS",
    "COMPRESSIONS",
    "SUFFIXES",
    "Buffer",
    "CodecError",
    "Compressor",
    "Decompressor",
    "StreamReader",
    "StreamWriter",
    "check_compression",
    "codec_of",
    "compressor",
    "decompressor",
    "is_archive",
    "suffix",
    "write_all",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

ZLIB_LEVEL = 1  # fastest deflate level: see the module docstring
LZ4_LEVEL = 0  # LZ4's default (fast) mode, not LZ4-HC
LZ4_BLOCK_SIZE = lz4.frame.BLOCKSIZE_MAX4MB  # as the lz4 tool; fewer block headers


class CodecError(CheckpointError):
    """Compressed data cannot be decoded."""


class Compressor(Protocol):
    """Streaming compressor: ``begin() + compress(a) + compress(b) + ... + flush()``."""

    def begin(self) -> bytes: ...
    def compress(self, data: Buffer) -> bytes: ...
    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    """Streaming decompressor, the ``bz2``/``lzma`` way.

    ``decompress(data, max_length)`` returns at most ``max_length`` bytes;
    unconsumed input is kept and used by the next call (pass ``b""`` to get
    more output from it while ``needs_input`` is false). ``eof`` becomes true
    at the end of the compressed stream; bytes after it are ``unused_data``.
    Damaged input raises ``CodecError``.
    """

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: Buffer, max_length: int) -> bytes: ...


class _Lz4Compressor:
    def __init__(self) -> None:
        # No content checksum: every region and file has its own checksum.
        self._c = lz4.frame.LZ4FrameCompressor(
            block_size=LZ4_BLOCK_SIZE,
            compression_level=LZ4_LEVEL,
            content_checksum=False,
            auto_flush=False,
        )

    def begin(self) -> bytes:
        return self._c.begin()

    def compress(self, data: Buffer) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush()


class _ZlibCompressor:
    def __init__(self, wbits: int) -> None:
        self._c = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, wbits)

    def begin(self) -> bytes:
        return b""  # zlib emits its header with the first output

    def compress(self, data: Buffer) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


class _Lz4Decompressor:
    def __init__(self) -> None:
        self._d = lz4.frame.LZ4FrameDecompressor()
        self._eof = False
        self._unused = b""

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def needs_input(self) -> bool:
        return not self._eof and self._d.needs_input

    @property
    def unused_data(self) -> bytes:
        return self._unused

    def decompress(self, data: Buffer, max_length: int) -> bytes:
        if self._eof:
            self._unused += bytes(data)
            return b""
        try:
            out = self._d.decompress(data, max_length)
        except RuntimeError as e:  # python-lz4 reports LZ4F errors as RuntimeError
            raise CodecError(f"lz4: {e}") from None
        if self._d.eof:
            # The decompressor resets itself at the end of a frame; we read one frame.
            self._eof = True
            self._unused = bytes(self._d.unused_data or b"")
        return out


class _ZlibDecompressor:
    def __init__(self, wbits: int, name: str) -> None:
        self._d = zlib.decompressobj(wbits)
        self._name = name

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return not self._d.eof and not self._d.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: Buffer, max_length: int) -> bytes:
        if self._d.eof:
            raise CodecError(f"{self._name}: data after the end of the stream")
        tail = self._d.unconsumed_tail
        if tail:
            data = tail + bytes(data) if len(data) else tail
        try:
            return self._d.decompress(data, max_length)
        except zlib.error as e:
            raise CodecError(f"{self._name}: {e}") from None


def compressor(compression: str) -> Compressor | None:
    """A new streaming compressor for ``compression``; None for none/tar."""
    codec = codec_of(compression)
    if codec == "lz4":
        return _Lz4Compressor()
    if codec == "gzip":
        return _ZlibCompressor(31)  # gzip header and trailer
    if codec == "zlib":
        return _ZlibCompressor(15)
    return None


def decompressor(compression: str) -> Decompressor | None:
    """A new streaming decompressor for ``compression``; None for none/tar."""
    codec = codec_of(compression)
    if codec == "lz4":
        return _Lz4Decompressor()
    if codec == "gzip":
        return _ZlibDecompressor(31, "gzip")
    if codec == "zlib":
        return _ZlibDecompressor(15, "zlib")
    return None


READ_SIZE = 1 << 20
"""Compressed bytes read at a time by ``StreamReader``."""


def write_all(fd: int, data: Buffer) -> int:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less); return its length."""
    view = memoryview(data).cast("B")
    n = len(view)
    done = 0
    while done < n:
        done += os.write(fd, view[done:])
    return n


class StreamWriter:
    """Writes a stream through a codec (or as is) to a file descriptor.

    Every method returns how many bytes it added to the file, so callers can
    account exactly for the file's size.
    """

    def __init__(self, fd: int, compression: str) -> None:
        self._fd = fd
        self._c = compressor(compression)

    def start(self) -> int:
        return write_all(self._fd, self._c.begin()) if self._c else 0

    def write(self, data: Buffer) -> int:
        if self._c is None:
            return write_all(self._fd, data)
        out = self._c.compress(data)
        return write_all(self._fd, out) if out else 0

    def finish(self) -> int:
        return write_all(self._fd, self._c.flush()) if self._c else 0


class StreamReader:
    """Reads a stream written by ``StreamWriter`` from ``fd``'s bytes [offset, offset+length).

    ``length`` None: to the end of the file. Positional reads (``preadv``):
    the descriptor's file position is not used, so one descriptor can serve
    several readers.
    """

    def __init__(self, fd: int, compression: str, offset: int = 0, length: int | None = None):
        self._fd = fd
        self._pos = offset
        self._end = None if length is None else offset + length
        self._d = decompressor(compression)
        self._inbuf = bytearray(READ_SIZE) if self._d else bytearray()
        self._pending = memoryview(b"")  # decompressed, not yet returned
        self._input_done = False

    def _raw_readinto(self, view: memoryview) -> int:
        """Read raw bytes into ``view`` (short only at the end of the range or file)."""
        want = len(view)
        if self._end is not None:
            want = min(want, self._end - self._pos)
        got = 0
        while got < want:
            n = os.preadv(self._fd, [view[got:want]], self._pos)
            if n == 0:
                break
            got += n
            self._pos += n
        return got

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` with the stream's next bytes; fewer only where the stream ends."""
        if self._d is None:
            return self._raw_readinto(view)
        d = self._d
        want = len(view)
        got = 0
        idle = 0
        while got < want:
            if self._pending:
                n = min(len(self._pending), want - got)
                view[got : got + n] = self._pending[:n]
                self._pending = self._pending[n:]
                got += n
                continue
            if d.eof:
                break
            if d.needs_input:
                if self._input_done:
                    break
                n = self._raw_readinto(memoryview(self._inbuf))
                if n == 0:
                    self._input_done = True
                    break
                out = d.decompress(memoryview(self._inbuf)[:n], want - got)
            else:
                out = d.decompress(b"", want - got)
            idle = idle + 1 if not out else 0
            if idle > 2 and not d.needs_input:
                raise CodecError("the decompressor makes no progress")
            if len(out) <= want - got:
                view[got : got + len(out)] = out
                got += len(out)
            else:  # never with a working max_length; kept for safety
                self._pending = memoryview(out)
        return got

    def finish(self) -> None:
        """Check that the stream ends here, complete, with nothing after it.

        Raises ``CodecError``: "truncated" if the codec's end is missing,
        "trailing data" if there is more.
        """
        probe = bytearray(1)
        if self._d is None:
            if self._raw_readinto(memoryview(probe)):
                raise CodecError("trailing data after the last region")
            return
        if self._pending or self.readinto(memoryview(probe)):
            raise CodecError("trailing data after the last region")
        if not self._d.eof:
            raise CodecError("truncated: the compressed stream has no end")
        if self._d.unused_data or self._raw_readinto(memoryview(probe)):
            raise CodecError("trailing data after the compressed stream")
