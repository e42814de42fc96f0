"""The checkpoint format: manifest, device memory shards, archives, checks.

Pure Python (plus ``lz4``): no CUDA, no CRIU. The device and the checksum
come in as callables (the native ``cgc_read_device``/``cgc_write_device``/
``cgc_checksum`` in production, plain Python in tests).

The format of the two metadata documents is owned here: one JSON Schema per
document and version in ``schemas/`` (``manifest-v1``, ``gpu-state-v1``)
says every member, its type and meaning; ``manifest`` and ``state_doc`` are
their typed readers and writers, which check the version and then the
schema (``schema``). The native controller writes and reads the GPU state
in C (``gpu/controller/state_doc.c``), held to the same schema by the tests.

A checkpoint directory::

    manifest.json        Manifest: job, device, regions, files, compression, streams
    gpu/state.json       handle tables (native cgc_export_state; GpuState here)
    gpu/modules/<n>.img  module images
    gpu/img-0 … img-N-1  device memory shards (.lz4/.gz/.zz when compressed)
    gpu/pins/<id>.bin    pinned host memory
    criu/                CRIU images and dump.log

Dump: ``write_regions`` (shards) → ``file_records`` → ``save_manifest`` →
``pack`` if the compression is not ``none``. Restore: ``check_checkpoint``
(``open_checkpoint`` + ``load_manifest`` + ``verify_files`` + ``load_state``)
→ ``read_regions``.
"""

from cedana_gpu.checkpoint.archive import CRIU_DIR, open_checkpoint, pack, partial_path, path_size
from cedana_gpu.checkpoint.compression import (
    CODECS,
    COMPRESSIONS,
    check_compression,
    codec_of,
    is_archive,
    suffix,
)
from cedana_gpu.checkpoint.manifest import (
    CHECKSUM_ALGORITHM,
    FORMAT_VERSION,
    MANIFEST_NAME,
    FileRecord,
    JobInfo,
    Manifest,
    RegionRecord,
    load_manifest,
    save_manifest,
)
from cedana_gpu.checkpoint.progress import Progress, ProgressSink
from cedana_gpu.checkpoint.shards import (
    DEFAULT_CHUNK_SIZE,
    SHARD_DIR,
    ChecksumFn,
    ReadFn,
    WriteFn,
    read_regions,
    shard_name,
    write_regions,
)
from cedana_gpu.checkpoint.state_doc import STATE_VERSION, GpuState, load_state, save_state
from cedana_gpu.checkpoint.verify import (
    check_checkpoint,
    file_checksum,
    file_records,
    verify_files,
    verify_layout,
)
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint

__all__ = [
    "CHECKSUM_ALGORITHM",
    "CODECS",
    "COMPRESSIONS",
    "CRIU_DIR",
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SHARD_DIR",
    "STATE_VERSION",
    "CheckpointError",
    "ChecksumFn",
    "CorruptCheckpoint",
    "FileRecord",
    "GpuState",
    "JobInfo",
    "Manifest",
    "Progress",
    "ProgressSink",
    "ReadFn",
    "RegionRecord",
    "WriteFn",
    "check_checkpoint",
    "check_compression",
    "codec_of",
    "file_checksum",
    "file_records",
    "is_archive",
    "load_manifest",
    "load_state",
    "open_checkpoint",
    "pack",
    "partial_path",
    "path_size",
    "read_regions",
    "save_manifest",
    "save_state",
    "shard_name",
    "suffix",
    "verify_files",
    "verify_layout",
    "write_regions",
]
