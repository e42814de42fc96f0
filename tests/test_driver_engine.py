"""The driver engine end to end: fake driver (its ``cuCheckpointProcess*``), real CRIU, root.

A job runs ``samples/gpu_loop.py`` under ``cedana exec --gpu --gpu-engine
driver``: it loads the fake driver itself (no interposer), and its
controller locks and checkpoints it through the driver's API. It is dumped
mid-run (held between two steps by a gate file, so that nothing depends on
timing), killed (or left running), restored as a new job, and must finish
with exactly the output of an uninterrupted run: the lines the original
printed before the dump followed by the lines the restored copy printed
after it are the uninterrupted run's, checksum included.

"Another machine" is the restoring controller's fake driver with other GPU
UUIDs (``FAKE_CUDA_UUID_SEED``), or other models (``FAKE_CUDA_DEVICE_NAME``).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from cr_helpers import (
    Cedana,
    alive,
    assert_one_line_error,
    checksum_line,
    needs_root,
    run_direct,
    segment_leftovers,
    unique_jid,
    without_notes,
)

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

STEPS = 16
MIB = 2
LOOP = ("samples/gpu_loop.py", "--steps", str(STEPS), "--device-mib", str(MIB))
STEP_LINE = r"^step \d+ digest"
OTHER_MACHINE = {"FAKE_CUDA_UUID_SEED": "7"}


def exec_driver(c: Cedana, jid: str, *cmd: str, mounts: tuple[str, ...] = (), **env: str) -> None:
    args = ["exec", "--gpu", "--gpu-driver", "fake", "--gpu-engine", "driver", "--jid", jid]
    for m in mounts:
        args += ["--persistent-mount", m]
    c.ok(*args, "--", *cmd, **env)


def start_loop(c: Cedana, jid: str, gate: Path, *extra: str, **env: str) -> None:
    """Start the loop held at ``gate`` (created here) after its first step; removing
    the gate lets it (and any restored copy of it) run to its end."""
    gate.touch()
    exec_driver(c, jid, sys.executable, *LOOP, "--hold-while", str(gate), *extra, **env)
    c.wait_log(jid, STEP_LINE, 1)


def assert_gone(c: Cedana, *jids: str) -> None:
    for jid in jids:
        job = c.job(jid)
        assert not alive(job["controller_pid"]), c.controller_log(jid)
        assert not alive(job["pid"])
    assert segment_leftovers(*jids) == []


def assert_finished(c: Cedana, jid: str) -> dict[str, Any]:
    job = c.wait_final(jid)
    assert job["status"] == "exited (0)", (job, c.log(jid)[-3000:], c.controller_log(jid)[-3000:])
    return job


def assert_resumed(c: Cedana, jid: str, new: str, expected: list[str], left_running: bool) -> None:
    """The restored copy finishes the run; with the original killed, the two logs
    together are the uninterrupted run; left running, both finish right."""
    assert_finished(c, new)
    after = without_notes(c.log(new))
    if left_running:
        assert_finished(c, jid)
        assert without_notes(c.log(jid)) == expected
        assert after and after == expected[-len(after) :]
    else:
        assert without_notes(c.log(jid)) + after == expected
    assert checksum_line(after) == checksum_line(expected)


def checkpoint_storage(path: Path, scratch: Path) -> str:
    """How a checkpoint holds the GPU memory, from its ``gpu/devices.json``
    (``host``: version 1, the memory in CRIU's pages, listed as ``criu_pages``)."""
    from cedana_gpu.checkpoint import load_manifest
    from cedana_gpu.checkpoint.archive import open_checkpoint

    out = scratch / f"unpacked-{path.name}"
    path = open_checkpoint(path, out)
    doc = json.loads((path / "gpu" / "devices.json").read_text())
    manifest = load_manifest(path)
    if doc.get("storage") == "custom":
        assert doc["version"] == 2 and not manifest.criu_pages
        assert sum(m["size"] for m in doc["memory"]) == sum(r.size for r in manifest.regions)
        return "custom"
    assert doc["version"] == 1 and manifest.criu_pages
    return "host"


# ---- the matrix: every compression, 1 and 4 streams, killed or left running ----------------


@pytest.mark.slow
@pytest.mark.parametrize("leave_running", [False, True], ids=["kill", "leave-running"])
@pytest.mark.parametrize("streams", [1, 4])
@pytest.mark.parametrize("compression", ["none", "tar", "lz4", "gzip", "zlib"])
@pytest.mark.parametrize("storage", ["host", "custom"])
def test_driver_engine_dump_restore_matches_uninterrupted_run(
    cedana: Cedana,
    tmp_path: Path,
    storage: str,
    compression: str,
    streams: int,
    leave_running: bool,
) -> None:
    """``--gpu-storage host``: the GPU memory in CRIU's pages, packed into the
    shards; ``custom``: copied by the controller through the driver's custom
    storage straight into the shards, restored from them."""
    expected = list(run_direct(*LOOP))
    jid, new = unique_jid("dm"), unique_jid("dmr")
    gate = tmp_path / "gate"
    start_loop(cedana, jid, gate)
    assert cedana.job(jid)["engine"] == "driver"
    ckdir = tmp_path / "ckpts"
    options = ["--dir", str(ckdir), "--compression", compression, "--stream", str(streams)]
    options += ["--gpu-storage", storage]
    if leave_running:
        options.append("--leave-running")
    dumped = cedana.dump(jid, *options)
    assert checkpoint_storage(Path(dumped["path"]), tmp_path) == storage

    path = Path(dumped["path"])
    assert [p.name for p in ckdir.iterdir()] == [path.name]
    assert path.is_dir() == (compression == "none")
    assert (dumped["engine"], dumped["compression"], dumped["streams"]) == (
        "driver",
        compression,
        streams,
    )
    # The GPU memory went into the shards: with host storage through the job's
    # host memory and CRIU's page images, with custom storage directly; at
    # least the job's device state either way.
    assert dumped["gpu_bytes"] >= MIB << 20
    listed = cedana.json("job", "checkpoints", jid)
    assert [c["id"] for c in listed] == [dumped["checkpoint"]]
    if not leave_running:
        assert cedana.job(jid)["status"] == "checkpointed"
        assert_gone(cedana, jid)

    restored = cedana.restore(jid, "--jid", new)
    assert restored["job"] == new and restored["generation"] == 2
    row = cedana.job(new)
    assert row["engine"] == "driver" and row["restored_from"] == dumped["checkpoint"]
    gate.unlink()
    assert_resumed(cedana, jid, new, expected, leave_running)
    assert_gone(cedana, jid, new)


def test_checkpoint_layout_pages_in_shards(cedana: Cedana, tmp_path: Path) -> None:
    """What a driver engine checkpoint holds: the engine, the GPUs it ran on,
    CRIU's page images in the shards (none left in criu/), no interposer state."""
    jid = unique_jid("dl")
    start_loop(cedana, jid, tmp_path / "gate")
    dumped = cedana.dump(
        jid, "--dir", str(tmp_path / "c"), "--stream", "3", "--leave-running",
        "--gpu-storage", "host",
    )  # fmt: skip
    path = Path(dumped["path"])
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["job"]["engine"] == "driver"
    assert manifest["job"]["segment_name"] == ""
    pages = manifest["criu_pages"]
    assert pages and all(p["path"].startswith("criu/pages-") for p in pages)
    assert sum(r["size"] for r in manifest["regions"]) == sum(p["size"] for p in pages)
    assert not list((path / "criu").glob("pages-*.img"))
    assert sorted(p.name for p in (path / "gpu").glob("img-*")) == ["img-0", "img-1", "img-2"]
    assert not (path / "gpu" / "state.json").exists()
    devices = json.loads((path / "gpu" / "devices.json").read_text())
    assert devices["engine"] == "driver" and devices["driver"] == "fake"
    assert [d["name"] for d in devices["devices"]] == ["Cedana Fake GPU"]
    inspect = cedana.inspect(jid)
    assert inspect["engine"] == "driver" and inspect["live"]["frozen"] is False
    table = cedana.ok("ps")
    assert any(ln.split()[:1] == [jid] and "driver" in ln.split() for ln in table.splitlines())
    cedana.ok("job", "kill", jid)


# ---- migration, remapping, persistent mounts ----------------------------------------------


@pytest.mark.slow
def test_migration_to_another_machine_by_path(tmp_path: Path) -> None:
    """The checkpoint is copied elsewhere and the original state removed; the
    other "machine" has other GPU UUIDs: the restore maps the job onto its GPU
    of the same model."""
    expected = list(run_direct(*LOOP))
    origin = Cedana(tmp_path / "origin")
    jid = unique_jid("dg")
    gate = tmp_path / "gate"
    try:
        start_loop(origin, jid, gate)
        dumped = origin.dump(jid, "--compression", "lz4", "--stream", "2")
        before = without_notes(origin.log(jid))
        assert_gone(origin, jid)
    finally:
        origin.kill_all()
    source = Path(dumped["path"])
    copy = tmp_path / "elsewhere" / source.name
    copy.parent.mkdir()
    shutil.copy2(source, copy)
    shutil.rmtree(origin.state)

    target = Cedana(tmp_path / "target")
    new = unique_jid("dgr")
    try:
        restored = target.restore("--path", str(copy), "--jid", new, **OTHER_MACHINE)
        assert restored["path"] == str(copy)
        assert "GPUs remapped" in target.controller_log(new)
        gate.unlink()
        assert_finished(target, new)
        assert before + without_notes(target.log(new)) == expected
        assert_gone(target, new)
    finally:
        target.kill_all()
    assert copy.exists()


@pytest.mark.slow
def test_gpu_map_puts_the_job_on_the_gpu_named(cedana: Cedana, tmp_path: Path) -> None:
    expected = list(run_direct(*LOOP))
    jid, new = unique_jid("gm"), unique_jid("gmr")
    gate = tmp_path / "gate"
    start_loop(cedana, jid, gate)
    dumped = cedana.dump(jid)
    two = {"FAKE_CUDA_DEVICE_COUNT": "2", **OTHER_MACHINE}
    gpus = cedana.json("gpu", "info", "--driver", "fake", **two)["devices"]
    old = json.loads((Path(dumped["path"]) / "gpu" / "devices.json").read_text())["devices"]
    cedana.restore(jid, "--jid", new, "--gpu-map", f"{old[0]['uuid']}=1", **two)
    assert f"{old[0]['uuid']}->{gpus[1]['uuid']}" in cedana.controller_log(new)
    gate.unlink()
    assert_resumed(cedana, jid, new, expected, left_running=False)


PERSIST = """\
set -e
mount="$1"; shift
echo "written before the dump" > "$mount/state.txt"
exec "$@"
"""


@pytest.mark.slow
def test_persistent_mount_travels_with_the_checkpoint(cedana: Cedana, tmp_path: Path) -> None:
    expected = list(run_direct(*LOOP))
    mount = tmp_path / "scratch"
    script = tmp_path / "persist.sh"
    script.write_text(PERSIST)
    jid, new = unique_jid("dp"), unique_jid("dpr")
    gate = tmp_path / "gate"
    gate.touch()
    exec_driver(
        cedana, jid, "sh", str(script), str(mount), sys.executable, *LOOP,
        "--hold-while", str(gate), mounts=(str(mount),),
    )  # fmt: skip
    cedana.wait_log(jid, STEP_LINE, 1)
    assert list(mount.iterdir()) == []  # private to the job
    cedana.dump(jid, "--compression", "gzip")
    (mount / "decoy").write_text("host side")
    cedana.restore(jid, "--jid", new)
    pid = cedana.job(new)["pid"]
    assert (Path(f"/proc/{pid}/root") / str(mount).lstrip("/") / "state.txt").read_text() == (
        "written before the dump\n"
    )
    gate.unlink()
    assert_resumed(cedana, jid, new, expected, left_running=False)
    assert sorted(p.name for p in mount.iterdir()) == ["decoy"]


# ---- failures: the job runs on, or nothing half-restored stays ------------------------------


def test_lock_timeout_leaves_the_busy_job_running(cedana: Cedana, tmp_path: Path) -> None:
    """A job in long kernels (its synchronize does not return for a while) cannot
    be locked within the freeze timeout: one line says so, and the job, unlocked,
    finishes with the uninterrupted run's output."""
    expected = list(run_direct(*LOOP))
    busy_while = tmp_path / "busy"
    busy_while.touch()
    busy = ("--busy-at", "3", "--busy-rounds", str(1 << 24), "--busy-while", str(busy_while))
    jid = unique_jid("lt")
    exec_driver(cedana, jid, sys.executable, *LOOP, *busy)
    cedana.wait_log(jid, r"^busy$")
    failed = cedana("dump", "job", jid, CEDANA_FREEZE_TIMEOUT_MS="100")
    line = assert_one_line_error(failed)
    assert "timed out" in line and f"job {jid} runs on" in line
    assert cedana.json("job", "checkpoints", jid) == []
    busy_while.unlink()
    assert_finished(cedana, jid)
    assert without_notes(cedana.log(jid)) == [*expected[:3], "busy", *expected[3:]]


def test_restore_refused_when_no_gpu_of_the_model(cedana: Cedana, tmp_path: Path) -> None:
    """The checkpoint's GPU is not there and no GPU of its model is: refused in
    one line before anything is restored; the checkpoint restores afterwards."""
    expected = list(run_direct(*LOOP))
    jid, bad, new = unique_jid("mg"), unique_jid("mgx"), unique_jid("mgr")
    gate = tmp_path / "gate"
    start_loop(cedana, jid, gate)
    cedana.dump(jid)
    other = {"FAKE_CUDA_DEVICE_NAME": "Another Fake GPU", **OTHER_MACHINE}
    line = assert_one_line_error(cedana("restore", "job", jid, "--jid", bad, **other))
    assert "no free GPU of that model" in line and "--gpu-map" in line
    assert "nothing was restored" in line
    assert cedana.job(bad)["state"] == "failed"
    assert_gone(cedana, bad)

    cedana.restore(jid, "--jid", new, **OTHER_MACHINE)
    gate.unlink()
    assert_resumed(cedana, jid, new, expected, left_running=False)


def test_restore_refused_onto_another_model(cedana: Cedana, tmp_path: Path) -> None:
    jid, bad = unique_jid("wm"), unique_jid("wmx")
    start_loop(cedana, jid, tmp_path / "gate")
    cedana.dump(jid, "--leave-running")
    other = {"FAKE_CUDA_DEVICE_NAME": "Another Fake GPU"}
    line = assert_one_line_error(
        cedana("restore", "job", jid, "--jid", bad, "--gpu-map", "0=0", **other)
    )
    assert "another model" in line and "nothing was restored" in line
    assert_gone(cedana, bad)
    assert cedana.job(jid)["state"] == "running"  # the original is untouched
    cedana.ok("job", "kill", jid)


def test_gpu_map_refused_for_intercept_checkpoints(cedana: Cedana, tmp_path: Path) -> None:
    jid = unique_jid("gi")
    gate = tmp_path / "gate"
    gate.touch()
    cedana.exec_gpu(jid, sys.executable, *LOOP, "--hold-while", str(gate))
    cedana.wait_log(jid, STEP_LINE, 1)
    assert cedana.job(jid)["engine"] == "intercept"
    cedana.dump(jid)
    line = assert_one_line_error(cedana("restore", "job", jid, "--gpu-map", "0=0"))
    assert "--gpu-map applies to driver engine checkpoints" in line


def test_checkpoint_failing_leaves_the_job_unlocked_and_running(
    cedana: Cedana, tmp_path: Path
) -> None:
    """The driver's checkpoint fails after the lock (the test hook has it called on
    a pid that does not exist, so the real driver refuses it): the dump says so
    in one line, the job is unlocked and finishes right, and a second dump works."""
    expected = list(run_direct(*LOOP))
    faults = tmp_path / "faults"
    faults.mkdir()
    jid, new = unique_jid("cf"), unique_jid("cfr")
    gate = tmp_path / "gate"
    start_loop(cedana, jid, gate, CEDANA_TEST_DRIVER_FAULT=str(faults))
    (faults / "checkpoint").touch()
    line = assert_one_line_error(cedana("dump", "job", jid))
    assert "could not checkpoint" in line and f"job {jid} runs on" in line
    assert not (faults / "checkpoint").exists()  # the fault was used
    assert cedana.json("job", "checkpoints", jid) == []
    # Unlocked: the driver locks it again (a lock needs a RUNNING process).
    cedana.dump(jid)
    cedana.restore(jid, "--jid", new)
    gate.unlink()
    assert_resumed(cedana, jid, new, expected, left_running=False)


def test_restore_failing_leaves_nothing_behind(cedana: Cedana, tmp_path: Path) -> None:
    """The driver's restore of the GPU state fails after CRIU restored the
    processes: the restored processes are killed, nothing of the restore
    stays, and the checkpoint restores afterwards."""
    expected = list(run_direct(*LOOP))
    faults = tmp_path / "faults"
    faults.mkdir()
    jid, bad, new = unique_jid("rf"), unique_jid("rfx"), unique_jid("rfr")
    gate = tmp_path / "gate"
    start_loop(cedana, jid, gate)
    cedana.dump(jid)
    (faults / "restore").touch()
    failed = cedana("restore", "job", jid, "--jid", bad, CEDANA_TEST_DRIVER_FAULT=str(faults))
    line = assert_one_line_error(failed)
    assert "could not restore" in line and "nothing was restored" in line
    assert cedana.job(bad)["state"] == "failed"
    assert_gone(cedana, bad)
    cedana.restore(jid, "--jid", new)
    gate.unlink()
    assert_resumed(cedana, jid, new, expected, left_running=False)


# ---- the job itself: no interposer, its own driver ------------------------------------------


def test_run_process_driver_engine_job_loads_the_driver_itself(
    cedana: Cedana, tmp_path: Path
) -> None:
    jid = unique_jid("rp")
    gate = tmp_path / "gate"
    gate.touch()
    cedana.ok(
        "run", "process", "--gpu-enabled", "--gpu-driver", "fake", "--gpu-engine", "driver",
        "--jid", jid, "--", sys.executable, *LOOP, "--hold-while", str(gate),
    )  # fmt: skip
    cedana.wait_log(jid, STEP_LINE, 1)
    job = cedana.job(jid)
    assert job["engine"] == "driver" and job["segment"] is None
    maps = Path(f"/proc/{job['pid']}/maps").read_text()
    from cedana_gpu import paths

    assert str(paths.fake_libdir() / "libcuda.so.1") in maps
    assert "libcedana-gpu.so" not in maps
    env = Path(f"/proc/{job['pid']}/environ").read_bytes().split(b"\0")
    assert not [e for e in env if e.startswith(b"LD_PRELOAD=") and b"cedana" in e]
    live = cedana.inspect(jid)["live"]
    assert live["engine"] == "driver" and live["driver_api"]["checkpoint"] is True
    gate.unlink()
    assert_finished(cedana, jid)
    assert without_notes(cedana.log(jid)) == list(run_direct(*LOOP))


def test_gpu_engine_needs_gpu_and_a_known_engine(cedana: Cedana) -> None:
    line = assert_one_line_error(cedana("exec", "--gpu-engine", "driver", "--", "true"))
    assert "--gpu-engine needs --gpu" in line
    line = assert_one_line_error(
        cedana("exec", "--gpu", "--gpu-driver", "fake", "--", "true", CEDANA_GPU_ENGINE="tpu")
    )
    assert "CEDANA_GPU_ENGINE" in line


# ---- auto: intercepted until the job asks for NVIDIA's runtime ------------------------------


def test_auto_job_handed_to_the_driver_engine_is_saved_by_it(
    cedana: Cedana, tmp_path: Path
) -> None:
    """Under the default ``auto`` engine a job that asks for NVIDIA's runtime
    before it holds device state is handed to the driver in its own process
    (the interposer's ENGINE_HANDOFF); from then on its controller checkpoints
    it with the driver engine, and its restore (which re-creates the segment
    the job still maps) finishes the run right."""
    args = (*LOOP, "--runtime-first")
    expected = list(run_direct(*args))
    jid, new = unique_jid("au"), unique_jid("aur")
    gate = tmp_path / "gate"
    gate.touch()
    cedana.ok("exec", "--gpu", "--gpu-driver", "fake", "--jid", jid, "--",
              sys.executable, *args, "--hold-while", str(gate))  # fmt: skip
    cedana.wait_log(jid, STEP_LINE, 1)
    assert cedana.job(jid)["engine"] == "intercept"  # as it started
    live = cedana.inspect(jid)["live"]
    assert live["dispatcher"]["handed_off"] is True and live["engine"] == "driver"
    assert cedana.job(jid)["engine"] == "driver"  # the controller recorded the switch
    dumped = cedana.dump(jid, "--compression", "lz4", "--stream", "2")
    assert dumped["engine"] == "driver" and dumped["gpu_bytes"] >= MIB << 20
    cedana.restore(jid, "--jid", new)
    assert cedana.job(new)["engine"] == "driver"
    gate.unlink()
    assert_finished(cedana, new)
    logs = [without_notes(cedana.log(j)) for j in (jid, new)]
    combined = [ln for log in logs for ln in log if not ln.startswith("fake-cuda:")]
    assert combined == expected
    assert_gone(cedana, jid, new)


def test_signed_driver_checkpoint_with_a_damaged_page_shard_is_refused(
    cedana: Cedana, tmp_path: Path
) -> None:
    """The page shards are signed like device memory shards: a signed checkpoint
    restores with its key; one whose page shard was altered (its size kept) is
    refused before anything starts."""
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32 + b"\n")
    key.chmod(0o600)
    jid, bad, new = unique_jid("sg"), unique_jid("sgx"), unique_jid("sgr")
    start_loop(cedana, jid, tmp_path / "gate")
    dumped = cedana.dump(
        jid, "--leave-running", "--stream", "2", "--signing-key", str(key),
        "--gpu-storage", "host",
    )  # fmt: skip
    path = Path(dumped["path"])
    manifest = json.loads((path / "manifest.json").read_text())
    assert {s["path"] for s in manifest["shards"]} == {"gpu/img-0", "gpu/img-1"}
    copy = tmp_path / "altered"
    shutil.copytree(path, copy)
    shard = copy / "gpu" / "img-1"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    line = assert_one_line_error(
        cedana("restore", "job", "--path", str(copy), "--jid", bad, "--signing-key", str(key))
    )
    assert "img-1" in line and "nothing was restored" in line
    assert cedana.job(jid)["state"] == "running"
    cedana.restore("--path", str(path), "--jid", new, "--signing-key", str(key))
    assert cedana.job(new)["engine"] == "driver"
    cedana.ok("job", "kill", jid)
    cedana.ok("job", "kill", new)


def test_cuda_in_a_child_of_the_job_is_checkpointed(cedana: Cedana, tmp_path: Path) -> None:
    """The job's root is a shell and CUDA runs in its child: the controller locks,
    checkpoints and restores every CUDA process of the job's tree (found by
    asking the driver), under the host pids CRIU gives them back."""
    expected = [*run_direct(*LOOP), "loop done"]
    gate = tmp_path / "gate"
    gate.touch()
    jid, new = unique_jid("ch"), unique_jid("chr")
    loop = " ".join([sys.executable, *LOOP, "--hold-while", str(gate)])
    exec_driver(cedana, jid, "sh", "-c", f"{loop}; echo loop done")
    cedana.wait_log(jid, STEP_LINE, 1)
    root = cedana.job(jid)["pid"]
    assert Path(f"/proc/{root}/cmdline").read_bytes().split(b"\0")[0] == b"sh"  # the shell
    cedana.dump(jid, "--stream", "2")
    cedana.restore(jid, "--jid", new)
    gate.unlink()
    assert_resumed(cedana, jid, new, expected, left_running=False)


# ---- custom storage: the controller copies the GPU memory into the shards itself ------------


def test_custom_storage_layout_and_damaged_shard_refused(cedana: Cedana, tmp_path: Path) -> None:
    """With custom storage (the default where the driver offers it) the GPU memory
    is in the shards, described by ``gpu/devices.json`` version 2, and CRIU's page
    images stay small in ``criu/``; a checkpoint whose GPU memory shard was
    altered (its size kept) is refused before anything starts, and the intact
    one restores."""
    jid, bad, new = unique_jid("cs"), unique_jid("csx"), unique_jid("csr")
    start_loop(cedana, jid, tmp_path / "gate")
    dumped = cedana.dump(jid, "--leave-running", "--stream", "2", "--dir", str(tmp_path / "c"))
    path = Path(dumped["path"])
    assert checkpoint_storage(path, tmp_path) == "custom"
    manifest = json.loads((path / "manifest.json").read_text())
    assert "criu_pages" not in manifest
    # CRIU's page images (the job's host memory only) stay as CRIU wrote them;
    # the job's device memory went to the shards.
    assert list((path / "criu").glob("pages-*.img"))
    assert dumped["gpu_bytes"] >= MIB << 20
    assert sorted(p.name for p in (path / "gpu").glob("img-*")) == ["img-0", "img-1"]
    copy = tmp_path / "altered"
    shutil.copytree(path, copy)
    shard = copy / "gpu" / "img-1"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    line = assert_one_line_error(cedana("restore", "job", "--path", str(copy), "--jid", bad))
    assert "img-1" in line and "nothing was restored" in line
    if bad in cedana.ps():
        assert cedana.job(bad)["state"] == "failed"
        assert_gone(cedana, bad)
    assert cedana.job(jid)["state"] == "running"
    cedana.restore("--path", str(path), "--jid", new)
    assert cedana.job(new)["engine"] == "driver"
    cedana.ok("job", "kill", jid)
    cedana.ok("job", "kill", new)


def test_custom_copy_failing_unwinds_and_the_job_runs_on(cedana: Cedana, tmp_path: Path) -> None:
    """The copy out of the driver's custom storage fails midway (the test hook):
    the dump says so in one line, no checkpoint is left, the job gets its GPU
    memory back, is unlocked and finishes right; a second dump works."""
    expected = list(run_direct(*LOOP))
    faults = tmp_path / "faults"
    faults.mkdir()
    jid, new = unique_jid("cc"), unique_jid("ccr")
    gate = tmp_path / "gate"
    start_loop(cedana, jid, gate, CEDANA_TEST_DRIVER_FAULT=str(faults))
    (faults / "copy").touch()
    line = assert_one_line_error(cedana("dump", "job", jid, "--gpu-storage", "custom"))
    assert f"GPU dump of job {jid} failed" in line and "injected" in line
    assert not (faults / "copy").exists()  # the fault was used
    assert cedana.json("job", "checkpoints", jid) == []
    assert cedana.job(jid)["state"] == "running"
    cedana.dump(jid, "--gpu-storage", "custom")
    cedana.restore(jid, "--jid", new)
    gate.unlink()
    assert_resumed(cedana, jid, new, expected, left_running=False)


# ---- a driver too old for what is asked ------------------------------------------------------


def test_dump_refused_on_a_driver_without_the_checkpoint_api(
    cedana: Cedana, tmp_path: Path
) -> None:
    """An ``auto`` job handed to a driver that reports CUDA 12.4 (r550: no
    checkpoint API): ``cedana dump job`` refuses in one line naming the driver
    needed, and the job runs on to the right end."""
    args = (*LOOP, "--runtime-first")
    expected = list(run_direct(*args))
    jid = unique_jid("od")
    gate = tmp_path / "gate"
    gate.touch()
    cedana.ok("exec", "--gpu", "--gpu-driver", "fake", "--jid", jid, "--",
              sys.executable, *args, "--hold-while", str(gate),
              FAKE_CUDA_DRIVER_VERSION="12040")  # fmt: skip
    cedana.wait_log(jid, STEP_LINE, 1)
    line = assert_one_line_error(cedana("dump", "job", jid))
    assert "CUDA 12.4" in line and "needs driver r555 or later" in line, line
    assert cedana.json("job", "checkpoints", jid) == []
    assert cedana.job(jid)["state"] == "running"
    gate.unlink()
    assert_finished(cedana, jid)
    log = [ln for ln in without_notes(cedana.log(jid)) if not ln.startswith("fake-cuda:")]
    assert log == expected


def test_gpu_map_refused_on_a_driver_without_remapping(cedana: Cedana, tmp_path: Path) -> None:
    """On a driver that reports CUDA 12.8 (lock/checkpoint, no remapping, no custom
    storage) a dump is host-staged; a restore with ``--gpu-map`` onto another
    machine's GPU is refused in one line naming r580, nothing is restored, and
    the job left running goes on."""
    old = {"FAKE_CUDA_DRIVER_VERSION": "12080"}
    jid, new = unique_jid("om"), unique_jid("omr")
    start_loop(cedana, jid, tmp_path / "gate", **old)
    line = assert_one_line_error(cedana("dump", "job", jid, "--gpu-storage", "custom", **old))
    assert "--gpu-storage custom needs driver r615 or later" in line, line
    assert cedana.job(jid)["state"] == "running"
    dumped = cedana.dump(jid, "--leave-running", "--dir", str(tmp_path / "c"), **old)
    assert checkpoint_storage(Path(dumped["path"]), tmp_path) == "host"
    line = assert_one_line_error(
        cedana("restore", "job", jid, "--jid", new, "--gpu-map", "0=0", **old, **OTHER_MACHINE)
    )
    assert "cannot restore onto other GPUs" in line and "needs driver r580 or later" in line, line
    assert "nothing was restored" in line
    assert cedana.job(new)["state"] == "failed"
    assert_gone(cedana, new)
    assert cedana.job(jid)["state"] == "running"
    cedana.ok("job", "kill", jid)
