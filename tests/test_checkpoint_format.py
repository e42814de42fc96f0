"""The checkpoint format library (cedana_gpu.checkpoint) on a fake device.

The "device" is a bytearray at a fake base address; read_fn/write_fn copy
from/to it and the checksum is zlib.crc32 (the real one is the native
CRC32C). Small chunk sizes make a few MiB exercise chunking and packing.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import re
import shutil
import threading
import zlib
from pathlib import Path

import pytest

from cedana_gpu.checkpoint import (
    COMPRESSIONS,
    FORMAT_VERSION,
    CheckpointError,
    CorruptCheckpoint,
    JobInfo,
    Manifest,
    Progress,
    RegionRecord,
    check_checkpoint,
    check_compression,
    file_records,
    is_archive,
    load_manifest,
    open_checkpoint,
    pack,
    partial_path,
    read_regions,
    save_manifest,
    shard_name,
    verify_files,
    write_regions,
)
from cedana_gpu.checkpoint.codec import StreamReader, StreamWriter
from cedana_gpu.checkpoint.manifest import manifest_digest
from cedana_gpu.checkpoint.shards import plan
from cedana_gpu.checkpoint.state_doc import Counts, GpuState, Segment, save_state

BASE = 0x7F00_0000_0000
DEVICE_SIZE = 6 << 20
CHUNK = 256 << 10
ALGO = "crc32-test"


def crc(buf: memoryview) -> int:
    return zlib.crc32(buf)


class FakeDevice:
    def __init__(self, size: int = DEVICE_SIZE, seed: int = 1) -> None:
        self.mem = bytearray(size)
        self.rng = random.Random(seed)

    def fill(self, addr: int, size: int) -> None:
        off = addr - BASE
        # Half random, half runs of one byte: compressible and not.
        half = size // 2
        self.mem[off : off + half] = self.rng.randbytes(half)
        self.mem[off + half : off + size] = bytes([self.rng.randrange(256)]) * (size - half)

    def read(self, addr: int, size: int, dst: memoryview) -> int:
        off = addr - BASE
        dst[:] = self.mem[off : off + size]
        return zlib.crc32(dst)

    def write(self, addr: int, src: memoryview) -> None:
        off = addr - BASE
        self.mem[off : off + len(src)] = src


def make_regions(dev: FakeDevice) -> list[tuple[int, int]]:
    """A big region (> chunk), mid-sized ones, and many tiny ones, with gaps."""
    rng = random.Random(7)
    regions: list[tuple[int, int]] = []
    addr = BASE + 4096
    for size in [3 * CHUNK + 12345, 100_000, 1, CHUNK, 70_000]:
        regions.append((addr, size))
        addr += size + rng.randrange(0, 5000)
    for _ in range(400):
        size = rng.randrange(1, 600)
        regions.append((addr, size))
        addr += size + rng.randrange(0, 64)
    assert addr < BASE + DEVICE_SIZE
    for a, s in regions:
        dev.fill(a, s)
    return regions


def minimal_state() -> GpuState:
    """A GPU state document with no handles: all the restore's check needs here."""
    return GpuState(
        job_id="j1",
        app_job_id="j1",
        segment=Segment("cedana-gpu.j1", 1 << 20, 256, 8, 1 << 20, 60_000),
        generation=1,
        va_base=BASE,
        va_size=DEVICE_SIZE,
        granularity=65536,
        driver_version=12040,
        async_error=0,
        counts=Counts(allocations=0, bytes=0, chunks=0, modules=0),
    )


def dump(
    ckpt: Path, dev: FakeDevice, regions: list[tuple[int, int]], compression: str, streams: int
) -> Manifest:
    ckpt.mkdir()
    (ckpt / "gpu" / "modules").mkdir(parents=True)
    (ckpt / "criu").mkdir()
    save_state(minimal_state(), ckpt / "gpu")  # check_checkpoint reads it against its schema
    (ckpt / "gpu" / "modules" / "0.img").write_bytes(os.urandom(3000))
    (ckpt / "criu" / "pages-1.img").write_bytes(b"\0" * 100_000 + os.urandom(5000))
    (ckpt / "criu" / "empty.img").write_bytes(b"")
    (ckpt / "criu" / "dump.log").write_text("dump ok\n")
    records = write_regions(ckpt / "gpu", regions, dev.read, streams, compression, chunk_size=CHUNK)
    m = Manifest(
        job=JobInfo(
            id="j1",
            cmd=["python", "train.py"],
            segment_name="cedana-gpu.j1",
            segment_size=1 << 20,
            generation=1,
            geometry={"ring_slots": 256, "nchannels": 8, "staging_size": 1 << 20},
            persistent_mounts=["/cache"],
        ),
        va_base=BASE,
        va_size=DEVICE_SIZE,
        compression=compression,
        streams=streams,
        regions=records,
        files=file_records(ckpt, crc),
        device={"name": "fake", "memory": DEVICE_SIZE},
        phases={"gpu_dump": 0.1},
        checksum=ALGO,
    )
    save_manifest(m, ckpt)
    return m


def finish(ckpt: Path, compression: str) -> Path:
    """What the CLI does after the manifest: pack when the compression says so."""
    if not is_archive(compression):
        return ckpt
    out = ckpt.parent / f"{ckpt.name}.tar"
    pack(ckpt, out, compression)
    return out


def restore(path: Path, scratch: Path) -> FakeDevice:
    d, m = check_checkpoint(path, scratch, crc, algorithm=ALGO)
    target = FakeDevice()
    read_regions(
        d / "gpu", m.regions, target.write, m.streams, m.compression, crc, chunk_size=CHUNK
    )
    return target


def same_regions(a: FakeDevice, b: FakeDevice, regions: list[tuple[int, int]]) -> None:
    """b holds a's bytes in the regions and zeros everywhere else."""
    expected = bytearray(len(a.mem))
    for addr, size in regions:
        off = addr - BASE
        expected[off : off + size] = a.mem[off : off + size]
    if b.mem != expected:
        bad = next(i for i in range(len(expected)) if b.mem[i] != expected[i])
        raise AssertionError(f"device differs at 0x{BASE + bad:x}")


@pytest.mark.parametrize("streams", [1, 4])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(tmp_path: Path, compression: str, streams: int) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    dump(tmp_path / "ck", dev, regions, compression, streams)
    path = finish(tmp_path / "ck", compression)
    if is_archive(compression):
        assert path.is_file() and not partial_path(path).exists()
        # The archive alone is enough: the directory it came from is gone.
        shutil.rmtree(tmp_path / "ck")
    target = restore(path, tmp_path / "scratch")
    same_regions(dev, target, regions)
    # CRIU files come back byte for byte (decompressed from the archive).
    d = tmp_path / "scratch" if is_archive(compression) else path
    assert (d / "criu" / "dump.log").read_text() == "dump ok\n"
    assert (d / "criu" / "empty.img").read_bytes() == b""


def test_manifest_layout(tmp_path: Path) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    m = dump(tmp_path / "ck", dev, regions, "lz4", 4)
    names = sorted(p.name for p in (tmp_path / "ck" / "gpu").glob("img-*"))
    assert names == [shard_name(i, "lz4") for i in range(4)] == [f"img-{i}.lz4" for i in range(4)]
    # Records cover the regions exactly, chunks at most CHUNK, shards balanced by bytes.
    total = sum(s for _, s in regions)
    assert sum(r.size for r in m.regions) == total
    assert max(r.size for r in m.regions) <= CHUNK
    per_shard = [sum(r.size for r in m.regions if r.shard == i) for i in range(4)]
    assert max(per_shard) - min(per_shard) <= total // 4 + 1 - min(per_shard) + 1
    assert max(per_shard) <= -(-total // 4)
    # stored sizes add up to each shard's file size.
    for i in range(4):
        size = (tmp_path / "ck" / "gpu" / shard_name(i, "lz4")).stat().st_size
        assert sum(r.stored_size for r in m.regions if r.shard == i) == size
    files = {f.path for f in m.files}
    assert files == {
        "gpu/state.json",
        "gpu/modules/0.img",
        "criu/pages-1.img",
        "criu/empty.img",
        "criu/dump.log",
    }
    loaded = load_manifest(tmp_path / "ck")
    assert loaded == m
    # The JSON round trip keeps unknown keys.
    d = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    d["future_key"] = {"x": 1}
    d["job"]["future_job_key"] = 2
    # A later writer's document carries its own checksum over what it wrote.
    d["manifest_checksum"] = manifest_digest(d)
    again = Manifest.from_json(d)
    assert again.extra == {"future_key": {"x": 1}}
    assert again.to_json()["job"]["future_job_key"] == 2


def test_plan_balances_and_splits() -> None:
    runs = plan([(0, 10), (100, 1000), (5000, 1)], 3, chunk_size=64)
    sizes = [sum(s for _, s in r) for r in runs]
    assert sum(sizes) == 1011 and max(sizes) - min(sizes) <= 64
    assert all(s <= 64 for r in runs for _, s in r)
    pieces = [p for r in runs for p in r]
    # Contiguous pieces of each region, in order.
    assert pieces[0] == (0, 10) and pieces[-1] == (5000, 1)
    assert plan([(0, 5)], 4, 64)[0] == [(0, 2)]  # tiny totals still spread; no empty pieces
    assert all(s > 0 for r in plan([(0, 0), (8, 3)], 4, 64) for _, s in r)


@pytest.mark.parametrize("compression", ["none", "lz4", "gzip"])
def test_flipped_byte_in_shard(tmp_path: Path, compression: str) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    ck = tmp_path / "ck"
    m = dump(ck, dev, regions, compression, 4)
    shard = ck / "gpu" / shard_name(1, compression)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40
    shard.write_bytes(data)
    verify_files(ck, m, crc)  # structure and files are fine: contents are checked on read
    target = FakeDevice()
    with pytest.raises(CorruptCheckpoint, match=re.escape(shard_name(1, compression))) as e:
        read_regions(ck / "gpu", m.regions, target.write, 4, compression, crc, chunk_size=CHUNK)
    assert "\n" not in str(e.value)
    assert "0x" in str(e.value)  # names the address


def test_checksum_checked_before_write(tmp_path: Path) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    ck = tmp_path / "ck"
    m = dump(ck, dev, regions, "none", 1)
    bad = m.regions[len(m.regions) // 2]
    shard = ck / "gpu" / "img-0"
    data = bytearray(shard.read_bytes())
    data[bad.offset] ^= 1
    shard.write_bytes(data)
    written: list[int] = []
    with pytest.raises(CorruptCheckpoint, match=f"0x{bad.addr:x}"):
        read_regions(
            ck / "gpu",
            m.regions,
            lambda a, v: written.append(a),
            1,
            "none",
            crc,
            chunk_size=CHUNK,
        )
    assert bad.addr not in written


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_missing_shard(tmp_path: Path, compression: str) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    ck = tmp_path / "ck"
    m = dump(ck, dev, regions, compression, 4)
    (ck / "gpu" / shard_name(2, compression)).unlink()
    with pytest.raises(
        CorruptCheckpoint, match=re.escape(f"gpu/{shard_name(2, compression)} is missing")
    ):
        verify_files(ck, m, crc)
    with pytest.raises(CorruptCheckpoint, match=re.escape(shard_name(2, compression))):
        read_regions(
            ck / "gpu", m.regions, FakeDevice().write, 4, compression, crc, chunk_size=CHUNK
        )


@pytest.mark.parametrize("compression", ["none", "lz4", "gzip", "zlib"])
def test_truncated_shard(tmp_path: Path, compression: str) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    ck = tmp_path / "ck"
    m = dump(ck, dev, regions, compression, 2)
    shard = ck / "gpu" / shard_name(0, compression)
    shard.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(CorruptCheckpoint, match="truncated or corrupt"):
        verify_files(ck, m, crc)
    with pytest.raises(CorruptCheckpoint, match=re.escape(shard_name(0, compression))):
        read_regions(
            ck / "gpu", m.regions, FakeDevice().write, 2, compression, crc, chunk_size=CHUNK
        )


@pytest.mark.parametrize("compression", ["tar", "lz4"])
def test_truncated_archive(tmp_path: Path, compression: str) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    dump(tmp_path / "ck", dev, regions, compression, 2)
    tar = finish(tmp_path / "ck", compression)
    data = tar.read_bytes()
    assert len(data) % 512 == 0
    for cut in (len(data) - 1, len(data) - 1024, len(data) // 2, len(data) // 2 // 512 * 512, 700):
        bad = tmp_path / f"cut-{cut}"
        bad.write_bytes(data[:cut])
        scratch = tmp_path / f"scratch-{cut}"
        with pytest.raises(CorruptCheckpoint) as e:
            open_checkpoint(bad, scratch)
        assert "\n" not in str(e.value)
        assert not scratch.exists()  # nothing left behind
    # A flipped byte in a CRIU file inside the archive: caught by the file checksums.
    member = data.find(b"dump ok\n") if compression == "tar" else -1
    if member >= 0:
        flipped = bytearray(data)
        flipped[member] ^= 1
        bad = tmp_path / "flipped"
        bad.write_bytes(flipped)
        with pytest.raises(CorruptCheckpoint, match=re.escape("criu/dump.log")):
            check_checkpoint(bad, tmp_path / "scratch-flip", crc)


def test_archive_detected_by_content(tmp_path: Path) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    dump(tmp_path / "ck", dev, regions, "gzip", 1)
    tar = finish(tmp_path / "ck", "gzip")
    renamed = tmp_path / "no-extension"
    tar.rename(renamed)
    target = restore(renamed, tmp_path / "scratch")
    same_regions(dev, target, regions)
    # A directory named like an archive is still a directory.
    odd = tmp_path / "looks.tar"
    (tmp_path / "ck").rename(odd)
    assert open_checkpoint(odd, tmp_path / "unused") == odd
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 2000)
    with pytest.raises(CheckpointError, match="neither a checkpoint directory nor"):
        open_checkpoint(junk, tmp_path / "s2")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        open_checkpoint(tmp_path / "nothing", tmp_path / "s3")


def test_newer_format(tmp_path: Path) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    ck = tmp_path / "ck"
    dump(ck, dev, regions, "tar", 1)
    d = json.loads((ck / "manifest.json").read_text())
    d["format_version"] = FORMAT_VERSION + 1
    (ck / "manifest.json").write_text(json.dumps(d))
    msg = (
        f"checkpoint format {FORMAT_VERSION + 1} is newer than this cedana-gpu supports "
        f"({FORMAT_VERSION}): upgrade cedana-gpu"
    )
    with pytest.raises(CheckpointError) as e:
        load_manifest(ck)
    assert str(e.value) == msg
    assert not isinstance(e.value, CorruptCheckpoint)
    # Also refused from inside an archive, before anything is unpacked.
    tar = finish(ck, "tar")
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(tar, tmp_path / "scratch")
    assert str(e.value) == msg


def test_bad_manifests(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=re.escape("no manifest.json")):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 1, ')
    with pytest.raises(CorruptCheckpoint, match="not valid JSON"):
        load_manifest(tmp_path)
    good = Manifest(
        job=JobInfo(id="j", cmd=["x"], segment_name="s", segment_size=1, generation=1),
        va_base=0,
        va_size=0,
        compression="none",
        streams=1,
    ).to_json()
    for key in ("job", "va_base", "compression", "streams", "regions", "files"):
        d = dict(good)
        del d[key]
        (tmp_path / "manifest.json").write_text(json.dumps(d))
        with pytest.raises(CorruptCheckpoint, match=f"no '{key}'") as e:
            load_manifest(tmp_path)
        assert "\n" not in str(e.value)
    d = json.loads(json.dumps(good))
    del d["job"]["segment_name"]
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(CorruptCheckpoint, match="no 'segment_name'"):
        load_manifest(tmp_path)
    d = dict(good, streams="4")
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(CorruptCheckpoint, match="'streams' is not an integer"):
        load_manifest(tmp_path)


def test_unknown_compression(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown compression 'bzip2': use one of none"):
        check_compression("bzip2")
    with pytest.raises(CheckpointError, match="unknown compression 'bzip2'"):
        write_regions(tmp_path / "gpu", [(BASE, 10)], FakeDevice().read, 1, "bzip2")
    assert not (tmp_path / "gpu").exists()
    good = Manifest(
        job=JobInfo(id="j", cmd=["x"], segment_name="s", segment_size=1, generation=1),
        va_base=0,
        va_size=0,
        compression="bzip2",
        streams=1,
    )
    save_manifest(good, tmp_path)
    with pytest.raises(CheckpointError, match="unknown compression 'bzip2'"):
        load_manifest(tmp_path)


def test_file_checksum_and_size_mismatch(tmp_path: Path) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    ck = tmp_path / "ck"
    m = dump(ck, dev, regions, "none", 2)
    p = ck / "gpu" / "state.json"
    original = p.read_bytes()
    p.write_text('{"handles": [1]}')
    with pytest.raises(CorruptCheckpoint, match=re.escape("gpu/state.json has")):
        verify_files(ck, m, crc)
    p.write_bytes(original.replace(b'"j1"', b'"j2"', 1))  # same size, other bytes
    with pytest.raises(
        CorruptCheckpoint, match=re.escape("gpu/state.json does not match its checksum")
    ):
        verify_files(ck, m, crc)
    p.unlink()
    with pytest.raises(CorruptCheckpoint, match=re.escape("gpu/state.json is missing")):
        verify_files(ck, m, crc)
    with pytest.raises(CheckpointError, match="checksums are crc32-test"):
        verify_files(ck, m, crc, algorithm="crc32c")


def test_bad_region_layout(tmp_path: Path) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    ck = tmp_path / "ck"
    m = dump(ck, dev, regions, "none", 2)
    r = m.regions[3]
    m.regions[3] = RegionRecord(r.addr, r.size, r.shard, r.offset + 1, r.stored_size, r.checksum)
    with pytest.raises(CorruptCheckpoint, match="expected"):
        verify_files(ck, m, crc)
    m.regions[3] = RegionRecord(r.addr, r.size, 5, r.offset, r.stored_size, r.checksum)
    with pytest.raises(CorruptCheckpoint, match="shard 5 of 2"):
        verify_files(ck, m, crc)
    m.regions[3] = r
    m.va_size = 4096
    with pytest.raises(CorruptCheckpoint, match="outside the checkpoint's address range"):
        verify_files(ck, m, crc)


def test_read_fn_failure_propagates(tmp_path: Path) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    calls = 0

    def failing(addr: int, size: int, dst: memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls == 50:
            raise RuntimeError("device fell off the bus")
        return dev.read(addr, size, dst)

    with pytest.raises(RuntimeError, match="fell off"):
        write_regions(tmp_path / "gpu", regions, failing, 4, "lz4", chunk_size=CHUNK)
    assert threading.active_count() < 5  # every shard thread ended


def test_write_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "gpu").write_text("not a directory")
    with pytest.raises(CheckpointError) as e:
        write_regions(tmp_path / "gpu", [(BASE, 100)], FakeDevice().read, 1, "none")
    assert "\n" not in str(e.value)


def test_stream_codecs_small_reads(tmp_path: Path) -> None:
    data = os.urandom(50_000) + b"\0" * 300_000
    for comp in ("none", "lz4", "gzip", "zlib"):
        p = tmp_path / comp
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
        w = StreamWriter(fd, comp)
        n = w.start() + w.write(data[:1000]) + w.write(data[1000:]) + w.finish()
        os.close(fd)
        assert n == p.stat().st_size
        fd = os.open(p, os.O_RDONLY)
        r = StreamReader(fd, comp)
        out = bytearray(len(data))
        pos = 0
        for step in (1, 7, 4096, 1 << 20):
            got = r.readinto(memoryview(out)[pos : pos + step])
            pos += got
        assert pos == len(data)
        r.finish()
        os.close(fd)
        assert out == data


def test_progress_draws_only_on_a_tty() -> None:
    quiet = io.StringIO()
    p = Progress("gpu dump", 1000, stream=quiet)
    p.add(500)
    p.close()
    assert quiet.getvalue() == "" and p.done == 500

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    with Progress("gpu dump", 2 << 20, stream=tty, interval=0) as p:
        p.add(1 << 20)
        p.add(1 << 20)
    out = tty.getvalue()
    assert out.startswith("\rgpu dump  1.0 MiB / 2.0 MiB  50%")
    assert "2.0 MiB / 2.0 MiB  100%" in out and out.endswith("\n")
    assert "/s" in out


def test_progress_counts_dump_and_restore(tmp_path: Path) -> None:
    dev = FakeDevice()
    regions = make_regions(dev)
    total = sum(s for _, s in regions)
    p = Progress("dump", total, stream=io.StringIO())
    records = write_regions(tmp_path / "gpu", regions, dev.read, 3, "lz4", p, chunk_size=CHUNK)
    assert p.done == total
    q = Progress("restore", total, stream=io.StringIO())
    read_regions(tmp_path / "gpu", records, FakeDevice().write, 3, "lz4", crc, q, chunk_size=CHUNK)
    assert q.done == total


def test_manifest_checks_itself(tmp_path: Path) -> None:
    """Edits that keep every file consistent with the manifest are still refused:
    the manifest carries a SHA-256 over its own canonical JSON."""
    dev = FakeDevice()
    regions = [(BASE + 0x1000, 4096), (BASE + 0x3000, 4096)]
    for a, s in regions:
        dev.fill(a, s)
    dump(tmp_path / "ck", dev, regions, "none", 1)
    path = tmp_path / "ck" / "manifest.json"
    doc = json.loads(path.read_text())
    assert doc["manifest_checksum"] == manifest_digest(doc)
    # Two equal-sized regions' addresses swapped: every shard still checks out.
    a, b = doc["regions"][0], doc["regions"][1]
    a["addr"], b["addr"] = b["addr"], a["addr"]
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptCheckpoint, match="does not match its manifest_checksum"):
        load_manifest(tmp_path / "ck")
    # Formatting is not content: the same document written another way loads.
    a["addr"], b["addr"] = b["addr"], a["addr"]
    path.write_text(json.dumps(doc, indent=4, sort_keys=True))
    assert load_manifest(tmp_path / "ck").regions[0].addr == BASE + 0x1000
    doc["manifest_checksum"] = "crc32c:1234"
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptCheckpoint, match="not a sha256 checksum"):
        load_manifest(tmp_path / "ck")


def test_a_file_added_to_a_checkpoint_is_refused(tmp_path: Path) -> None:
    """CRIU reads every image in its directory: one the manifest does not
    list would be restored unchecked, so it is refused before anything starts."""
    dev = FakeDevice()
    dev.fill(BASE + 0x1000, 4096)
    ck = tmp_path / "ck"
    m = dump(ck, dev, [(BASE + 0x1000, 4096)], "none", 1)
    verify_files(ck, m, crc)
    (ck / "criu" / "extra-1.img").write_bytes(b"\x01" * 64)
    with pytest.raises(CorruptCheckpoint, match=r"criu/extra-1\.img is not listed in the manifest"):
        verify_files(ck, m, crc)


def test_early_writeback_is_asked_for_in_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards start their writeback as they grow (sync_file_range), one step at
    a time; what is written stays what was written."""
    from cedana_gpu.checkpoint import durable

    assert durable._sync_file_range is not None  # glibc has it on every Linux we run on
    calls: list[tuple[int, int]] = []
    real = durable._sync_file_range
    monkeypatch.setattr(durable, "WRITEBACK_STEP", 4096)
    monkeypatch.setattr(
        durable,
        "_sync_file_range",
        lambda fd, off, n, flags: calls.append((off, n)) or real(fd, off, n, flags),
    )
    dev = FakeDevice()
    regions = [(BASE + 0x1000, 20_000), (BASE + 0x10000, 30_000)]
    for a, s in regions:
        dev.fill(a, s)
    m = dump(tmp_path / "ck", dev, regions, "none", 1)
    assert calls and calls[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(calls))
    verify_files(tmp_path / "ck", m, crc)
    got = bytearray()
    read_regions(tmp_path / "ck" / "gpu", m.regions, lambda a, v: got.extend(v), 1, "none", crc)
    assert bytes(got) == bytes(
        dev.mem[0x1000 : 0x1000 + 20_000] + dev.mem[0x10000 : 0x10000 + 30_000]
    )
