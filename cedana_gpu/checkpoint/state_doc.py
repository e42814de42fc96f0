"""The GPU state document ``<ckpt>/gpu/state.json``: typed reader and writer.

The controller's native dispatcher writes it at dump time and reads it back
at restore (``gpu/controller/state_doc.c``); this is the same document on the
Python side, for tools and tests: ``load_state`` refuses a newer version and
anything ``schemas/gpu-state-v1.schema.json`` does not allow, and
``GpuState.dumps``/``save_state`` write a document the native restore reads.
Members this version does not know are kept in ``extra`` and written back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cedana_gpu.checkpoint.schema import load_schema, validate
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint

STATE_FORMAT = "cedana-gpu-state"
"""``format`` of the document (``CGC_STATE_FORMAT`` in C)."""

STATE_VERSION = 1
"""The version this cedana-gpu writes and the newest it reads (``CGC_STATE_VERSION``)."""

STATE_NAME = "state.json"
SCHEMA_NAME = "gpu-state"

CHUNK_FIELDS = ("addr", "size", "device", "slot_size")
ALLOCATION_FIELDS = ("addr", "size", "chunk", "context")


@dataclass
class Segment:
    """The shared-memory segment the job has mapped, and its geometry."""

    name: str
    size: int
    ring_slots: int
    nchannels: int
    staging_size: int
    timeout_ms: int


@dataclass
class Device:
    ordinal: int
    name: str
    uuid: str
    total_mem: int
    cc: tuple[int, int]


@dataclass
class Context:
    minted: int
    device: int
    flags: int
    primary: bool
    refs: int


class Chunk(NamedTuple):
    """A row of ``chunks`` (a tuple: it is written as a JSON list)."""

    addr: int
    size: int
    device: int
    slot_size: int


class Allocation(NamedTuple):
    """A row of ``allocations``."""

    addr: int
    size: int
    chunk: int
    context: int


@dataclass
class Module:
    minted: int
    context: int
    file: str
    size: int
    checksum: int


@dataclass
class Function:
    minted: int
    module: int
    name: str
    nparams: int
    params_size: int
    params: list[tuple[int, int]] = field(default_factory=list)
    attributes: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Global:
    module: int
    name: str
    addr: int
    size: int
    offset: int
    checksum: int


@dataclass
class Stream:
    minted: int
    context: int
    flags: int
    priority: int


@dataclass
class Event:
    minted: int
    context: int
    flags: int


@dataclass
class Pin:
    id: int
    size: int
    app_addr: int
    same_addr: bool
    registered: bool


@dataclass
class Blob:
    channel: int
    total: int
    filled: int
    file: str
    checksum: int


@dataclass
class VmmReservation:
    """A job's cuMemAddressReserve inside the controller's range."""

    addr: int
    size: int
    taken: int


@dataclass
class VmmPhysical:
    """A job's cuMemCreate: its handle, and where the controller maps it (``shadow``)."""

    id: int
    size: int
    device: int
    shadow: int
    released: bool


@dataclass
class VmmMapping:
    """A job's cuMemMap; ``access``: 2 bits of CUmemAccess_flags per device."""

    addr: int
    size: int
    physical: int
    access: int


@dataclass
class Pool:
    """A job's memory pool; ``reuse``: bit 0 follow event dependencies, bit 1
    opportunistic, bit 2 internal dependencies."""

    minted: int
    device: int
    is_default: bool
    destroyed: bool
    max_size: int
    threshold: int
    reuse: int
    reserved_high: int
    used_high: int


@dataclass
class PoolBlock:
    """An allocation (of ``allocations``) that belongs to a memory pool."""

    addr: int
    pool: int
    size: int
    cached: bool
    freed_on: int


@dataclass
class Counts:
    allocations: int
    bytes: int
    chunks: int
    modules: int


@dataclass
class GpuState:
    """Everything ``state.json`` says; the schema file says what each member means."""

    job_id: str
    app_job_id: str
    segment: Segment
    generation: int
    va_base: int
    va_size: int
    granularity: int
    driver_version: int
    async_error: int
    counts: Counts
    devices: list[Device] = field(default_factory=list)
    contexts: list[Context] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    device_bytes: list[int] = field(default_factory=list)
    allocations: list[Allocation] = field(default_factory=list)
    modules: list[Module] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)
    globals: list[Global] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    pins: list[Pin] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    # The job's own VMM objects; absent (empty) in older documents.
    vmm_reservations: list[VmmReservation] = field(default_factory=list)
    vmm_physical: list[VmmPhysical] = field(default_factory=list)
    vmm_mappings: list[VmmMapping] = field(default_factory=list)
    # The job's memory pools and their blocks; absent (empty) in older documents.
    pools: list[Pool] = field(default_factory=list)
    pool_blocks: list[PoolBlock] = field(default_factory=list)
    # Handle regions the job's processes claimed; absent (0) in older documents.
    mint_regions: int = 0
    version: int = STATE_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The document as JSON values, members in the order the controller writes them."""
        d: dict[str, Any] = {
            "format": STATE_FORMAT,
            "version": self.version,
            "job_id": self.job_id,
            "app_job_id": self.app_job_id,
            "segment": _fields(self.segment),
            "generation": self.generation,
            "va_base": self.va_base,
            "va_size": self.va_size,
            "granularity": self.granularity,
            "driver_version": self.driver_version,
            "async_error": self.async_error,
            "mint_regions": self.mint_regions,
            "devices": [dict(_fields(x), cc=list(x.cc)) for x in self.devices],
            "contexts": [_fields(x) for x in self.contexts],
            "chunk_fields": list(CHUNK_FIELDS),
            "chunks": [list(x) for x in self.chunks],
            "device_bytes": list(self.device_bytes),
            "allocation_fields": list(ALLOCATION_FIELDS),
            "allocations": [list(x) for x in self.allocations],
            "modules": [_fields(x) for x in self.modules],
            "functions": [
                dict(
                    _fields(x),
                    params=[list(p) for p in x.params],
                    attributes=[list(a) for a in x.attributes],
                )
                for x in self.functions
            ],
            "globals": [_fields(x) for x in self.globals],
            "streams": [_fields(x) for x in self.streams],
            "events": [_fields(x) for x in self.events],
            "pins": [_fields(x) for x in self.pins],
            "vmm_reservations": [_fields(x) for x in self.vmm_reservations],
            "vmm_physical": [_fields(x) for x in self.vmm_physical],
            "vmm_mappings": [_fields(x) for x in self.vmm_mappings],
            "pools": [_fields(x) for x in self.pools],
            "pool_blocks": [_fields(x) for x in self.pool_blocks],
            "blobs": [_fields(x) for x in self.blobs],
            "counts": _fields(self.counts),
        }
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    def dumps(self) -> str:
        """JSON text: one record per line (there may be 100,000 allocations)."""
        d = self.to_json()
        out = ["{"]
        last = len(d) - 1
        for i, (key, value) in enumerate(d.items()):
            comma = "," if i < last else ""
            if isinstance(value, list) and value and isinstance(value[0], list | dict):
                rows = ",\n".join("  " + _compact(v) for v in value)
                out.append(f"{json.dumps(key)}: [\n{rows}\n]{comma}")
            else:
                out.append(f"{json.dumps(key)}: {_compact(value)}{comma}")
        out.append("}\n")
        return "\n".join(out)

    @classmethod
    def from_json(cls, d: Any, where: str = STATE_NAME) -> GpuState:
        """Check ``d`` (format, version, then the schema) and build the state from it."""
        version = check_version(d, where)
        schema = load_schema(SCHEMA_NAME, version)
        validate(d, schema, where)
        _check_references(d, where)
        return cls(
            version=version,
            job_id=d["job_id"],
            app_job_id=d["app_job_id"],
            segment=Segment(**_known(Segment, d["segment"])),
            generation=d["generation"],
            va_base=d["va_base"],
            va_size=d["va_size"],
            granularity=d["granularity"],
            driver_version=d["driver_version"],
            async_error=d["async_error"],
            mint_regions=d.get("mint_regions", 0),
            devices=[
                Device(**dict(_known(Device, x), cc=(x["cc"][0], x["cc"][1]))) for x in d["devices"]
            ],
            contexts=[Context(**_known(Context, x)) for x in d["contexts"]],
            chunks=[Chunk(*row) for row in d["chunks"]],
            device_bytes=list(d["device_bytes"]),
            allocations=[Allocation(*row) for row in d["allocations"]],
            modules=[Module(**_known(Module, x)) for x in d["modules"]],
            functions=[
                Function(
                    **dict(
                        _known(Function, x),
                        params=[(p[0], p[1]) for p in x["params"]],
                        attributes=[(a[0], a[1]) for a in x["attributes"]],
                    )
                )
                for x in d["functions"]
            ],
            globals=[Global(**_known(Global, x)) for x in d["globals"]],
            streams=[Stream(**_known(Stream, x)) for x in d["streams"]],
            events=[Event(**_known(Event, x)) for x in d["events"]],
            pins=[Pin(**_known(Pin, x)) for x in d["pins"]],
            blobs=[Blob(**_known(Blob, x)) for x in d["blobs"]],
            vmm_reservations=[
                VmmReservation(**_known(VmmReservation, x)) for x in d.get("vmm_reservations", [])
            ],
            vmm_physical=[VmmPhysical(**_known(VmmPhysical, x)) for x in d.get("vmm_physical", [])],
            vmm_mappings=[VmmMapping(**_known(VmmMapping, x)) for x in d.get("vmm_mappings", [])],
            pools=[Pool(**_known(Pool, x)) for x in d.get("pools", [])],
            pool_blocks=[PoolBlock(**_known(PoolBlock, x)) for x in d.get("pool_blocks", [])],
            counts=Counts(**_known(Counts, d["counts"])),
            # What the schema does not name (a later writer's) is kept as it is.
            extra={k: v for k, v in d.items() if k not in schema["properties"]},
        )


def _check_references(d: dict[str, Any], where: str) -> None:
    """What JSON Schema cannot say and the native restore refuses: a function's
    ``params`` count is its ``nparams``, an allocation's chunk is listed."""

    def corrupt(what: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(
            f"{where}: {what}: the checkpoint is corrupt or not from cedana-gpu"
        )

    for i, fn in enumerate(d["functions"]):
        if fn["nparams"] >= 0 and len(fn["params"]) != fn["nparams"]:
            raise corrupt(
                f"functions[{i}]: 'params' has {len(fn['params'])} items, 'nparams' says "
                f"{fn['nparams']}"
            )
    nchunks = len(d["chunks"])
    for i, row in enumerate(d["allocations"]):
        if row[2] >= nchunks:
            raise corrupt(f"allocations[{i}]: chunk {row[2]} is not listed ({nchunks} chunks)")
    physical = {p["id"] for p in d.get("vmm_physical", [])}
    for i, m in enumerate(d.get("vmm_mappings", [])):
        if m["physical"] not in physical:
            raise corrupt(f"vmm_mappings[{i}]: physical allocation {m['physical']} is not listed")
    pools = {p["minted"] for p in d.get("pools", [])}
    addrs = {row[0] for row in d["allocations"]}
    for i, b in enumerate(d.get("pool_blocks", [])):
        if b["pool"] not in pools:
            raise corrupt(f"pool_blocks[{i}]: pool {b['pool']} is not listed")
        if b["addr"] not in addrs:
            raise corrupt(f"pool_blocks[{i}]: 0x{b['addr']:x} is not an allocation")


def check_version(d: Any, where: str) -> int:
    """The document's version, once it is known to be a GPU state this cedana-gpu reads.

    A newer version is a ``CheckpointError`` (not corruption: a newer
    cedana-gpu wrote it); anything that is not a GPU state is corrupt.
    """
    if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
        raise CorruptCheckpoint(
            f"{where}: not a cedana-gpu GPU state: the checkpoint is corrupt or not from cedana-gpu"
        )
    version = d.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptCheckpoint(
            f"{where}: 'version' is {json.dumps(version)}, not a format version: "
            "the checkpoint is corrupt or not from cedana-gpu"
        )
    if version > STATE_VERSION:
        raise CheckpointError(
            f"{where}: GPU state format {version} is newer than this cedana-gpu supports "
            f"({STATE_VERSION}): upgrade cedana-gpu"
        )
    return version


def state_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it names a file, else ``path/state.json`` (the ``gpu`` directory)."""
    p = Path(path)
    return p / STATE_NAME if p.is_dir() else p


def load_state(path: str | os.PathLike[str]) -> GpuState:
    """Read a GPU state document (``path``: the checkpoint's ``gpu`` directory or the file).

    Raises ``CheckpointError`` (``CorruptCheckpoint`` for damage), one line.
    """
    p = state_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{p}: missing: the checkpoint is incomplete") from None
    except UnicodeDecodeError:
        raise CorruptCheckpoint(f"{p}: not text: the checkpoint is corrupt") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {p}: {e.strerror}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptCheckpoint(
            f"{p}: not valid JSON ({e.msg} at line {e.lineno}): the checkpoint is corrupt"
        ) from None
    except (ValueError, RecursionError):
        # Valid JSON that json refuses otherwise: an integer of more digits than
        # sys.get_int_max_str_digits(), nesting past the recursion limit.
        raise CorruptCheckpoint(
            f"{p}: holds an integer or a nesting far beyond any GPU state's: "
            "the checkpoint is corrupt"
        ) from None
    return GpuState.from_json(d, str(p))


def save_state(state: GpuState, directory: str | os.PathLike[str]) -> Path:
    """Write ``directory/state.json`` atomically (temporary name, then rename)."""
    d = Path(directory)
    final = d / STATE_NAME
    tmp = d / f".{STATE_NAME}.tmp"  # the name the controller uses for its own
    try:
        tmp.write_text(state.dumps(), encoding="utf-8")
        os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {final}: {e.strerror}") from None
    return final


# --- helpers ---------------------------------------------------------------------


def _fields(record: Any) -> dict[str, Any]:
    """A dataclass record's members by name, in declaration order (shallow)."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _known(cls: Any, obj: dict[str, Any]) -> dict[str, Any]:
    """The members of ``obj`` that ``cls`` has (a newer writer's additions are dropped
    from records; the schema allows them, and only the top level keeps them)."""
    names = cls.__dataclass_fields__
    return {k: v for k, v in obj.items() if k in names}


def _compact(value: Any) -> str:
    # Rows of integers (chunks, allocations: most of a large document) by
    # hand; json.dumps per row costs ten times as much.
    if type(value) is list and all(type(x) is int for x in value):
        return "[" + ", ".join(map(str, value)) + "]"
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
