"""The checkpoint format: manifest, device memory shards, archives, checks.

Pure Python (plus ``lz4``): no CUDA, no CRIU. The device and the checksum
come in as callables (the native ``cgc_read_device``/``cgc_write_device``/
``cgc_checksum`` in production, plain Python in tests).

A checkpoint directory::

    manifest.json        Manifest: job, device, regions, files, compression, streams
    gpu/state.json       handle tables (native cgc_export_state)
    gpu/modules/<n>.img  module images
    gpu/img-0 … img-N-1  device memory shards (.lz4/.gz/.zz when compressed)
    gpu/pins/<id>.bin    pinned host memory
    criu/                CRIU images and dump.log

Dump: ``write_regions`` (shards) → ``file_records`` → ``save_manifest`` →
``pack`` if the compression is not ``none``. Restore: ``check_checkpoint``
(``open_checkpoint`` + ``load_manifest`` + ``verify_files``) →
``read_regions``.
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
    "CheckpointError",
    "ChecksumFn",
    "CorruptCheckpoint",
    "FileRecord",
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
    "open_checkpoint",
    "pack",
    "partial_path",
    "path_size",
    "read_regions",
    "save_manifest",
    "shard_name",
    "suffix",
    "verify_files",
    "verify_layout",
    "write_regions",
]
