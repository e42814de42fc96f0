"""The driver engine's parts that need no job: CRIU's page images in shards, the
GPU placement of a restore, what a driver offers of the checkpoint API, the
checkpoint's record of its engine."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from cedana_gpu import engines
from cedana_gpu.checkpoint import JobInfo, Manifest, load_manifest, save_manifest
from cedana_gpu.checkpoint.criu_pages import PageFile, layout, pack_pages, unpack_pages
from cedana_gpu.checkpoint.shards import SHARD_DIR, shard_name
from cedana_gpu.cr import driver_api, driver_state
from cedana_gpu.cr.driver_state import Gpu, GpuMapError, parse_gpu_map, plan_pairs
from cedana_gpu.errors import CheckpointError, CorruptCheckpoint


def crc(view: memoryview) -> int:
    return zlib.crc32(view)


def make_pages(directory: Path, sizes: list[int]) -> dict[str, bytes]:
    criu = directory / "criu"
    criu.mkdir(parents=True)
    (criu / "inventory.img").write_bytes(b"inventory")
    out = {}
    for i, size in enumerate(sizes, start=1):
        data = os.urandom(size // 2) + bytes(size - size // 2)  # half random, half zeros
        (criu / f"pages-{i}.img").write_bytes(data)
        out[f"pages-{i}.img"] = data
    return out


@pytest.mark.parametrize("streams", [1, 4])
@pytest.mark.parametrize("compression", ["none", "tar", "lz4", "gzip", "zlib"])
def test_page_images_round_trip_through_shards(
    tmp_path: Path, compression: str, streams: int
) -> None:
    ckpt = tmp_path / "ckpt"
    pages = make_pages(ckpt, [3 << 20, 4096, 0, 9 << 20])
    files, records = pack_pages(ckpt, compression, streams, crc)
    # The pages left criu/ for the shards; the other images stayed.
    assert sorted(p.name for p in (ckpt / "criu").iterdir()) == ["inventory.img"]
    shards = sorted(p.name for p in (ckpt / SHARD_DIR).iterdir())
    assert shards == sorted(shard_name(i, compression) for i in range(streams))
    assert [f.path for f in files] == [f"criu/{n}" for n in sorted(pages)]
    assert sum(r.size for r in records) == sum(len(d) for d in pages.values())
    if compression in ("lz4", "gzip", "zlib"):
        stored = sum((ckpt / SHARD_DIR / s).stat().st_size for s in shards)
        assert stored < sum(len(d) for d in pages.values())

    images = tmp_path / "images"
    images.mkdir()
    unpack_pages(ckpt, files, records, streams, compression, images, crc)
    for name, data in pages.items():
        assert (images / name).read_bytes() == data


def test_a_damaged_page_shard_is_refused_before_its_bytes_are_used(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    make_pages(ckpt, [1 << 20])
    files, records = pack_pages(ckpt, "none", 1, crc)
    shard = ckpt / SHARD_DIR / "img-0"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(CorruptCheckpoint, match="checksum mismatch"):
        unpack_pages(ckpt, files, records, 1, "none", images, crc)


def test_a_page_image_outside_criu_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorruptCheckpoint, match="bad page image"):
        unpack_pages(tmp_path, [PageFile("../etc/pages-1.img", 0, 1)], [], 1, "none", tmp_path, crc)


def test_layout_lays_the_page_files_end_to_end(tmp_path: Path) -> None:
    make_pages(tmp_path, [8192, 4096])
    assert layout(tmp_path) == [
        PageFile("criu/pages-1.img", 0, 8192),
        PageFile("criu/pages-2.img", 8192, 4096),
    ]


# ---- where a restore puts the checkpoint's GPUs -------------------------------------

U = [f"GPU-0000000{i}-0000-0000-0000-000000000000" for i in range(8)]
H200 = "NVIDIA H200"
GIB = 1 << 30


def gpu(i: int, uuid: str, name: str = H200, mem: int = 141 * GIB) -> Gpu:
    return Gpu(i, uuid, name, mem)


def test_same_gpus_present_means_no_remapping() -> None:
    old = [gpu(0, U[0]), gpu(1, U[1])]
    assert plan_pairs(old, [gpu(0, U[1]), gpu(1, U[0])]) is None


def test_missing_gpus_go_to_free_ones_of_the_same_model_same_index_first() -> None:
    old = [gpu(0, U[0]), gpu(1, U[1])]
    new = [gpu(0, U[2]), gpu(1, U[3]), gpu(2, U[4], "Other")]
    assert plan_pairs(old, new) == [(U[0], U[2]), (U[1], U[3])]
    # One GPU still here: it keeps it; the other takes a free one.
    assert plan_pairs(old, [gpu(0, U[5]), gpu(1, U[0])]) == [(U[0], U[0]), (U[1], U[5])]


def test_no_gpu_of_the_model_refuses_with_a_hint() -> None:
    with pytest.raises(GpuMapError, match=r"not on this machine.*--gpu-map"):
        plan_pairs([gpu(0, U[0])], [gpu(0, U[1], "NVIDIA A100")])
    with pytest.raises(GpuMapError, match="not on this machine"):
        plan_pairs([gpu(0, U[0]), gpu(1, U[1])], [gpu(0, U[2])])


def test_explicit_map_by_uuid_or_index() -> None:
    old = [gpu(0, U[0]), gpu(1, U[1])]
    new = [gpu(0, U[0]), gpu(1, U[1])]
    assert plan_pairs(old, new, [("0", "1"), (U[1], "0")]) == [(U[0], U[1]), (U[1], U[0])]
    assert plan_pairs(old, new, [("0", "0")]) is None


def test_explicit_map_refusals() -> None:
    old = [gpu(0, U[0])]
    with pytest.raises(GpuMapError, match="another model"):
        plan_pairs(old, [gpu(0, U[1], "NVIDIA A100")], [("0", "0")])
    with pytest.raises(GpuMapError, match="less memory"):
        plan_pairs(old, [gpu(0, U[1], mem=GIB)], [("0", "0")])
    with pytest.raises(GpuMapError, match="is not a GPU of this machine"):
        plan_pairs(old, [gpu(0, U[1])], [("0", "7")])
    with pytest.raises(GpuMapError, match="two of the checkpoint's GPUs on one"):
        plan_pairs([gpu(0, U[0]), gpu(1, U[1])], [gpu(0, U[2]), gpu(1, U[3])],
                   [("0", "0"), ("1", "0")])  # fmt: skip


def test_parse_gpu_map() -> None:
    assert parse_gpu_map([f"{U[0]}={U[1]}", " 0 = 1 "]) == [(U[0], U[1]), ("0", "1")]
    for bad in ("0", "=1", "0="):
        with pytest.raises(GpuMapError, match="OLD=NEW"):
            parse_gpu_map([bad])


# ---- what a driver offers ---------------------------------------------------------------


def test_support_names_the_driver_needed() -> None:
    old = driver_api.Support(version=12040, checkpoint=False, remap=False, custom_storage=False)
    with pytest.raises(driver_api.DriverApiError) as e:
        old.require_checkpoint()
    assert str(e.value) == (
        "the driver (CUDA 12.4) has no checkpoint API: --gpu-engine driver needs driver "
        "r555 or later (CUDA 12.5)"
    )
    mid = driver_api.Support(version=12080, checkpoint=True, remap=False, custom_storage=False)
    mid.require_checkpoint()
    with pytest.raises(driver_api.DriverApiError, match=r"needs driver r580 or later"):
        mid.require_remap()
    assert "GPU remapping: no (needs driver r580" in mid.describe()


# ---- the checkpoint's record of its engine --------------------------------------------


def test_manifest_keeps_engine_and_page_layout(tmp_path: Path) -> None:
    job = JobInfo(id="j", cmd=["x"], segment_name="", segment_size=0, generation=1,
                  extra={"gpu": True, "engine": "driver"})  # fmt: skip
    pages = [PageFile("criu/pages-1.img", 0, 4096).to_json()]
    save_manifest(
        Manifest(job=job, va_base=0, va_size=4096, compression="lz4", streams=2, criu_pages=pages),
        tmp_path,
    )
    loaded = load_manifest(tmp_path)
    assert loaded.criu_pages == pages
    assert engines.of_checkpoint(loaded.job.extra) == "driver"
    # Checkpoints from before engines were intercepted.
    assert engines.of_checkpoint({"gpu": True}) == "intercept"


def test_manifest_refuses_a_bad_engine(tmp_path: Path) -> None:
    job = JobInfo(id="j", cmd=["x"], segment_name="", segment_size=0, generation=1,
                  extra={"engine": "magic"})  # fmt: skip
    save_manifest(Manifest(job=job, va_base=0, va_size=0, compression="none", streams=1), tmp_path)
    with pytest.raises(CorruptCheckpoint, match="engine"):
        load_manifest(tmp_path)


def test_devices_document_round_trip(tmp_path: Path) -> None:
    doc = {
        "format": driver_state.FORMAT,
        "version": 1,
        "engine": "driver",
        "driver": "fake",
        "driver_version": 13000,
        "devices": [{"index": 0, "uuid": U[0], "name": H200, "total_memory_bytes": GIB}],
    }
    driver_state.save(tmp_path, doc)
    assert driver_state.load(tmp_path) == doc
    assert driver_state.gpus(doc["devices"]) == [Gpu(0, U[0], H200, GIB)]
    (tmp_path / driver_state.DEVICES_NAME).write_text('{"format": "cedana-gpu-devices"}')
    with pytest.raises(CorruptCheckpoint):
        driver_state.load(tmp_path)


def test_custom_storage_document_is_version_2(tmp_path: Path) -> None:
    """Custom storage is recorded as version 2 (a version 1 reader must refuse it);
    host-staged documents stay version 1; a newer version is refused: upgrade."""
    host = {
        "format": driver_state.FORMAT,
        "version": driver_state.HOST_VERSION,
        "engine": "driver",
        "driver": "fake",
        "driver_version": 13040,
        "devices": [{"index": 0, "uuid": U[0], "name": H200, "total_memory_bytes": GIB}],
    }
    assert driver_state.storage(host) == "host"
    memory = [{"addr": 0, "size": 4 << 20}, {"addr": 4 << 20, "size": 2 << 20}]
    custom = driver_state.with_custom_storage(host, memory)
    assert custom["version"] == 2 and driver_state.storage(custom) == "custom"
    driver_state.save(tmp_path, custom)
    assert driver_state.load(tmp_path) == custom
    with pytest.raises(CorruptCheckpoint):  # version 2 needs its members
        driver_state.save(tmp_path, {**host, "version": 2})
    (tmp_path / driver_state.DEVICES_NAME).write_text(json.dumps({**custom, "version": 3}))
    with pytest.raises(CheckpointError, match=r"version 3, newer .*: upgrade"):
        driver_state.load(tmp_path)


def test_storage_choice_names_the_driver_needed() -> None:
    new = driver_api.Support(version=13040, checkpoint=True, remap=True, custom_storage=True)
    old = driver_api.Support(version=13000, checkpoint=True, remap=True, custom_storage=False)
    assert new.storage("auto") == "custom" and old.storage("auto") == "host"
    assert new.storage("host") == "host" and new.storage("custom") == "custom"
    with pytest.raises(driver_api.DriverApiError) as e:
        old.storage("custom")
    assert str(e.value) == (
        "the driver (CUDA 13.0) has no custom storage: --gpu-storage custom needs driver "
        "r615 or later (CUDA 13.4) (or use host)"
    )


def test_engine_choices() -> None:
    assert engines.initial_engine("auto") == "intercept"
    assert engines.initial_engine("driver") == "driver"
    assert engines.default_choice({}) == "auto"
    assert engines.default_choice({engines.ENGINE_ENV: "driver"}) == "driver"
    with pytest.raises(engines.BadEngine, match="CEDANA_GPU_ENGINE"):
        engines.default_choice({engines.ENGINE_ENV: "tpu"})


@pytest.mark.parametrize("compression", ["none", "tar"])
def test_one_uncompressed_shard_of_one_page_file_is_linked_not_copied(
    tmp_path: Path, compression: str
) -> None:
    ckpt = tmp_path / "ckpt"
    pages = make_pages(ckpt, [5 << 20])
    files, records = pack_pages(ckpt, compression, 1, crc)
    images = tmp_path / "images"
    images.mkdir()
    unpack_pages(ckpt, files, records, 1, compression, images, crc)
    linked = images / "pages-1.img"
    assert linked.is_symlink() and linked.read_bytes() == pages["pages-1.img"]
    # Verified all the same: a damaged shard is refused, and nothing is linked.
    shard = ckpt / SHARD_DIR / "img-0"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(CorruptCheckpoint, match="checksum mismatch"):
        unpack_pages(ckpt, files, records, 1, compression, again, crc)
    assert list(again.iterdir()) == []
