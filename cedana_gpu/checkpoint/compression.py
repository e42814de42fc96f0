"""The names of ``--compression`` and what each means for a checkpoint's files.

Its own module, apart from the codecs, because both the manifest (which
checks the name it reads) and the codecs (which compress under it) need the
names: with them in either of the two, each imported the other. Nothing here
imports ``lz4``, so reading a manifest does not load the codecs.

- ``none``: the checkpoint is a directory, nothing compressed;
- ``tar``: one ``<name>.tar`` holding that directory, nothing compressed;
- ``lz4`` / ``gzip`` / ``zlib``: one ``<name>.tar`` whose device memory
  shards and CRIU image files are compressed with that codec.
"""

from __future__ import annotations

from cedana_gpu.errors import CheckpointError

COMPRESSIONS = ("none", "tar", "lz4", "gzip", "zlib")
"""Values of ``--compression``."""

CODECS = ("lz4", "gzip", "zlib")
"""Compressions that compress bytes (``none`` and ``tar`` do not)."""

SUFFIXES = {"lz4": ".lz4", "gzip": ".gz", "zlib": ".zz"}


def check_compression(name: str) -> str:
    """Return ``name`` if it is a known compression, else raise ``CheckpointError``."""
    if name not in COMPRESSIONS:
        raise CheckpointError(f"unknown compression {name!r}: use one of {', '.join(COMPRESSIONS)}")
    return name


def codec_of(compression: str) -> str | None:
    """The codec that compresses bytes under ``compression``, or None for none/tar."""
    check_compression(compression)
    return compression if compression in CODECS else None


def is_archive(compression: str) -> bool:
    """Whether a checkpoint with this compression is one ``.tar`` (all but ``none``)."""
    return check_compression(compression) != "none"


def suffix(compression: str) -> str:
    """File name suffix of a file compressed under ``compression`` (``""`` if not)."""
    codec = codec_of(compression)
    return SUFFIXES[codec] if codec else ""
