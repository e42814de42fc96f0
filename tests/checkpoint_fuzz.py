"""Mutated checkpoints and the checks a restore makes on them (tests/test_checkpoint_fuzz.py).

A *base* is a small checkpoint in the real format, made with the package's
own writers: shards from ``write_regions`` (several regions, some chunked,
over 2 or 3 streams; uncompressed or lz4/gzip/zlib), ``gpu/state.json`` from
``save_state`` with handle tables, module, global, pin and blob files, CRIU
images (fake bytes), ``file_records`` and ``save_manifest``; the archive
bases are ``pack``ed from that directory. Checksums are the native CRC32C
(``native.checksum``), as in a restore.

A *case* is one mutated copy of a base, named ``<base>/<family>/<seed>``:
everything about it follows from that name (``replay(name)`` runs it again).
``restore_checks`` does what a restore does before and while it loads the
device: ``check_checkpoint``, then ``read_regions`` into a dict standing for
the device, then ``load_state``. A case is *refused* (a ``CheckpointError``
of one line), *accepted identical* (same device bytes, state document,
listed files and job as the base), or *accepted wrong*.

Families:

- ``raw``: bit flips, byte overwrites, truncations, extensions, deleted,
  duplicated and swapped files; in an archive, the same on the archive's
  bytes, aimed at random, at a member's header or at its data, plus member
  headers edited with their tar checksum fixed (so tar takes them), members
  dropped or duplicated.
- ``manifest``: edits of manifest.json that keep it valid JSON (regions'
  addresses swapped, a record's fields set to other numbers, huge,
  negative, float, string, null values, records duplicated or removed,
  va_base/va_size/streams/compression/format_version/job changed, a file
  edited *and* its record's size and checksum updated), all without
  touching ``manifest_checksum``: what an accident or an unauthorised edit
  does.
- ``state``: edits of gpu/state.json that keep it valid JSON, sometimes with
  its file record updated in the manifest (again without
  ``manifest_checksum``).
- ``forged``: manifest edits *with* ``manifest_checksum`` recomputed, i.e.
  someone who knows the format. These are caught only where the edit breaks
  something else the checkpoint can check. Each forged edit has a kind:
  ``MUST_DETECT`` kinds break the layout, a region's or a file's checksum,
  the schema, and must never be accepted with a wrong result; the
  ``MAY_PASS`` kinds make a different checkpoint that is consistent in
  itself, which only a signature could tell from the original:

  * ``move``: a region's address changed, or two regions' addresses swapped
    (checksums cover a region's bytes, not where they go);
  * ``rerecord``: a listed file changed (a CRIU image, a module, the state
    document with an edit its schema allows) with its record's size and
    checksum updated;
  * ``drop``: a listed file deleted with its record;
  * ``job``: the job's members changed to other well-typed values;
  * ``downgrade``: ``manifest_checksum`` deleted (an older manifest has
    none, and is read) and then a ``manifest``-family edit made.
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import hashlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cedana_gpu.checkpoint import (
    CHECKSUM_ALGORITHM,
    DEFAULT_CHUNK_SIZE,
    CheckpointError,
    JobInfo,
    Manifest,
    check_checkpoint,
    file_records,
    load_state,
    pack,
    read_regions,
    save_manifest,
    save_state,
    shards,
    write_regions,
)
from cedana_gpu.checkpoint.codec import codec_of, compressor, suffix
from cedana_gpu.checkpoint.state_doc import (
    Blob,
    Chunk,
    Context,
    Counts,
    Device,
    Event,
    Function,
    Global,
    GpuState,
    Module,
    Pin,
    Segment,
    Stream,
)
from cedana_gpu.controller import native

VA_BASE = 0x7F10_0000_0000
VA_SIZE = 1 << 20
WRITE_CHUNK = 4096
"""Largest record at dump time: the big regions become several records."""

MANIFEST = "manifest.json"
STATE = "gpu/state.json"

HANG_SECONDS = 20
"""A case that takes this long is a hang (a case takes milliseconds)."""


def checksum(buf: memoryview) -> int:
    """The restore's checksum: the native CRC32C (``cgc_checksum``)."""
    return native.checksum(buf)


# --- the device ------------------------------------------------------------------


def device_regions(rng: random.Random) -> list[tuple[int, int, bytes]]:
    """(addr, size, bytes): big regions (chunked at dump), mid ones, 1-byte ones,
    four of 64 bytes (equal sizes: swappable), tiny ones; gaps between them."""
    sizes = [3 * WRITE_CHUNK + 123, 1, 600, WRITE_CHUNK, 7, 10_000, 64, 64, 64, 64, 2 * WRITE_CHUNK]
    sizes += [rng.randrange(1, 300) for _ in range(40)]
    out = []
    addr = VA_BASE + 4096
    for i, size in enumerate(sizes):
        if i % 3 == 0:  # half random, half one byte repeated: compressible and not
            half = size // 2
            data = rng.randbytes(half) + bytes([rng.randrange(256)]) * (size - half)
        elif i % 3 == 1:
            data = rng.randbytes(size)
        else:
            data = bytes([i & 0xFF]) * size
        out.append((addr, size, data))
        addr += size + rng.choice([0, 0, 1, 8, 512])
    assert addr < VA_BASE + VA_SIZE
    return out


def device_image(writes: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """What the device holds after these writes, as maximal contiguous spans.

    Chunks of one region come back as one span, so the image does not depend
    on how the dump cut the regions. Overlapping writes are kept apart (the
    original has none): such an image never equals the original's.
    """
    spans: list[tuple[int, bytearray]] = []
    for addr, data in sorted(w for w in writes if w[1]):
        if spans and spans[-1][0] + len(spans[-1][1]) == addr:
            spans[-1][1].extend(data)
        else:
            spans.append((addr, bytearray(data)))
    return [(a, bytes(b)) for a, b in spans]


# --- the GPU state document -----------------------------------------------------


def sample_state(
    regions: list[tuple[int, int]], files: dict[str, bytes], *, job: str = "fz"
) -> GpuState:
    """A state document like the controller's: handles, layout, modules, globals, pins.

    ``files`` (paths relative to ``gpu/``) must hold ``modules/1.img``,
    ``globals.bin`` and ``blobs/2.bin``: their sizes and checksums go in.
    """

    def crc(name: str) -> int:
        return checksum(memoryview(bytearray(files[name])))

    lo = min(a for a, _ in regions) if regions else VA_BASE
    hi = max(a + s for a, s in regions) if regions else VA_BASE
    span = -(-(hi - lo) // 65536) * 65536 or 65536
    chunk = Chunk(addr=lo, size=span, device=0, slot_size=0)
    allocations = [(a, s, 0, 1) for a, s in regions]
    total = sum(s for _, s in regions)
    globals_bin = files["globals.bin"]
    return GpuState(
        job_id=job,
        app_job_id=job,
        segment=Segment(
            name=f"cedana-gpu.{job}",
            size=4 << 20,
            ring_slots=256,
            nchannels=8,
            staging_size=1 << 20,
            timeout_ms=60_000,
        ),
        generation=3,
        va_base=VA_BASE,
        va_size=VA_SIZE,
        granularity=65536,
        driver_version=12040,
        async_error=0,
        counts=Counts(allocations=len(allocations), bytes=total, chunks=1, modules=1),
        devices=[Device(0, "Fake GPU 0", "0123456789abcdef0123456789abcdef", 16 << 30, (9, 0))],
        contexts=[Context(minted=1, device=0, flags=0, primary=True, refs=1)],
        chunks=[chunk],
        device_bytes=[span],
        allocations=[tuple(x) for x in allocations],  # type: ignore[misc]
        modules=[
            Module(
                minted=0x100,
                context=1,
                file="modules/1.img",
                size=len(files["modules/1.img"]),
                checksum=crc("modules/1.img"),
            )
        ],
        functions=[
            Function(
                minted=0x200,
                module=0x100,
                name="vector_add",
                nparams=3,
                params_size=24,
                params=[(0, 8), (8, 8), (16, 8)],
                attributes=[(8, 2048)],
            ),
            Function(minted=0x201, module=0x100, name="axpy", nparams=-1, params_size=16),
        ],
        globals=[
            Global(
                module=0x100,
                name="axpy_alpha",
                addr=lo + 16,
                size=len(globals_bin),
                offset=0,
                checksum=checksum(memoryview(bytearray(globals_bin))),
            )
        ],
        streams=[Stream(minted=0x300, context=1, flags=1, priority=-1)],
        events=[Event(minted=0x400, context=1, flags=0), Event(minted=0x401, context=1, flags=2)],
        pins=[Pin(id=5, size=2048, app_addr=0x7F20_0000_0000, same_addr=True, registered=True)],
        blobs=[
            Blob(
                channel=2, total=4096, filled=1000, file="blobs/2.bin", checksum=crc("blobs/2.bin")
            )
        ],
    )


def write_sample_state(gpu_dir: Path, regions: list[tuple[int, int]], rng: random.Random) -> None:
    """``gpu_dir``/state.json and the files it names (modules, globals, blobs, pins)."""
    files = {
        "modules/1.img": b"\x7fELF" + rng.randbytes(1500) + bytes(500),
        "globals.bin": rng.randbytes(4),
        "blobs/2.bin": rng.randbytes(1000),
        "pins/5.bin": rng.randbytes(1024) + bytes(1024),
    }
    for rel, data in files.items():
        (gpu_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (gpu_dir / rel).write_bytes(data)
    save_state(sample_state(regions, files), gpu_dir)


# --- bases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    compression: str
    streams: int
    archive: bool
    read_chunk: int | None = None
    """``read_regions``' chunk_size: None is the restore's default; small ones cycle buffers."""


VARIANTS = [
    Variant("dir-none", "none", 2, False),
    Variant("dir-lz4", "lz4", 3, False, read_chunk=2048),
    Variant("dir-gzip", "gzip", 2, False),
    Variant("dir-zlib", "zlib", 3, False),
    Variant("tar-tar", "tar", 2, True, read_chunk=1024),
    Variant("tar-lz4", "lz4", 2, True),
    Variant("tar-gzip", "gzip", 3, True),
    Variant("tar-zlib", "zlib", 2, True),
]
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}


@dataclass
class Outcome:
    """What a restore would end up with: the device, the state, the files, the job."""

    device: list[tuple[int, bytes]]
    state: dict[str, Any] | None
    files: dict[str, bytes | None]
    job: dict[str, Any]


@dataclass
class Base:
    variant: Variant
    tree: dict[str, bytes]
    """The checkpoint directory: relative path -> bytes (the manifest's view)."""
    archive: bytes | None
    expected: Outcome
    listed: list[str]
    """The files the original manifest lists."""
    members: list[tarfile.TarInfo] = field(default_factory=list)


def read_tree(d: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            out[p.relative_to(d).as_posix()] = p.read_bytes()
    return out


def write_tree(tree: dict[str, bytes], d: Path) -> None:
    made: set[Path] = set()
    for rel, data in tree.items():
        p = d / rel
        if p.parent not in made:
            p.parent.mkdir(parents=True, exist_ok=True)
            made.add(p.parent)
        with open(p, "wb") as f:
            f.write(data)


def build_base(variant: Variant, work: Path) -> Base:
    """Dump a small job the way ``cedana dump`` lays it out, with the package's writers."""
    rng = random.Random(f"base/{variant.name}")
    ck = work / f"base-{variant.name}"
    gpu = ck / "gpu"
    gpu.mkdir(parents=True)
    regions = device_regions(rng)
    mem = {a: d for a, _, d in regions}

    def read_fn(addr: int, size: int, dst: memoryview) -> int:
        dst[:] = mem[addr][:size] if addr in mem else _chunk_of(mem, addr, size)
        return checksum(dst)

    records = write_regions(
        gpu, [(a, s) for a, s, _ in regions], read_fn, variant.streams, variant.compression,
        chunk_size=WRITE_CHUNK,
    )  # fmt: skip
    write_sample_state(gpu, [(a, s) for a, s, _ in regions], rng)
    criu = ck / "criu"
    criu.mkdir()
    (criu / "core-1.img").write_bytes(rng.randbytes(700))
    (criu / "pages-1.img").write_bytes(bytes(6000) + rng.randbytes(3000))
    (criu / "pstree.img").write_bytes(rng.randbytes(40))
    (criu / "empty.img").write_bytes(b"")
    (criu / "dump.log").write_text("(00.001) Dumping finished successfully\n")
    manifest = Manifest(
        job=JobInfo(
            id="fz-job",
            cmd=["python3", "train.py", "--name=café"],
            cwd="/work",
            driver="fake",
            segment_name="cedana-gpu.fz",
            segment_size=4 << 20,
            generation=3,
            geometry={"ring_slots": 256, "nchannels": 8, "staging_size": 1 << 20},
            persistent_mounts=["/cache"],
            uid=1000,
            gid=1000,
            extra={"gpu": True, "checkpoint_id": "ck-fz"},
        ),
        va_base=VA_BASE,
        va_size=VA_SIZE,
        compression=variant.compression,
        streams=variant.streams,
        regions=records,
        files=file_records(ck, checksum),
        device={"name": "Fake GPU 0", "memory": 16 << 30},
        phases={"gpu_dump": 0.01, "criu_dump": 0.2},
        created=1_700_000_000.25,
        checksum=CHECKSUM_ALGORITHM,
    )
    save_manifest(manifest, ck)
    tree = read_tree(ck)
    archive = None
    members: list[tarfile.TarInfo] = []
    path = ck
    if variant.archive:
        path = pack(ck, work / f"base-{variant.name}.tar", variant.compression)
        archive = path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
            members = tf.getmembers()
    listed = [f.path for f in manifest.files]
    expected = Outcome(
        device=device_image([(a, d) for a, _, d in regions]),
        state=load_state(gpu / "state.json").to_json(),
        files={rel: tree[rel] for rel in listed},
        job=manifest.job.to_json(),
    )
    base = Base(variant, tree, archive, expected, listed, members)
    # The base itself restores to exactly what was dumped.
    got = restore_checks(base, path, work / f"scratch-{variant.name}")
    assert got == expected, f"{variant.name}: the unmutated checkpoint does not restore"
    shutil.rmtree(work / f"scratch-{variant.name}", ignore_errors=True)
    return base


def _chunk_of(mem: dict[int, bytes], addr: int, size: int) -> bytes:
    """The bytes of a chunk of a region (``write_regions`` cuts big regions)."""
    for a, d in mem.items():
        if a <= addr < a + len(d):
            return d[addr - a : addr - a + size]
    raise AssertionError(f"no region at 0x{addr:x}")


# --- what a restore does ------------------------------------------------------------


def restore_checks(base: Base, path: Path, scratch: Path) -> Outcome:
    """``cr.restore``'s check phase, the device load, the state document; the outcome."""
    d, m = check_checkpoint(path, scratch, checksum, algorithm=CHECKSUM_ALGORITHM)
    writes: list[tuple[int, bytes]] = []

    def write_fn(addr: int, src: memoryview) -> None:
        writes.append((addr, bytes(src)))

    chunk = base.variant.read_chunk or DEFAULT_CHUNK_SIZE
    read_regions(
        d / "gpu", m.regions, write_fn, m.streams, m.compression, checksum, chunk_size=chunk
    )
    state = d / STATE
    return Outcome(
        device=device_image(writes),
        state=load_state(state).to_json() if state.exists() else None,
        files={rel: _read_or_none(d / rel) for rel in base.listed},
        job=m.job.to_json(),
    )


def _read_or_none(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except OSError:
        return None


# --- the spec's self-checksum, computed here on its own ---------------------------


def spec_digest(doc: dict[str, Any]) -> str:
    """``manifest_checksum`` as the format says (not the package's function)."""
    body = {k: v for k, v in doc.items() if k != "manifest_checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- values an edit sets ----------------------------------------------------------


class Raw:
    """A JSON value given as text: numbers ``json.dumps`` cannot write, deep nesting."""

    def __init__(self, text: str) -> None:
        self.text = text


def odd_values(rng: random.Random, old: Any) -> Any:
    """A replacement for ``old``: near it, huge, negative, another type, odd text."""
    pool: list[Callable[[], Any]] = [
        lambda: old + 1 if isinstance(old, int) and not isinstance(old, bool) else 1,
        lambda: old - 1 if isinstance(old, int) and not isinstance(old, bool) else -1,
        lambda: old ^ (1 << rng.randrange(64)) if isinstance(old, int) and old >= 0 else 0,
        lambda: 0,
        lambda: -1,
        lambda: -(1 << 63),
        lambda: (1 << 64) - 1,
        lambda: 1 << 64,
        lambda: 1 << 200,
        lambda: rng.randrange(1 << 32),
        lambda: 1.5,
        lambda: float(old) if isinstance(old, int) and not isinstance(old, bool) else 2.0,
        lambda: 1e308,
        lambda: float("nan"),
        lambda: float("inf"),
        lambda: str(old),
        lambda: "",
        lambda: None,
        lambda: True,
        lambda: False,
        lambda: [],
        lambda: {},
        lambda: [old],
        lambda: {"x": old},
        lambda: "\ud800",
        lambda: "a\x00b",
        lambda: "é" * rng.randrange(1, 5),
        lambda: Raw("1" + "0" * rng.choice([4400, 20_000])),
        lambda: Raw("-0"),
        lambda: Raw("1E2"),
        lambda: Raw(_nested(rng.choice([50, 900, 3000]))),
    ]
    return rng.choice(pool)()


def odd_type(rng: random.Random, old: Any) -> Any:
    """A replacement for ``old`` that is no integer (a schema says what type a member is)."""
    pool: list[Any] = [
        1.5, 1e308, float("nan"), str(old), "", None, True, False, [], {}, [old], "\ud800",
        Raw("1E2"), Raw(_nested(rng.choice([50, 900, 3000]))),
    ]  # fmt: skip
    return rng.choice(pool)


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def dumps_with_raw(doc: Any, rng: random.Random) -> bytes:
    """``doc`` as UTF-8 JSON, ``Raw`` values spliced in as they are."""
    raws: list[str] = []

    def default(o: Any) -> Any:
        if isinstance(o, Raw):
            raws.append(o.text)
            return f"\0raw{len(raws) - 1}\0"
        raise TypeError(type(o))

    indent = rng.choice([None, None, None, 1])  # None: the C encoder, four times faster
    ascii_only = rng.random() < 0.5
    text = json.dumps(doc, default=default, indent=indent, ensure_ascii=ascii_only)
    if not ascii_only and _SURROGATE.search(text):
        raws.clear()  # a lone surrogate has no UTF-8: escape it as JSON may
        text = json.dumps(doc, default=default, indent=indent)
    for i, r in enumerate(raws):
        text = text.replace(json.dumps(f"\0raw{i}\0"), r, 1)
    return text.encode()


_SURROGATE = re.compile("[\ud800-\udfff]")


# --- JSON paths ------------------------------------------------------------------


def leaves(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every member and item of ``doc`` (containers too) with its path."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*prefix, k), v
            yield from leaves(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield (*prefix, i), v
            yield from leaves(v, (*prefix, i))


def set_at(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value


def del_at(doc: Any, path: tuple[Any, ...]) -> None:
    for k in path[:-1]:
        doc = doc[k]
    del doc[path[-1]]


# --- mutations -------------------------------------------------------------------


@dataclass
class Mutant:
    """A mutated checkpoint: a directory tree, or an archive's bytes (or a tree to pack)."""

    tree: dict[str, bytes] | None = None
    archive: bytes | None = None
    kind: str = ""
    """For forged cases: the edit's kind (``MUST_DETECT`` or ``MAY_PASS``)."""
    what: str = ""
    """What was done, for a failure's message."""


MAY_PASS = frozenset({"move", "rerecord", "drop", "job", "downgrade"})
"""Forged edits that make another checkpoint consistent in itself (module docstring)."""
MUST_DETECT = frozenset({"layout", "files", "top", "types"})
"""Forged edits of the region layout, the file records, the top-level members, the
types: never accepted with a wrong result."""

FAMILIES = ("raw", "manifest", "state", "forged")


def mutate(base: Base, family: str, rng: random.Random) -> Mutant:
    if family == "raw":
        if base.archive is not None and rng.random() < 0.75:
            return raw_archive(base, rng)
        return raw_tree(base, rng)
    tree = dict(base.tree)
    if family == "manifest":
        what = edit_manifest(tree, rng)
        return Mutant(tree=tree, what=what)
    if family == "state":
        what = edit_state(tree, rng)
        if rng.random() < 0.6:
            what += "; its record updated"
            doc = json.loads(tree[MANIFEST])
            rerecord(doc, tree, STATE)
            tree[MANIFEST] = dumps_with_raw(doc, rng)
        return Mutant(tree=tree, what=what)
    kind, what = forge(tree, rng)
    assert kind in MAY_PASS | MUST_DETECT, kind
    return Mutant(tree=tree, kind=kind, what=what)


def pick_file(tree: dict[str, bytes], rng: random.Random) -> str:
    """Any file, the metadata and shards more often (they are what the checks read)."""
    names = sorted(tree)
    shards = [n for n in names if n.startswith("gpu/img-")]
    return rng.choice(names + [MANIFEST] * 3 + [STATE] * 2 + shards * 2)


def damage(
    data: bytes, rng: random.Random, lo: int = 0, hi: int | None = None
) -> tuple[bytes, str]:
    """One byte-level damage of ``data`` (aimed at [lo, hi) where that makes sense)."""
    hi = len(data) if hi is None else hi
    op = rng.choice(["flip", "flip", "flips", "overwrite", "truncate", "extend", "zero"])
    if op in ("flip", "flips") and hi > lo:
        b = bytearray(data)
        n = 1 if op == "flip" else rng.randrange(2, 9)
        for _ in range(n):
            b[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
        return bytes(b), f"{n} bit(s) flipped"
    if op == "overwrite" and hi > lo:
        at = rng.randrange(lo, hi)
        n = rng.randrange(1, 33)
        fill = rng.choice([rng.randbytes(n), bytes(n), b"\xff" * n])
        return data[:at] + fill + data[at + n :], f"{n} bytes overwritten at {at}"
    if op == "zero" and hi > lo:
        at = rng.randrange(lo, hi)
        return data[:at] + bytes(len(data) - at), f"zeroed from {at}"
    if op == "truncate" and data:
        cut = rng.choice([0, len(data) - 1, rng.randrange(len(data))])
        return data[:cut], f"truncated to {cut}"
    n = rng.choice([1, 2, 511, 512, rng.randrange(1, 4000)])
    return data + rng.choice([bytes(n), rng.randbytes(n)]), f"{n} bytes appended"


def raw_tree(base: Base, rng: random.Random) -> Mutant:
    tree = dict(base.tree)
    op = rng.choices(["damage", "delete", "duplicate", "swap"], [8, 1, 1, 1])[0]
    name = pick_file(tree, rng)
    if op == "damage":
        tree[name], what = damage(tree[name], rng)
        return Mutant(tree=tree, what=f"{name}: {what}")
    if op == "delete":
        del tree[name]
        return Mutant(tree=tree, what=f"{name} deleted")
    if op == "duplicate":
        other = rng.choice(
            [
                f"{name}.copy",
                "gpu/img-7",
                "criu/pages-2.img",
                "gpu/modules/2.img",
                rng.choice(sorted(tree)),
            ]
        )
        tree[other] = tree[name]
        return Mutant(tree=tree, what=f"{name} copied to {other}")
    other = rng.choice(sorted(tree))
    tree[name], tree[other] = tree[other], tree[name]
    return Mutant(tree=tree, what=f"{name} and {other} swapped")


def raw_archive(base: Base, rng: random.Random) -> Mutant:
    assert base.archive is not None
    data = base.archive
    m = rng.choice(base.members)
    hdr = m.offset
    op = rng.choices(
        ["anywhere", "header", "data", "field", "drop", "dup", "cut"], [4, 2, 3, 2, 1, 1, 1]
    )[0]
    if op == "anywhere":
        out, what = damage(data, rng)
        return Mutant(archive=out, what=f"archive: {what}")
    if op == "header":
        out, what = damage(data, rng, hdr, hdr + 512)
        return Mutant(archive=out, what=f"archive header of {m.name}: {what}")
    if op == "data" and m.size:  # (a directory has no data: then it falls through)
        out, what = damage(data, rng, m.offset_data, m.offset_data + m.size)
        return Mutant(archive=out, what=f"archive data of {m.name}: {what}")
    if op == "field":
        return Mutant(
            archive=edit_tar_header(data, m, rng),
            what=f"archive header of {m.name} edited, tar checksum fixed",
        )
    end = m.offset_data + -(-m.size // 512) * 512
    if op == "drop":
        return Mutant(archive=data[:hdr] + data[end:], what=f"archive member {m.name} dropped")
    if op == "dup":
        at = rng.choice([end, len(data) - 1024, 0])
        return Mutant(
            archive=data[:at] + data[hdr:end] + data[at:],
            what=f"archive member {m.name} duplicated at {at}",
        )
    cut = rng.choice([hdr, end, m.offset_data, len(data) - 512])
    return Mutant(archive=data[:cut], what=f"archive cut at {cut} ({m.name})")


TAR_FIELDS = {
    "name": (0, 100),
    "mode": (100, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "type": (156, 1),
    "linkname": (157, 100),
    "prefix": (345, 155),
}


def edit_tar_header(data: bytes, m: tarfile.TarInfo, rng: random.Random) -> bytes:
    """A member header with one field changed and its checksum fixed: tar takes it."""
    b = bytearray(data)
    hdr = m.offset
    name = rng.choice(sorted(TAR_FIELDS))
    off, n = TAR_FIELDS[name]
    if name == "type":
        value = rng.choice([b"0", b"1", b"2", b"3", b"5", b"7", b"x", b"\0", b"g"])
    elif name == "size":
        new = rng.choice(
            [0, m.size + 1, max(m.size - 1, 0), m.size + 512, 1 << 33, rng.randrange(1 << 20)]
        )
        value = f"{new:011o}".encode()[-11:] + b"\0"
    elif name in ("name", "prefix", "linkname"):
        value = rng.choice(
            [b"../evil", b"/etc/passwd", b"criu", b"gpu", b"manifest.json", b"gpu/state.json",
             b"gpu/img-0", b"criu/x\0y", b"./criu/core-1.img", b"\xff\xfe", b""]
        )  # fmt: skip
    else:
        value = rng.randbytes(n)
    value = value[:n].ljust(n, b"\0")
    b[hdr + off : hdr + off + n] = value
    b[hdr + 148 : hdr + 156] = b" " * 8
    chk = sum(b[hdr : hdr + 512])
    b[hdr + 148 : hdr + 156] = f"{chk:06o}\0 ".encode()
    return bytes(b)


# manifest edits -------------------------------------------------------------------


def regions_of(doc: dict[str, Any]) -> list[Any]:
    r = doc.get("regions")
    return r if isinstance(r, list) else []


def files_of(doc: dict[str, Any]) -> list[Any]:
    f = doc.get("files")
    return f if isinstance(f, list) else []


def rerecord(doc: dict[str, Any], tree: dict[str, bytes], rel: str) -> None:
    """Make ``rel``'s file record say the file's current size and checksum."""
    data = tree.get(rel)
    for f in files_of(doc):
        if isinstance(f, dict) and f.get("path") == rel and data is not None:
            f["size"] = len(data)
            f["checksum"] = checksum(memoryview(bytearray(data)))


def edit_listed_file(
    tree: dict[str, bytes], rng: random.Random, listed: list[str]
) -> tuple[str, str]:
    """Change one listed file (JSON-valid edit for the state document); (path, what)."""
    rel = rng.choice(listed)
    if rel == STATE and rng.random() < 0.7:
        return rel, edit_state(tree, rng)
    tree[rel], what = damage(tree[rel], rng)
    return rel, f"{rel}: {what}"


def edit_manifest(tree: dict[str, bytes], rng: random.Random) -> str:
    """One or a few JSON-valid edits of the manifest, ``manifest_checksum`` left as it was."""
    doc = json.loads(tree[MANIFEST])
    whats = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        whats.append(manifest_edit(doc, tree, rng))
    tree[MANIFEST] = dumps_with_raw(doc, rng)
    return "; ".join(whats)


ODD_PATHS = [
    "../x",
    "/etc/passwd",
    "manifest.json",
    "gpu/img-0",
    "gpu/img-0.lz4",
    "criu//core-1.img",
    "criu/./core-1.img",
    "",
    ".",
    "criu/",
    "criu",
    "a\x00b",
    "\udcff",
    "\ud800",
    "gpu/.state.json.tmp",
]
"""File record paths that name no file, the wrong file, or no possible file."""

TOP_MEMBERS = [
    "va_base",
    "va_size",
    "streams",
    "compression",
    "format_version",
    "checksum",
    "created",
    "phases",
    "device",
]


def manifest_edit(doc: dict[str, Any], tree: dict[str, bytes], rng: random.Random) -> str:
    """One JSON-valid edit; works on what earlier edits of the same case left."""
    regions = regions_of(doc)
    files = files_of(doc)
    rdicts = [r for r in regions if isinstance(r, dict)]
    fdicts = [f for f in files if isinstance(f, dict)]
    op = rng.choice(
        ["swap_addr", "swap_addr", "region_field", "region_field", "region_field", "dup_region",
         "del_region", "shuffle", "file_field", "dup_file", "del_file", "rerecord", "rerecord",
         "top", "top", "job", "drop_member", "add_member", "any_leaf", "whitespace"]
    )  # fmt: skip
    if op == "swap_addr" and len(rdicts) >= 2:
        by_size: dict[Any, list[Any]] = {}
        for r in rdicts:
            if type(r.get("size")) is int:
                by_size.setdefault(r["size"], []).append(r)
        pairs = [v for v in by_size.values() if len(v) >= 2]
        if pairs and rng.random() < 0.5:
            a, b = rng.sample(rng.choice(pairs), 2)
        else:
            a, b = rng.sample(rdicts, 2)
        a["addr"], b["addr"] = b.get("addr"), a.get("addr")
        return "two regions' addrs swapped"
    if op == "region_field" and rdicts:
        r = rng.choice(rdicts)
        key = rng.choice(["addr", "size", "shard", "offset", "stored_size", "checksum"])
        r[key] = odd_values(rng, r.get(key))
        return f"a region's {key} set to {_show(r[key])}"
    if op == "dup_region" and regions:
        regions.insert(rng.randrange(len(regions) + 1), copy.deepcopy(rng.choice(regions)))
        return "a region record duplicated"
    if op == "del_region" and regions:
        regions.pop(rng.randrange(len(regions)))
        return "a region record removed"
    if op == "shuffle":
        rng.shuffle(regions)
        rng.shuffle(files)
        return "records reordered"
    if op == "file_field" and fdicts:
        f = rng.choice(fdicts)
        key = rng.choice(["path", "size", "checksum"])
        if key == "path":
            f[key] = rng.choice([*ODD_PATHS, rng.choice(fdicts).get("path")])
        else:
            f[key] = odd_values(rng, f.get(key))
        return f"a file's {key} set to {_show(f[key])}"
    if op == "dup_file" and files:
        files.insert(rng.randrange(len(files) + 1), copy.deepcopy(rng.choice(files)))
        return "a file record duplicated"
    if op == "del_file" and fdicts:
        f = rng.choice(fdicts)
        files.remove(f)
        path = f.get("path")
        if isinstance(path, str) and rng.random() < 0.5:
            tree.pop(path, None)
            return f"{path} deleted with its record"
        return f"the record of {_show(path)} removed"
    if op == "rerecord":
        listed = [f["path"] for f in fdicts if isinstance(f.get("path"), str) and f["path"] in tree]
        if listed:
            rel, what = edit_listed_file(tree, rng, listed)
            rerecord(doc, tree, rel)
            return what + "; its record updated"
    if op == "top":
        key = rng.choice([*TOP_MEMBERS, "regions", "files", "job"])
        if key == "compression":
            doc[key] = rng.choice(["none", "tar", "lz4", "gzip", "zlib", "bzip2", "", None, 1])
        elif key == "checksum":
            doc[key] = rng.choice(["crc32", "sha256", "", 0, None])
        elif key == "streams" and rng.random() < 0.5:
            doc[key] = rng.choice([0, 1, 2, 3, 4, 100, 10**6, 10**12, (1 << 63)])
        else:
            doc[key] = odd_values(rng, doc.get(key))
        return f"{key} set to {_show(doc[key])}"
    if op == "job" and isinstance(doc.get("job"), dict):
        return job_edit(doc["job"], rng)
    if op == "drop_member":
        # Not manifest_checksum: without it the manifest reads as an older one
        # (forged kind "downgrade").
        key = rng.choice(sorted(k for k in doc if k != "manifest_checksum"))
        del doc[key]
        return f"member {key} removed"
    if op == "add_member":
        doc[rng.choice(["future", "extra", "x"])] = odd_values(rng, 0)
        return "a member added"
    if op == "any_leaf":
        path, old = rng.choice(list(leaves(doc)))
        set_at(doc, path, odd_values(rng, old))
        return f"{'.'.join(map(str, path))} set"
    return "reformatted"  # whitespace, key order, escapes: same document


WELL_TYPED_JOB: dict[str, Any] = {
    "id": "other-job",
    "cmd": ["sh", "-c", "rm -rf /"],
    "cwd": "/tmp",
    "driver": "system",
    "segment_name": "cedana-gpu.other",
    "segment_size": 1 << 30,
    "generation": 0,
    "geometry": {"ring_slots": 1},
    "persistent_mounts": ["/", "/etc"],
    "uid": 0,
    "gid": 0,
    "gpu": False,
    "checkpoint_id": "ck-other",
}
"""Other values the schema allows for the job's members."""


def job_edit(job: dict[str, Any], rng: random.Random) -> str:
    key = rng.choice(sorted(WELL_TYPED_JOB))
    job[key] = (
        copy.deepcopy(WELL_TYPED_JOB[key]) if rng.random() < 0.6 else odd_values(rng, job.get(key))
    )
    return f"job.{key} set to {_show(job[key])}"


def forge(tree: dict[str, bytes], rng: random.Random) -> tuple[str, str]:
    """An edit made by someone who recomputes ``manifest_checksum``; (kind, what)."""
    doc = json.loads(tree[MANIFEST])
    regions = regions_of(doc)
    files = files_of(doc)
    kind = rng.choice(["move", "rerecord", "drop", "job", "downgrade", "layout", "layout", "layout",
                       "files", "files", "top", "types"])  # fmt: skip
    if kind == "move":
        if rng.random() < 0.5:
            a, b = rng.sample(regions, 2)
            a["addr"], b["addr"] = b["addr"], a["addr"]
            what = "two regions' addrs swapped"
        else:
            r = rng.choice(regions)
            r["addr"] = rng.choice(
                [
                    VA_BASE,
                    VA_BASE + VA_SIZE - r["size"],
                    r["addr"] + 1,
                    rng.randrange(VA_BASE, VA_BASE + VA_SIZE),
                ]
            )
            what = f"a region moved to {r['addr']:#x}"
    elif kind == "rerecord":
        rel, what = edit_listed_file(tree, rng, [f["path"] for f in files])
        rerecord(doc, tree, rel)
        what += "; its record updated"
    elif kind == "drop":
        f = files.pop(rng.randrange(len(files)))
        del tree[f["path"]]
        what = f"{f['path']} deleted with its record"
    elif kind == "job":
        what = job_edit(doc["job"], rng)
    elif kind == "downgrade":
        del doc["manifest_checksum"]
        what = "manifest_checksum removed; " + manifest_edit(doc, tree, rng)
        tree[MANIFEST] = dumps_with_raw(doc, rng)
        return kind, what
    elif kind == "layout":
        op = rng.choice(["field", "field", "field", "dup", "del", "shard_offset"])
        if op == "field":
            r = rng.choice(regions)
            key = rng.choice(["size", "shard", "offset", "stored_size", "checksum"])
            r[key] = odd_values(rng, r[key])
            what = f"a region's {key} set to {_show(r[key])}"
        elif op == "dup":
            regions.insert(rng.randrange(len(regions) + 1), dict(rng.choice(regions)))
            what = "a region record duplicated"
        elif op == "del":
            regions.pop(rng.randrange(len(regions)))
            what = "a region record removed"
        else:
            a, b = rng.sample(regions, 2)
            a["shard"], a["offset"], b["shard"], b["offset"] = (
                b["shard"],
                b["offset"],
                a["shard"],
                a["offset"],
            )
            what = "two regions' places in the shards swapped"
    elif kind == "files":
        f = rng.choice(files)
        key = rng.choice(["path", "size", "checksum", "dup", "del"])
        if key == "path":
            f["path"] = rng.choice(
                [g["path"] for g in files] + ["criu/none.img", "../x", "a\x00b", "\ud800"]
            )
        elif key == "dup":
            files.append(dict(f))
        elif key == "del":
            files.remove(f)  # the file stays: nothing it restores changes
        else:
            f[key] = odd_values(rng, f[key])
        what = f"a file record's {key} edited"
    elif kind == "top":
        key = rng.choice(TOP_MEMBERS)
        if key == "streams":
            doc[key] = rng.choice([0, 1, 2, 3, 4, 100, 10**6, 10**12])
        elif key == "compression":
            doc[key] = rng.choice(["none", "tar", "lz4", "gzip", "zlib", "bzip2"])
        else:
            doc[key] = odd_values(rng, doc[key])
        what = f"{key} set to {_show(doc[key])}"
    else:  # types: any member (but the job's: kind "job") to a value of another type
        path, old = rng.choice(
            [p for p in leaves(doc) if p[0][0] not in ("job", "manifest_checksum")]
        )
        set_at(doc, path, odd_type(rng, old))
        what = f"{'.'.join(map(str, path))} set to an odd value"
    doc["manifest_checksum"] = spec_digest(_plain(doc))
    tree[MANIFEST] = dumps_with_raw(doc, rng)
    return kind, what


def _plain(doc: Any) -> Any:
    """``doc`` as the reader will parse it (``Raw`` values replaced by what they say)."""
    if isinstance(doc, Raw):
        try:
            return json.loads(doc.text)
        except (ValueError, RecursionError):
            return None  # the reader refuses it before the checksum matters
    if isinstance(doc, dict):
        return {k: _plain(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_plain(v) for v in doc]
    return doc


# state document edits --------------------------------------------------------------


def edit_state(tree: dict[str, bytes], rng: random.Random) -> str:
    """A JSON-valid edit of gpu/state.json (if it is still JSON); returns what it did."""
    try:
        doc = json.loads(tree[STATE])
    except (KeyError, ValueError, RecursionError):
        return "state.json not JSON: left"
    found = list(leaves(doc))
    if not found:
        return "state.json not a document: left"
    op = rng.choice(
        ["leaf", "leaf", "leaf", "bump", "del", "dup", "swap", "nparams", "chunk_ref", "extra"]
    )
    try:
        what = _state_edit(doc, op, found, rng)
    except (KeyError, IndexError, TypeError, AttributeError):  # an earlier edit moved it
        path, old = rng.choice(found)
        set_at(doc, path, odd_values(rng, old))
        what = f"{'.'.join(map(str, path))} set"
    tree[STATE] = dumps_with_raw(doc, rng)
    return f"state.json: {what}"


def _state_edit(doc: Any, op: str, found: list[tuple[Any, Any]], rng: random.Random) -> str:
    if op == "bump":
        path, n = rng.choice([(p, v) for p, v in found if type(v) is int])
        set_at(doc, path, n + rng.choice([1, -1, 4096]))
        return f"{'.'.join(map(str, path))} changed by a little"
    if op == "del":
        path, _ = rng.choice(found)
        del_at(doc, path)
        return f"{'.'.join(map(str, path))} removed"
    if op == "dup":
        path, items = rng.choice([(p, v) for p, v in found if isinstance(v, list) and v])
        items.append(copy.deepcopy(rng.choice(items)))
        return f"an item of {'.'.join(map(str, path))} duplicated"
    if op == "swap":
        rows = doc["allocations"]
        i, j = rng.sample(range(len(rows)), 2)
        rows[i][0], rows[j][0] = rows[j][0], rows[i][0]
        return "two allocations' addrs swapped"
    if op == "nparams":
        doc["functions"][0]["nparams"] = rng.choice([0, 2, 4, -1, -2, 4097])
        return "a function's nparams changed"
    if op == "chunk_ref":
        doc["allocations"][0][2] = rng.choice([1, 2, 1 << 63])
        return "an allocation's chunk index changed"
    if op == "extra":
        doc["future_member"] = odd_values(rng, 0)
        return "a member added"
    path, old = rng.choice(found)
    set_at(doc, path, odd_values(rng, old))
    return f"{'.'.join(map(str, path))} set"


def _show(v: Any) -> str:
    if isinstance(v, Raw):
        return f"<{len(v.text)} chars of JSON>"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# --- running a case ---------------------------------------------------------------


@dataclass
class Tally:
    refused: int = 0
    identical: int = 0
    wrong: int = 0
    """Accepted with a wrong result where that must never happen."""
    forged_undetectable: int = 0
    """Forged ``MAY_PASS`` edits accepted with a different result (by design)."""
    errors: int = 0
    """Anything but a CheckpointError: a traceback, or a hang."""
    failures: list[str] = field(default_factory=list)

    COUNTS = ("refused", "identical", "wrong", "forged_undetectable", "errors")

    @property
    def total(self) -> int:
        return sum(getattr(self, k) for k in self.COUNTS)

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.COUNTS}

    def add(self, other: Tally) -> None:
        for k in self.COUNTS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.failures += other.failures

    def line(self) -> str:
        return (
            f"{self.total} mutated checkpoints: {self.refused} refused, "
            f"{self.identical} accepted identical, {self.wrong} accepted wrong, "
            f"{self.forged_undetectable} forged undetectable, {self.errors} errors"
        )


class CaseHung(Exception):
    """A case ran past ``HANG_SECONDS``."""


@contextlib.contextmanager
def hang_guard(name: str, seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Fail a case that hangs: SIGALRM raises ``CaseHung`` in the main thread.

    (Where the alarm cannot get through, stuck in C, ``batch_guard``'s
    faulthandler ends the process with every thread's stack.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: batch_guard still holds
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CaseHung(f"{name}: no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


MEMORY_HEADROOM = 2 << 30
"""Address space the cases may take beyond what the process has: an edit that
makes a check allocate without bound fails as a MemoryError instead of taking
a shared machine's memory."""

FAILURE_POLL = 0.001
"""``shards._POLL`` during the cases: how soon a restore thread notices that
another failed (20 ms in the package). It changes nothing a check does; a
failing case then takes a millisecond of waiting instead of 20."""


@contextlib.contextmanager
def batch_guard(cases: int) -> Iterator[None]:
    """What every batch of cases runs under: a memory limit, a last-resort hang
    guard (faulthandler: the stacks, then exit), the short failure poll."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        now = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = now + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    poll = shards._POLL
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    faulthandler.dump_traceback_later(2 * HANG_SECONDS + cases, exit=True)
    shards._POLL = FAILURE_POLL
    try:
        yield
    finally:
        shards._POLL = poll
        faulthandler.cancel_dump_traceback_later()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def materialize(base: Base, mutant: Mutant, work: Path) -> Path:
    """The mutant on disk, as a restore would be given it."""
    if base.archive is None:
        assert mutant.tree is not None
        ck = work / "ck"
        write_tree(mutant.tree, ck)
        return ck
    tar = work / "ck.tar"
    if mutant.archive is None:
        assert mutant.tree is not None
        mutant.archive = repack(base, mutant.tree)
    tar.write_bytes(mutant.archive)
    return tar


def repack(base: Base, tree: dict[str, bytes]) -> bytes:
    """The archive ``pack`` makes of ``tree``, made in memory from the base's archive.

    A member whose file is unchanged is copied from the base archive as it
    is; a changed one gets a new header (the base's, with the new size) and
    its data encoded as ``pack`` does (CRIU files through the codec); a file
    the base lacks is added, one it had and the tree lacks is left out.
    ``pack`` itself, per case, would spend most of the test's time in
    codec set-up and copy buffers (``test_repack_is_pack`` holds the two
    to the same bytes).
    """
    assert base.archive is not None
    compression = base.variant.compression
    ext = suffix(compression) if codec_of(compression) else ""
    out = bytearray()
    seen = set()
    for m in base.members:
        raw = base.archive[m.offset : m.offset_data + _padded(m.size)]
        if m.isdir():
            out += raw
            continue
        rel = (
            m.name[: -len(ext)]
            if ext and m.name.startswith("criu/") and m.name.endswith(ext)
            else m.name
        )
        seen.add(rel)
        if rel not in tree:
            continue
        data = tree[rel]
        if data == base.tree[rel]:
            out += raw
            continue
        out += _member(m, encode(compression, m.name, data))
    for rel in sorted(set(tree) - seen):
        data = tree[rel]
        name = rel + ext if ext and rel.startswith("criu/") else rel
        template = tarfile.TarInfo(name)
        template.mode, template.mtime = 0o600, base.members[0].mtime
        out += _member(template, encode(compression, name, data))
    out += bytes(2 * tarfile.BLOCKSIZE)
    return bytes(out)


def encode(compression: str, name: str, data: bytes) -> bytes:
    """A member's data as ``pack`` stores it: CRIU files through the codec, the rest as is."""
    c = compressor(compression) if name.startswith("criu/") else None
    return c.begin() + c.compress(data) + c.flush() if c else data


def _member(template: tarfile.TarInfo, data: bytes) -> bytes:
    ti = copy.copy(template)
    ti.size = len(data)
    header = ti.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    return header + data + bytes(_padded(len(data)) - len(data))


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def run_case(base: Base, family: str, seed: int, work: Path, counts: Tally) -> None:
    """Mutate, check, classify; a failure (traceback, two-line error, wrong result) is recorded."""
    name = f"{base.variant.name}/{family}/{seed}"
    rng = random.Random(name)
    mutant = mutate(base, family, rng)
    work.mkdir(parents=True)
    try:
        path = materialize(base, mutant, work)
        try:
            with hang_guard(name):
                got = restore_checks(base, path, work / "scratch")
        except CheckpointError as e:
            msg = str(e)
            if not msg or "\n" in msg:
                counts.failures.append(f"{name} ({mutant.what}): not one line: {msg!r}")
            counts.refused += 1
            return
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            counts.errors += 1
            counts.failures.append(f"{name} ({mutant.what}): {type(e).__name__}: {_short(e)}")
            return
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if got == base.expected:
        counts.identical += 1
    elif family == "forged" and mutant.kind in MAY_PASS:
        counts.forged_undetectable += 1
    else:
        counts.wrong += 1
        counts.failures.append(
            f"{name} ({mutant.what}): accepted with a wrong result: {diff(base.expected, got)}"
        )


def _short(e: BaseException) -> str:
    text = str(e).replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def diff(a: Outcome, b: Outcome) -> str:
    parts = []
    if a.device != b.device:
        parts.append("device bytes")
    if a.state != b.state:
        parts.append("state document")
    parts += [f"file {k}" for k in a.files if a.files[k] != b.files.get(k)]
    if a.job != b.job:
        parts.append("job")
    return ", ".join(parts) + " differ"


def run_cases(base: Base, family: str, seeds: range, work: Path) -> Tally:
    counts = Tally()
    with batch_guard(len(seeds)):
        for seed in seeds:
            run_case(base, family, seed, work / f"case-{seed}", counts)
    return counts


def replay(name: str, work: Path | None = None) -> Tally:
    """Run one case again by its name (``dir-lz4/forged/123``), e.g. from a failure message."""
    import tempfile

    variant, family, seed = name.split("/")
    with tempfile.TemporaryDirectory() as tmp:
        root = work or Path(tmp)
        base = build_base(VARIANT_BY_NAME[variant], root)
        counts = Tally()
        run_case(base, family, int(seed), root / "replay", counts)
        return counts


# --- the count of every run, one line at the end of the session ----------------------

TOTALS = Tally()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect each fuzz test's counts (xdist sends user_properties to the controller)."""
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == "checkpoint_fuzz" and isinstance(value, dict):
            TOTALS.add(Tally(**value))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TOTALS.total:
        terminalreporter.write_line(f"checkpoint fuzz: {TOTALS.line()}")
