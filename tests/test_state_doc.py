"""The checkpoint's metadata documents against their schemas, across the two languages.

gpu/state.json is written by the native controller (gpu/controller/state_doc.c)
and read back by it on restore; cedana_gpu.checkpoint.state_doc reads and
writes the same document in Python; both follow
cedana_gpu/checkpoint/schemas/gpu-state-v1.schema.json. Here: a document a
real export wrote (a job on the fake driver, driven through the ring) is
valid and loads in Python field for field; a document Python wrote (loaded,
edited, re-serialised) restores in C; a document the schema refuses is
refused by both sides in one line; a newer version is refused by both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dispatcher_proto import HOST_PINNED, Segment
from test_native_checkpoint import (
    CTX,
    CTX2,
    EV0,
    EV1,
    FUNC_ADD,
    FUNC_AXPY,
    MODULE,
    ON_DEVICE,
    PINNED,
    POOL,
    READWRITE,
    STREAM,
    Controller,
    alloc,
    dtoh,
    floats,
    htod,
    launch,
    load_module,
    new_controller,
    pattern,
    pool,
    vmm,
)

from cedana_gpu.checkpoint import schema as schema_mod
from cedana_gpu.checkpoint.manifest import FORMAT_VERSION, JobInfo, Manifest, RegionRecord
from cedana_gpu.checkpoint.schema import load_schema, validate
from cedana_gpu.checkpoint.state_doc import (
    STATE_FORMAT,
    STATE_VERSION,
    load_state,
    save_state,
)
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint
from cedana_gpu.paths import kernels_dir

REPO = Path(__file__).resolve().parent.parent
PIN_ID, PIN_SIZE = 5, 1 << 14
N = 512  # floats in the vectors the kernels run on


@pytest.fixture
def ctls() -> Iterator[list[Controller]]:
    made: list[Controller] = []
    yield made
    for c in made:
        c.quit()


class Dumped:
    """A frozen, exported job: where its state went and what it held."""

    def __init__(self, tmp: Path, job: str, va_base: int, va_size: int) -> None:
        self.job = job
        self.seg_name = f"cedana-gpu.{job}"
        self.state = tmp / "gpu"
        self.regions_dir = tmp / "regions"
        self.va_base, self.va_size = va_base, va_size
        self.allocs: dict[int, bytes] = {}
        self.vectors: tuple[int, int, int] = (0, 0, 0)
        self.alpha_addr = 0
        self.regions: list[list[int]] = []
        self.pin_data = b""

    @property
    def pin_path(self) -> Path:
        return Path(f"/dev/shm/{self.seg_name}.pin.{PIN_ID}")

    def recreate_pin(self) -> None:
        fd = os.open(self.pin_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, PIN_SIZE)
        os.pwrite(fd, self.pin_data, 0)
        os.close(fd)

    def open_for_restore(self, ctl: Controller, suffix: str) -> None:
        ctl.ok(
            "open",
            job_id=f"{self.job}-{suffix}",
            segment_name=self.seg_name,
            va_base=self.va_base,
            va_size=self.va_size,
            generation=2,
        )


def dump_job(ctls: list[Controller], tmp: Path) -> Dumped:
    """A job with two contexts, allocations, a module with two functions, an
    attribute and a global, a stream, events and pinned memory; frozen and exported."""
    job = f"t-sd-{uuid.uuid4().hex[:10]}"
    ctl = new_controller(ctls)
    ctl.ok("open", job_id=job)
    ctl.ok("start")
    seg = Segment(job)
    d = Dumped(tmp, job, seg.va_base, seg.va_size)
    seg.post("PRIMARY_RETAIN", CTX, 0, 0)
    seg.post("CTX_CREATE", CTX2, 0, 0, ctx=CTX)
    for i, size in enumerate([100, 4096, 70_000, 1 << 20]):
        ctx = CTX2 if i == 1 else CTX
        p = alloc(seg, size, ctx)
        d.allocs[p] = pattern(i, size)
        htod(seg, p, d.allocs[p], ctx)
    load_module(seg, (kernels_dir() / "vector_add.fake.so").read_bytes())
    for fn, name in ((FUNC_ADD, b"vector_add"), (FUNC_AXPY, b"axpy")):
        assert seg.call("MODULE_GET_FUNCTION", MODULE, fn, name, ctx=CTX).result == 0
    r = seg.call("MODULE_GET_GLOBAL", MODULE, 0, b"axpy_alpha", ctx=CTX)
    assert r.result == 0
    d.alpha_addr = r.ret[0]
    htod(seg, d.alpha_addr, floats([0.5]))
    seg.post("FUNC_SET_ATTRIBUTE", FUNC_ADD, 8, 2048, ctx=CTX)
    seg.post("STREAM_CREATE", STREAM, 0, 1, -1, 0, 0, ctx=CTX)
    seg.post("EVENT_CREATE", EV0, 0, 0, 0, 0, ctx=CTX)
    seg.post("EVENT_CREATE", EV1, 0, 0, 2, 0, ctx=CTX)
    d.pin_data = pattern(77, PIN_SIZE)
    d.recreate_pin()
    assert seg.call("HOST_REGISTER", 0, PIN_SIZE, PIN_ID, 0, ctx=CTX).result == 0
    va, vb, vc = (alloc(seg, 4 * N) for _ in range(3))
    htod(seg, va, floats([float(i) for i in range(N)]))
    htod(seg, vb, floats([2.0 * i for i in range(N)]))
    d.vectors = (va, vb, vc)
    seg.call("EVENT_RECORD", EV0, STREAM, 0, 0, 0, ctx=CTX)
    assert seg.call("STREAM_SYNCHRONIZE", STREAM, 0, 0, 0, 0, 0, ctx=CTX).result == 0
    # The job's own VMM: a reservation with one physical allocation mapped.
    gran = vmm(seg, "GRANULARITY", type=PINNED, location_type=ON_DEVICE)[0]
    base = vmm(seg, "RESERVE", size=2 * gran)[0]
    phys = vmm(seg, "CREATE", size=gran, type=PINNED, location_type=ON_DEVICE)[0]
    vmm(seg, "MAP", addr=base, size=gran, handle=phys)
    vmm(seg, "SET_ACCESS", addr=base, size=gran, naccess=1, access_flags=[READWRITE])
    # A memory pool with one block.
    pool(seg, "CREATE", handle=POOL)
    pool(seg, "ALLOC", handle=POOL, size=4096)

    ctl.ok("freeze")
    ctl.ok("export", dir=str(d.state))
    d.regions_dir.mkdir()
    d.regions = ctl.ok("dump_regions", dir=str(d.regions_dir))["regions"]
    seg.close()
    ctl.ok("close")  # removes the segment and the pinned file
    return d


def c_doc(d: Dumped) -> dict[str, Any]:
    return json.loads((d.state / "state.json").read_text())


def variant(d: Dumped, tmp: Path, name: str, doc: dict[str, Any]) -> Path:
    """A copy of the exported state directory whose state.json is ``doc``."""
    out = tmp / name
    shutil.copytree(d.state, out)
    (out / "state.json").write_text(json.dumps(doc))
    return out


# ---- the schemas ---------------------------------------------------------------------


def test_schemas_agree_with_both_sides() -> None:
    state = load_schema("gpu-state", STATE_VERSION)
    assert state["properties"]["format"]["const"] == STATE_FORMAT
    assert state["properties"]["version"]["const"] == STATE_VERSION
    manifest = load_schema("manifest", FORMAT_VERSION)
    assert manifest["properties"]["format_version"]["const"] == FORMAT_VERSION
    # The C side's constants are the schema's.
    header = (REPO / "gpu" / "controller" / "cgc_state_doc.h").read_text()
    assert re.search(rf"#define CGC_STATE_VERSION {STATE_VERSION}\b", header)
    assert f'#define CGC_STATE_FORMAT "{STATE_FORMAT}"' in header
    assert set(state["required"]) <= set(state["properties"])


def test_a_schema_keyword_the_validator_does_not_enforce_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "doc-v1.schema.json").write_text(
        json.dumps({"type": "object", "properties": {"a": {"type": "string", "format": "uri"}}})
    )
    monkeypatch.setattr(schema_mod, "SCHEMA_DIR", tmp_path)
    load_schema.cache_clear()
    try:
        with pytest.raises(ValueError, match="does not implement 'format'"):
            load_schema("doc", 1)
    finally:
        load_schema.cache_clear()


def test_manifest_written_by_python_is_valid() -> None:
    m = Manifest(
        job=JobInfo(id="j", cmd=["x"], segment_name="s", segment_size=1, generation=1),
        va_base=1 << 40,
        va_size=1 << 30,
        compression="lz4",
        streams=2,
        regions=[RegionRecord((1 << 40) + i * 4096, 4096, i % 2, 4096 * i, 9, i) for i in range(5)],
    )
    doc = json.loads(m.dumps())
    validate(doc, load_schema("manifest", FORMAT_VERSION), "manifest.json")
    doc["regions"][2]["stored_size"] = -1
    with pytest.raises(CorruptCheckpoint) as e:
        validate(doc, load_schema("manifest", FORMAT_VERSION), "manifest.json")
    assert str(e.value).startswith("manifest.json: regions[2]: 'stored_size' is -1, less than 0")


# ---- C writes, Python reads ------------------------------------------------------------


def test_document_written_by_c_is_valid_and_loads_in_python(
    ctls: list[Controller], tmp_path: Path
) -> None:
    d = dump_job(ctls, tmp_path)
    doc = c_doc(d)
    schema = load_schema("gpu-state", STATE_VERSION)
    validate(doc, schema, "state.json")
    # Both sides write every member the schema describes, and nothing else.
    assert set(doc) == set(schema["properties"])
    state = load_state(d.state)
    # Field for field: the Python model holds everything C wrote.
    assert state.to_json() == doc
    assert state.extra == {}
    assert state.segment.name == d.seg_name and state.va_base == d.va_base
    assert {f.name for f in state.functions} == {"vector_add", "axpy"}
    add = next(f for f in state.functions if f.minted == FUNC_ADD)
    assert (8, 2048) in add.attributes and add.nparams == len(add.params)
    assert [g.name for g in state.globals] == ["axpy_alpha"]
    assert state.globals[0].addr == d.alpha_addr
    assert {c.minted for c in state.contexts} == {CTX, CTX2}
    assert {s.minted for s in state.streams} == {STREAM}
    assert {e.minted for e in state.events} == {EV0, EV1}
    assert [(p.id, p.size) for p in state.pins] == [(PIN_ID, PIN_SIZE)]
    assert (d.state / state.modules[0].file).stat().st_size == state.modules[0].size
    # The job's allocations, its three vectors and the pool's block.
    assert len(state.allocations) == state.counts.allocations == len(d.allocs) + 4
    assert all(a.chunk < len(state.chunks) for a in state.allocations)
    assert [(m.size, m.access) for m in state.vmm_mappings] == [(state.granularity, READWRITE)]
    assert [p.id for p in state.vmm_physical] == [m.physical for m in state.vmm_mappings]
    assert len(state.vmm_reservations) == 1
    assert [p.minted for p in state.pools] == [POOL]
    assert [(b.pool, b.cached) for b in state.pool_blocks] == [(POOL, False)]


# ---- Python writes, C reads ------------------------------------------------------------


def test_document_written_by_python_restores_in_c(ctls: list[Controller], tmp_path: Path) -> None:
    d = dump_job(ctls, tmp_path)
    state = load_state(d.state)
    state.async_error = 700  # an edit the restore must carry to the job (ILLEGAL_ADDRESS)
    state.mint_regions = 7  # handle regions the job's processes hold: a later one claims past them
    py_dir = tmp_path / "py"
    shutil.copytree(d.state, py_dir)
    save_state(state, py_dir)
    written = (py_dir / "state.json").read_text()
    assert written != (d.state / "state.json").read_text()  # Python's own text
    assert load_state(py_dir).to_json() == state.to_json()

    d.recreate_pin()
    ctl = new_controller(ctls)
    d.open_for_restore(ctl, "py")
    ctl.ok("import", dir=str(py_dir))
    assert ctl.ok("load_regions", dir=str(d.regions_dir), regions=d.regions)["bad"] == []
    ctl.ok("start")
    seg = Segment(d.job)
    try:
        assert seg.async_error == 700
        assert seg.mint_regions == 7
        for p, data in d.allocs.items():
            assert dtoh(seg, p, len(data), CTX2 if len(data) == 4096 else CTX) == data
        va, vb, vc = d.vectors
        # Old function, stream and global handles and addresses work.
        launch(seg, FUNC_ADD, N, struct.pack("<QQQi", va, vb, vc, N), STREAM)
        launch(seg, FUNC_AXPY, N, struct.pack("<QQi", va, vc, N), STREAM)
        assert seg.call("STREAM_SYNCHRONIZE", STREAM, 0, 0, 0, 0, 0, ctx=CTX).result == 0
        got = struct.unpack(f"<{N}f", dtoh(seg, vc, 4 * N))
        assert list(got) == [3.5 * i for i in range(N)]
        r = seg.call("FUNC_GET_ATTRIBUTE", FUNC_ADD, 8, 0, ctx=CTX)
        assert r.result == 0 and r.ret[0] == 2048
        assert seg.call("EVENT_QUERY", EV1, 0, 0, 0, 0, ctx=CTX).result == 0
        r = seg.call("MEMCPY_HTOD", STREAM, va, 0, 4 * N, 0, HOST_PINNED, PIN_ID, 0, 0, ctx=CTX)
        assert r.result == 0
        assert dtoh(seg, va, 4 * N) == d.pin_data[: 4 * N]
    finally:
        seg.close()


# ---- refusals: both sides, one line ----------------------------------------------------


def _edit(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()


def test_schema_violations_are_refused_by_both_sides(
    ctls: list[Controller], tmp_path: Path
) -> None:
    d = dump_job(ctls, tmp_path)
    doc = c_doc(d)
    first_alloc = doc["allocations"][0]
    cases: dict[str, tuple[list[Any], Any, str, str]] = {
        "alloc_addr": (
            ["allocations", 0, 0],
            hex(first_alloc[0]),
            "allocations[0]: item 0 is not an integer",
            "allocation 0 is not [addr, size, chunk, context]",
        ),
        "no_streams": (["streams"], _DELETE, "no 'streams'", '"streams" is missing or not a list'),
        "stream_handle": (
            ["streams", 0, "minted"],
            2,
            "streams[0]: 'minted' is 2, less than 3",
            'stream 0: "minted" is missing or not a stream handle',
        ),
        "module_file": (
            ["modules", 0, "file"],
            "../../etc/passwd",
            "modules[0]: 'file' is \"../../etc/passwd\", which is not of the expected form",
            'module 0: "file" is missing or not a path inside the checkpoint',
        ),
        "context_refs": (
            ["contexts", 0, "refs"],
            "1",
            "contexts[0]: 'refs' is not an integer",
            'context 0: "refs" is missing or not a 32-bit integer',
        ),
        "columns": (
            ["chunk_fields"],
            ["size", "addr", "device", "slot_size"],
            "'chunk_fields' is",
            '"chunk_fields" is missing or not ["addr", "size", ...]',
        ),
        "params_count": (
            ["functions", 0, "params"],
            [[0, 8]],
            "functions[0]: 'params' has 1 items, 'nparams' says",
            'function 0: "params" is missing or not a list of nparams [offset, size] pairs',
        ),
        "alloc_chunk": (
            ["allocations", 0, 2],
            len(doc["chunks"]),
            f"allocations[0]: chunk {len(doc['chunks'])} is not listed",
            "allocation 0 is in chunk",
        ),
        "mint_regions": (
            ["mint_regions"],
            -1,
            "'mint_regions' is -1, less than 0",
            '"mint_regions" is missing or not an integer from 0 to 2147483647',
        ),
        "vmm_physical": (
            ["vmm_mappings", 0, "physical"],
            doc["vmm_physical"][0]["id"] + 1,
            f"physical allocation {doc['vmm_physical'][0]['id'] + 1} is not listed",
            "cannot map VMM physical allocation",
        ),
        "vmm_size": (
            ["vmm_reservations", 0, "size"],
            0,
            "vmm_reservations[0]: 'size' is 0, less than 1",
            'VMM reservation 0: "size" is missing or not a positive integer',
        ),
        "pool_block": (
            ["pool_blocks", 0, "pool"],
            POOL + 1,
            f"pool_blocks[0]: pool {POOL + 1} is not listed",
            "pool block 0",
        ),
        "app_job_id": (
            ["app_job_id"],
            "x" * 64,
            "'app_job_id' is longer than 63 characters",
            '"app_job_id" is missing or not a job id of 1 to 63 bytes',
        ),
    }
    ctl = new_controller(ctls)
    for name, (path, value, py_says, c_says) in cases.items():
        bad = variant(d, tmp_path, name, _edit(doc, path, value))
        with pytest.raises(CorruptCheckpoint) as e:
            load_state(bad)
        assert py_says in str(e.value), (name, str(e.value))
        assert "\n" not in str(e.value)
        d.recreate_pin()
        d.open_for_restore(ctl, name)
        r = ctl("import", dir=str(bad))
        assert r["rc"] != 0 and c_says in r["error"], (name, r)
        assert "\n" not in r["error"]
        ctl.ok("close")
        d.pin_path.unlink(missing_ok=True)


def test_versions_are_checked_by_both_sides(ctls: list[Controller], tmp_path: Path) -> None:
    d = dump_job(ctls, tmp_path)
    doc = c_doc(d)
    newer = variant(d, tmp_path, "newer", _edit(doc, ["version"], STATE_VERSION + 1))
    # Not corruption: a newer cedana-gpu wrote it.
    with pytest.raises(CheckpointError) as e:
        load_state(newer)
    assert not isinstance(e.value, CorruptCheckpoint)
    assert f"GPU state format {STATE_VERSION + 1} is newer" in str(e.value)
    assert "upgrade cedana-gpu" in str(e.value)
    zero = variant(d, tmp_path, "zero", _edit(doc, ["version"], 0))
    with pytest.raises(CorruptCheckpoint, match="'version' is 0, not a format version"):
        load_state(zero)
    other = variant(d, tmp_path, "other", _edit(doc, ["format"], "something-else"))
    with pytest.raises(CorruptCheckpoint, match="not a cedana-gpu GPU state"):
        load_state(other)

    ctl = new_controller(ctls)
    for name, says in (
        ("newer", f"format version {STATE_VERSION + 1}, newer than this controller understands"),
        ("zero", "has an unknown format version"),
        ("other", "is not a cedana-gpu GPU state"),
    ):
        d.open_for_restore(ctl, name)
        r = ctl("import", dir=str(tmp_path / name))
        assert r["rc"] != 0 and says in r["error"], (name, r)
        ctl.ok("close")


def test_a_document_without_mint_regions_restores(ctls: list[Controller], tmp_path: Path) -> None:
    """Documents written before handles were addresses lack ``mint_regions``:
    both sides read it as 0 (no process held a handle region then)."""
    d = dump_job(ctls, tmp_path)
    doc = c_doc(d)
    assert "mint_regions" in doc
    old = variant(d, tmp_path, "old", _edit(doc, ["mint_regions"], _DELETE))
    assert load_state(old).mint_regions == 0
    d.recreate_pin()
    ctl = new_controller(ctls)
    d.open_for_restore(ctl, "old")
    ctl.ok("import", dir=str(old))
    ctl.ok("start")
    seg = Segment(d.job)
    try:
        assert seg.mint_regions == 0
        assert seg.call("STREAM_SYNCHRONIZE", STREAM, 0, 0, 0, 0, 0, ctx=CTX).result == 0
    finally:
        seg.close()
