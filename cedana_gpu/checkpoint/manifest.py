"""The checkpoint manifest: ``<ckpt>/manifest.json``.

The manifest describes the checkpoint's logical directory tree: the job, the
device, where every device memory region's bytes are (shard, offset in the
shard's uncompressed stream) with their checksums, and the size and checksum
of every other file. An archive (``<name>.tar``) is only a transport encoding
of that tree: the manifest always describes the unpacked, decompressed files.

What every member means and may hold is ``schemas/manifest-v1.schema.json``;
``Manifest.from_json`` checks ``format_version`` first (a *newer* one is
refused: upgrade), then the document against its version's schema, so the
dataclasses are built from what is known to be well-formed. Unknown keys (at
the top level and in ``job``) are kept in ``extra`` and written back, so a
later format-1 writer can add fields an older reader carries along.

``manifest_checksum`` is the manifest's checksum over itself (``manifest_digest``):
every other checksum is *in* the manifest, so without it an edit of the
manifest (two regions' addresses swapped, a file record changed along with
its file) would restore a different job than the one dumped. ``save_manifest``
writes it and ``load_manifest`` refuses a manifest that does not match it; a
manifest without it (older checkpoints) is read as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cedana_gpu.checkpoint.compression import check_compression
from cedana_gpu.checkpoint.schema import load_schema, validate, validate_against
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint

# The error classes live in cedana_gpu.errors (one hierarchy for the whole
# package); they are re-exported here, where callers have imported them from.
__all__ = [
    "CHECKSUM_ALGORITHM",
    "FORMAT_VERSION",
    "MANIFEST_CHECKSUM",
    "MANIFEST_NAME",
    "CheckpointError",
    "CorruptCheckpoint",
    "FileRecord",
    "JobInfo",
    "Manifest",
    "RegionRecord",
    "load_manifest",
    "manifest_digest",
    "manifest_path",
    "save_manifest",
]

FORMAT_VERSION = 1
"""Checkpoint format written by this cedana-gpu; older ones are read too."""

MANIFEST_NAME = "manifest.json"

SCHEMA_NAME = "manifest"
"""Its schema: ``schemas/manifest-v<format_version>.schema.json``."""

MANIFEST_CHECKSUM = "manifest_checksum"
"""The top-level member holding ``manifest_digest`` of the rest of the manifest."""

CHECKSUM_ALGORITHM = "crc32c"
"""What the manifest's checksums are unless it says otherwise (native ``cgc_checksum``)."""

SIGNATURE_MEMBER = "signature"
"""An optional signature (``checkpoint.signing``) over ``content_digest``."""


def canonical_json(doc: Mapping[str, Any], without: tuple[str, ...] = ()) -> bytes:
    """The one byte form a manifest's checksum and signature are computed over.

    Over the parsed document, not the file's bytes, so that any writer's
    formatting (one record per line here) gives the same checksum."""
    body = {k: v for k, v in doc.items() if k not in without}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Lone surrogates (a non-UTF-8 argument in job.cmd, as Python decodes argv)
    # are encoded as they are: strict UTF-8 cannot, and a job's command line
    # must not make its dump fail.
    return text.encode("utf-8", "surrogatepass")


def manifest_digest(doc: Mapping[str, Any]) -> str:
    """The value of ``manifest_checksum`` for ``doc`` (which may already hold one)."""
    return "sha256:" + hashlib.sha256(canonical_json(doc, (MANIFEST_CHECKSUM,))).hexdigest()


def content_digest(doc: Mapping[str, Any]) -> bytes:
    """SHA-256 of what a signature covers: everything but the checksum and the signature."""
    return hashlib.sha256(canonical_json(doc, (MANIFEST_CHECKSUM, SIGNATURE_MEMBER))).digest()


_BEYOND_JSON = "holds an integer or a nesting far beyond any manifest's"
"""Valid JSON that ``json`` refuses with a plain ValueError or RecursionError, not a
JSONDecodeError: an integer of more digits than ``sys.get_int_max_str_digits()``,
nesting past the recursion limit. No writer makes either; the reader says so in one line."""


@dataclass(slots=True)
class RegionRecord:
    """One device memory region (or one chunk of a large region) and where its bytes are.

    ``offset`` is in the shard's *uncompressed* stream; a shard's records,
    ordered by offset, tile that stream from 0 with no gaps. ``stored_size``
    is this record's share of the shard *file*: equal to ``size`` without
    compression; with a codec, the compressed output of the buffer the record
    was written in, shared among that buffer's records in proportion to their
    sizes (the codec's header goes to the shard's first record and its
    trailer to the last). Either way a shard's ``stored_size`` values add up
    to its file size exactly, which makes truncation a cheap structural check.
    """

    addr: int
    size: int
    shard: int
    offset: int
    stored_size: int
    checksum: int

    def to_json(self) -> dict[str, int]:
        return {
            "addr": self.addr,
            "size": self.size,
            "shard": self.shard,
            "offset": self.offset,
            "stored_size": self.stored_size,
            "checksum": self.checksum,
        }

    @classmethod
    def from_json(cls, d: Any, where: str = "regions[]") -> RegionRecord:
        """A record checked against the manifest schema's ``regions`` items."""
        _validate_part(d, ("regions", "items"), where)
        return cls._build(d)

    @classmethod
    def _build(cls, obj: Mapping[str, Any]) -> RegionRecord:
        return cls(
            addr=obj["addr"],
            size=obj["size"],
            shard=obj["shard"],
            offset=obj["offset"],
            stored_size=obj["stored_size"],
            checksum=obj["checksum"],
        )


@dataclass(slots=True)
class FileRecord:
    """A file of the checkpoint other than the manifest and the shards.

    ``path`` is relative to the checkpoint directory with ``/`` separators.
    """

    path: str
    size: int
    checksum: int
    sha256: str | None = None
    """Hex SHA-256 of the file, in signed checkpoints (a CRC can be forged)."""

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "size": self.size, "checksum": self.checksum}
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        return d

    @classmethod
    def from_json(cls, d: Any, where: str = "files[]") -> FileRecord:
        """A record checked against the manifest schema's ``files`` items."""
        _validate_part(d, ("files", "items"), where)
        return cls._build(d)

    @classmethod
    def _build(cls, obj: Mapping[str, Any]) -> FileRecord:
        return cls(
            path=obj["path"], size=obj["size"], checksum=obj["checksum"], sha256=obj.get("sha256")
        )


@dataclass
class JobInfo:
    """The job as it was at dump time: what a restore needs to rebuild its surroundings.

    ``geometry`` is the shared-memory geometry (``ring_slots``, ``nchannels``,
    ``staging_size``, ...) the restored controller must open with;
    ``segment_name``/``segment_size`` name the segment the job has mapped.
    """

    id: str
    cmd: list[str]
    segment_name: str
    segment_size: int
    generation: int
    cwd: str | None = None
    driver: str | None = None
    geometry: dict[str, int] = field(default_factory=dict)
    persistent_mounts: list[str] = field(default_factory=list)
    uid: int | None = None
    gid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KNOWN = (
        "id",
        "cmd",
        "segment_name",
        "segment_size",
        "generation",
        "cwd",
        "driver",
        "geometry",
        "persistent_mounts",
        "uid",
        "gid",
    )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "cmd": list(self.cmd),
            "cwd": self.cwd,
            "driver": self.driver,
            "segment_name": self.segment_name,
            "segment_size": self.segment_size,
            "geometry": dict(self.geometry),
            "generation": self.generation,
            "persistent_mounts": list(self.persistent_mounts),
            "uid": self.uid,
            "gid": self.gid,
        }
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_json(cls, d: Any, where: str = "job") -> JobInfo:
        """Job info checked against the manifest schema's ``job``."""
        _validate_part(d, ("job",), where)
        return cls._build(d)

    @classmethod
    def _build(cls, obj: Mapping[str, Any]) -> JobInfo:
        return cls(
            id=obj["id"],
            cmd=list(obj["cmd"]),
            segment_name=obj["segment_name"],
            segment_size=obj["segment_size"],
            generation=obj["generation"],
            cwd=obj.get("cwd"),
            driver=obj.get("driver"),
            geometry=dict(obj.get("geometry") or {}),
            persistent_mounts=list(obj.get("persistent_mounts") or []),
            uid=obj.get("uid"),
            gid=obj.get("gid"),
            extra={k: v for k, v in obj.items() if k not in cls._KNOWN},
        )


@dataclass
class Manifest:
    """Everything ``manifest.json`` says. ``regions`` and ``files`` are the bulk of it."""

    job: JobInfo
    va_base: int
    va_size: int
    compression: str
    streams: int
    regions: list[RegionRecord] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    checksum: str = CHECKSUM_ALGORITHM
    format_version: int = FORMAT_VERSION
    shards: list[FileRecord] = field(default_factory=list)
    """Signed checkpoints: each shard file's size and SHA-256 (its stored bytes)."""
    criu_pages: list[dict[str, Any]] = field(default_factory=list)
    """Driver engine: CRIU's page images held in the shards (``checkpoint.criu_pages``)."""
    signature: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    digest: bytes = field(default=b"", compare=False, repr=False)
    """``content_digest`` of the document as it was read (empty for one built here)."""

    @property
    def gpu_bytes(self) -> int:
        """Device memory bytes held in the shards."""
        return sum(r.size for r in self.regions)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format_version": self.format_version,
            "job": self.job.to_json(),
            "device": self.device,
            "va_base": self.va_base,
            "va_size": self.va_size,
            "compression": self.compression,
            "streams": self.streams,
            "checksum": self.checksum,
            "created": self.created,
            "phases": self.phases,
            "regions": [r.to_json() for r in self.regions],
            "files": [f.to_json() for f in self.files],
        }
        if self.shards:
            d["shards"] = [s.to_json() for s in self.shards]
        if self.criu_pages:
            d["criu_pages"] = [dict(p) for p in self.criu_pages]
        if self.signature is not None:
            d[SIGNATURE_MEMBER] = self.signature
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    def dumps(self) -> str:
        """JSON text: readable header, one region or file per line (there may be 100,000),
        ending with the checksum over everything before it."""
        d = self.to_json()
        d.pop(MANIFEST_CHECKSUM, None)
        d[MANIFEST_CHECKSUM] = manifest_digest(d)
        regions = d.pop("regions")
        files = d.pop("files")
        head = json.dumps(d, indent=1)[:-2]  # drop the closing "\n}"
        parts = [head, ',\n "regions": [']
        parts.append(",".join("\n  " + json.dumps(r, separators=(",", ":")) for r in regions))
        parts.append('\n ],\n "files": [')
        parts.append(",".join("\n  " + json.dumps(f, separators=(",", ":")) for f in files))
        parts.append("\n ]\n}\n")
        return "".join(parts)

    @classmethod
    def from_json(cls, d: Any, where: str = "manifest") -> Manifest:
        """Check ``d`` (version, then its version's schema) and build the manifest.

        A newer ``format_version`` is a ``CheckpointError`` (upgrade), so is an
        unknown compression (a newer cedana-gpu may know it); anything else
        the schema refuses is ``CorruptCheckpoint``, one line naming the member.
        """
        version = _check_version(d, where)
        _check_digest(d, where)
        schema = load_schema(SCHEMA_NAME, version)
        validate(d, schema, where)
        compression = check_compression(d["compression"])
        created = d.get("created", 0.0)
        return cls(
            format_version=version,
            job=JobInfo._build(d["job"]),
            device=dict(d.get("device") or {}),
            va_base=d["va_base"],
            va_size=d["va_size"],
            compression=compression,
            streams=d["streams"],
            checksum=d.get("checksum", CHECKSUM_ALGORITHM),
            created=float(created),
            phases={str(k): float(v) for k, v in (d.get("phases") or {}).items()},
            regions=[RegionRecord._build(r) for r in d["regions"]],
            files=[FileRecord._build(f) for f in d["files"]],
            shards=[FileRecord._build(f) for f in d.get("shards") or []],
            criu_pages=[dict(p) for p in d.get("criu_pages") or []],
            signature=d.get(SIGNATURE_MEMBER),
            # What the schema does not name (a later writer's) is kept as it is.
            extra={k: v for k, v in d.items() if k not in schema["properties"]},
            digest=content_digest(d),
        )


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it names a file, else ``path/manifest.json``."""
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest (``path`` is the checkpoint directory or the manifest file).

    Raises ``CheckpointError`` (``CorruptCheckpoint`` for damage) with one line:
    missing or garbled manifest, a newer format, missing or mistyped fields,
    a manifest that does not match its ``manifest_checksum``.
    """
    p = manifest_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = p.parent if p.name == MANIFEST_NAME else p
        raise CheckpointError(
            f"{where}: no {MANIFEST_NAME}: not a checkpoint, or an incomplete one"
        ) from None
    except UnicodeDecodeError:
        raise CorruptCheckpoint(
            f"{p}: the manifest is not text: the checkpoint is corrupt"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot read {p}: {e.strerror}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptCheckpoint(
            f"{p}: the manifest is not valid JSON ({e.msg} at line {e.lineno}): "
            "the checkpoint is corrupt"
        ) from None
    except (ValueError, RecursionError):
        raise CorruptCheckpoint(
            f"{p}: the manifest {_BEYOND_JSON}: the checkpoint is corrupt"
        ) from None
    return Manifest.from_json(d, str(p))


def save_manifest(
    manifest: Manifest, directory: str | os.PathLike[str], *, sync: bool = False
) -> Path:
    """Write ``directory/manifest.json`` atomically (temporary name, then rename)."""
    d = Path(directory)
    final = d / MANIFEST_NAME
    tmp = d / f".{MANIFEST_NAME}.partial"
    data = manifest.dumps().encode("utf-8")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {final}: {e.strerror}") from None
    return final


# --- schema helpers -----------------------------------------------------------


def _check_digest(d: dict[str, Any], where: str) -> None:
    """The manifest's checksum over itself, when it has one (older ones do not).

    Every other file is checked against the manifest; this checks the
    manifest, so that an edit of it (two regions' addresses swapped, a file's
    checksum changed with the file) is refused before anything starts."""
    if MANIFEST_CHECKSUM not in d:
        return
    stated = d[MANIFEST_CHECKSUM]
    if not isinstance(stated, str) or not stated.startswith("sha256:"):
        raise CorruptCheckpoint(
            f"{where}: '{MANIFEST_CHECKSUM}' is not a sha256 checksum: the checkpoint is corrupt"
        )
    try:
        digest = manifest_digest(d)
    except RecursionError:  # nesting json.loads just managed, json.dumps a few frames deeper not
        raise CorruptCheckpoint(
            f"{where}: the manifest {_BEYOND_JSON}: the checkpoint is corrupt"
        ) from None
    if digest != stated:
        raise CorruptCheckpoint(
            f"{where}: the manifest does not match its {MANIFEST_CHECKSUM}: "
            "the checkpoint is corrupt or was edited"
        )


def _check_version(d: Any, where: str) -> int:
    """``format_version``, before the schema: a newer one is refused with "upgrade"."""
    if not isinstance(d, dict):
        raise CorruptCheckpoint(
            f"{where}: not a JSON object: the checkpoint is corrupt or not from cedana-gpu"
        )
    if "format_version" not in d:
        raise CorruptCheckpoint(
            f"{where}: no 'format_version': the checkpoint is corrupt or not from cedana-gpu"
        )
    version = d["format_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise CorruptCheckpoint(
            f"{where}: 'format_version' is not an integer: "
            "the checkpoint is corrupt or not from cedana-gpu"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {version} is newer than this cedana-gpu supports "
            f"({FORMAT_VERSION}): upgrade cedana-gpu"
        )
    if version < 1:
        raise CorruptCheckpoint(f"{where}: format_version {version} is not a valid format")
    return version


def _validate_part(d: Any, path: tuple[str, ...], where: str) -> None:
    """Validate a part of a manifest (a region, a file, the job) on its own."""
    root = load_schema(SCHEMA_NAME, FORMAT_VERSION)
    sub: Mapping[str, Any] = root
    for key in path:
        sub = sub["properties"][key] if key != "items" else sub["items"]
    if not isinstance(d, dict):
        raise CorruptCheckpoint(
            f"{where}: not a JSON object: the checkpoint is corrupt or not from cedana-gpu"
        )
    validate_against(d, sub, root, where)
