"""Checkpoint/restore of GPU jobs end to end: fake driver, real CRIU, as root.

A job runs ``samples/train_mlp.py`` (or another sample) under ``cedana exec
--gpu``; it is dumped mid-run, killed (or left running), restored as a new
job, and must finish with exactly the output of an uninterrupted run: the
lines the original printed before the dump followed by the lines the
restored copy printed after it are the uninterrupted run's lines, checksum
included.
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from cr_helpers import (
    Cedana,
    alive,
    checksum_line,
    needs_root,
    run_direct,
    segment_leftovers,
    unique_jid,
    without_notes,
)

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

# Enough steps that a job seen at step 3 is still running when a dump reaches
# it on a loaded 2-core machine (24 left about a second, and once too little).
STEPS = 48
TRAIN = ("samples/train_mlp.py", "--steps", str(STEPS), "--print-every", "1")
SLEEP = ("--sleep-per-step", "0.05")
STEP_LINE = r"^step \d+ loss"


def train(*extra: str) -> list[str]:
    return [sys.executable, *TRAIN, *extra]


def start_training(c: Cedana, jid: str, *extra: str, steps_seen: int = 3) -> None:
    c.exec_gpu(jid, *train(*SLEEP, *extra))
    c.wait_log(jid, STEP_LINE, steps_seen)


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


# ---- the matrix: every compression, 1 and 4 streams, with and without --leave-running ----


@pytest.mark.slow
@pytest.mark.parametrize("leave_running", [False, True], ids=["kill", "leave-running"])
@pytest.mark.parametrize("streams", [1, 4])
@pytest.mark.parametrize("compression", ["none", "tar", "lz4", "gzip", "zlib"])
def test_dump_kill_restore_matches_uninterrupted_run(
    cedana: Cedana, tmp_path: Path, compression: str, streams: int, leave_running: bool
) -> None:
    expected = list(run_direct(*TRAIN, "--device-mib", "2"))
    jid, new = unique_jid("mx"), unique_jid("mxr")
    start_training(cedana, jid, "--device-mib", "2")
    ckdir = tmp_path / "ckpts"
    options = ["--dir", str(ckdir), "--compression", compression, "--stream", str(streams)]
    if leave_running:
        options.append("--leave-running")
    dumped = cedana.dump(jid, *options)

    # The checkpoint: complete (no partial left), where and what it says.
    path = Path(dumped["path"])
    assert path.parent == ckdir and path.exists()
    assert path.is_dir() == (compression == "none")
    assert [p.name for p in ckdir.iterdir()] == [path.name]
    assert dumped["size"] > 0 and dumped["gpu_bytes"] >= 2 << 20
    assert (dumped["compression"], dumped["streams"]) == (compression, streams)
    assert set(dumped["phases"]) >= {"freeze", "gpu_dump", "criu_dump", "write", "sync", "total"}
    assert ("archive" in dumped["phases"]) == (compression != "none")
    listed = cedana.json("job", "checkpoints", jid)
    assert [c["id"] for c in listed] == [dumped["checkpoint"]]
    assert listed[0]["leave_running"] is leave_running

    if not leave_running:
        assert cedana.job(jid)["status"] == "checkpointed"
        assert_gone(cedana, jid)

    restored = cedana.restore(jid, "--jid", new)
    assert restored["job"] == new and restored["generation"] == 2
    assert restored["checkpoint"] == dumped["checkpoint"]
    row = cedana.job(new)
    assert row["restored_from"] == dumped["checkpoint"] and row["gpu"] is True
    assert_finished(cedana, new)
    after = without_notes(cedana.log(new))
    if leave_running:
        # Both copies finish right: the original all of it, the copy the rest.
        assert_finished(cedana, jid)
        assert without_notes(cedana.log(jid)) == expected
        assert after and after == expected[-len(after) :]
    else:
        assert without_notes(cedana.log(jid)) + after == expected
    assert checksum_line(after) == checksum_line(expected)
    assert_gone(cedana, jid, new)


# ---- cycles, migration ----------------------------------------------------------------


@pytest.mark.slow
def test_three_dump_restore_cycles(cedana: Cedana, tmp_path: Path) -> None:
    # 6 s of steps: each generation must still have steps left when the next
    # dump comes, also on a loaded machine where a CLI start takes a second.
    steps = ("--steps", "120")
    expected = list(run_direct(*TRAIN, *steps))
    jids = [unique_jid(f"cy{i}") for i in range(4)]
    start_training(cedana, jids[0], *steps)
    seen = len(without_notes(cedana.log(jids[0])))
    for i in range(3):
        # Each generation makes progress of its own before it is dumped.
        cedana.wait_log(jids[i], STEP_LINE, 2 if i else seen)
        compression = ("none", "lz4", "tar")[i]
        dumped = cedana.dump(jids[i], "--compression", compression, "--stream", str(i + 1))
        assert cedana.job(jids[i])["status"] == "checkpointed"
        restored = cedana.restore(jids[i], "--jid", jids[i + 1])
        assert restored["generation"] == i + 2
        assert cedana.job(jids[i + 1])["restored_from"] == dumped["checkpoint"]
    assert_finished(cedana, jids[3])
    combined = [ln for jid in jids for ln in without_notes(cedana.log(jid))]
    assert combined == expected
    assert_gone(cedana, *jids)


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_migration_from_a_copied_checkpoint(tmp_path: Path, compression: str) -> None:
    """The checkpoint is copied elsewhere; everything of the original job (its
    state directory, controller, segment, the checkpoint itself) is removed;
    another state directory restores the copy with --path."""
    expected = list(run_direct(*TRAIN, "--device-mib", "1"))
    origin = Cedana(tmp_path / "origin")
    jid = unique_jid("mg")
    try:
        start_training(origin, jid, "--device-mib", "1")
        dumped = origin.dump(jid, "--compression", compression, "--stream", "2")
        before = without_notes(origin.log(jid))
        assert_gone(origin, jid)
    finally:
        origin.kill_all()
    source = Path(dumped["path"])
    copy = tmp_path / "elsewhere" / source.name
    copy.parent.mkdir()
    if source.is_dir():
        shutil.copytree(source, copy)
    else:
        shutil.copy2(source, copy)
    shutil.rmtree(origin.state)
    assert segment_leftovers(jid) == []

    target = Cedana(tmp_path / "target")
    new = unique_jid("mgr")
    try:
        restored = target.restore("--path", str(copy), "--jid", new)
        assert restored["job"] == new and restored["path"] == str(copy)
        assert_finished(target, new)
        after = without_notes(target.log(new))
        assert before + after == expected
        assert_gone(target, new)
    finally:
        target.kill_all()
    assert copy.exists()  # a restore reads the checkpoint, never consumes it


# ---- work in flight -------------------------------------------------------------------


@pytest.mark.slow
def test_multithreaded_training_dumped_with_work_in_flight(cedana: Cedana) -> None:
    args = ("samples/train_mlp.py", "--steps", "60", "--threads", "3")
    expected = list(run_direct(*args))
    jid, new = unique_jid("mt"), unique_jid("mtr")
    cedana.exec_gpu(jid, sys.executable, *args, *SLEEP)
    cedana.wait_launches(jid, 100)
    cedana.dump(jid, "--stream", "2")
    cedana.restore(jid, "--jid", new)
    assert_finished(cedana, new)
    combined = without_notes(cedana.log(jid)) + without_notes(cedana.log(new))
    assert combined == expected
    assert_gone(cedana, jid, new)


@pytest.mark.slow
def test_streams_events_dumped_with_work_in_flight(cedana: Cedana) -> None:
    args = ("samples/streams_events.py", "--chunks", "96", "--size", str(1 << 18))
    expected = list(run_direct(*args))
    jid, new = unique_jid("se"), unique_jid("ser")
    cedana.exec_gpu(jid, sys.executable, *args)
    cedana.wait_launches(jid, 8)
    cedana.dump(jid, "--compression", "lz4", "--stream", "2")
    cedana.restore(jid, "--jid", new)
    assert_finished(cedana, new)
    combined = without_notes(cedana.log(jid)) + without_notes(cedana.log(new))
    # The timings vary from run to run; everything else is the same.
    assert [ln for ln in combined if " ms" not in ln] == [ln for ln in expected if " ms" not in ln]
    assert "result: ok" in combined
    assert checksum_line(combined) == checksum_line(expected)
    assert_gone(cedana, jid, new)


# ---- persistent mounts and a JIT cache ---------------------------------------------------

JIT_SCRIPT = """\
set -e
py="$1"; cache="$2/cache"
"$py" samples/jit_kernels.py --steps 3 --sleep-per-step 0.5 --cache-dir "$cache"
echo "first run done"
"$py" samples/jit_kernels.py --steps 8 --cache-dir "$cache"
echo "cache entries: $(ls "$cache" | wc -l)"
"""


@pytest.mark.slow
def test_jit_cache_in_a_persistent_mount(cedana: Cedana, tmp_path: Path) -> None:
    """Dumped after the first kernel was compiled into the cache; the cache
    directory is then deleted on the host and replaced by a decoy. The
    restored job sees its cache exactly as it was (from the checkpoint, not
    from the host): the first run compiles what it had not compiled yet, the
    second reuses what both compiled, and the checksums match an
    uninterrupted run's."""
    mount = tmp_path / "jitmount"
    script = tmp_path / "jit.sh"
    script.write_text(JIT_SCRIPT)
    reference = tmp_path / "reference"
    expected = list(run_direct_sh(script, reference))
    # The first run compiles three kernels, the second reuses them and compiles a fourth.
    assert "cache: hits 0 misses 3" in expected and "cache: hits 3 misses 1" in expected

    jid, new = unique_jid("jit"), unique_jid("jitr")
    cedana.exec_gpu(jid, "sh", str(script), sys.executable, str(mount), mounts=(str(mount),))
    cedana.wait_log(jid, r"^step 0 ", 1)
    # Private to the job: the host sees an empty directory.
    assert mount.is_dir() and list(mount.iterdir()) == []
    cedana.dump(jid, "--compression", "zlib")
    assert_gone(cedana, jid)

    shutil.rmtree(mount)
    (mount / "cache").mkdir(parents=True)
    (mount / "cache" / "decoy").write_text("not a kernel")

    cedana.restore(jid, "--jid", new)
    assert_finished(cedana, new)
    combined = without_notes(cedana.log(jid)) + without_notes(cedana.log(new))
    assert combined == expected
    # The host's directory is untouched by the job.
    assert sorted(p.name for p in (mount / "cache").iterdir()) == ["decoy"]
    assert_gone(cedana, jid, new)


def run_direct_sh(script: Path, mount: Path) -> tuple[str, ...]:
    import subprocess

    from cr_helpers import REPO, clean_env, fake_libdir

    out = subprocess.run(
        ["sh", str(script), sys.executable, str(mount)],
        env=clean_env(Path("/nonexistent"), LD_LIBRARY_PATH=str(fake_libdir())),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, (out.stdout, out.stderr)
    return tuple(out.stdout.splitlines())


# ---- what the checkpoint holds ------------------------------------------------------------


def test_checkpoint_layout_and_listing(cedana: Cedana, tmp_path: Path) -> None:
    jid = unique_jid("ly")
    start_training(cedana, jid, "--device-mib", "1", "--steps", "2000")  # killed at the end
    dumped = cedana.dump(jid, "--dir", str(tmp_path / "c"), "--stream", "3", "--leave-running")
    path = Path(dumped["path"])
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["job"]["id"] == jid
    assert manifest["job"]["segment_name"] == f"cedana-gpu.{jid}"
    assert manifest["streams"] == 3 and manifest["compression"] == "none"
    assert sorted(p.name for p in (path / "gpu").glob("img-*")) == ["img-0", "img-1", "img-2"]
    assert (path / "gpu" / "state.json").is_file()
    assert (path / "criu" / "pstree.img").is_file()
    assert sum(r["size"] for r in manifest["regions"]) == dumped["gpu_bytes"]
    files = {f["path"] for f in manifest["files"]}
    assert "gpu/state.json" in files and "criu/pstree.img" in files
    assert not any(p.name.endswith(".partial") for p in path.parent.iterdir())
    # A checkpoint holds the job's memory: nobody else may read any of it
    # (CRIU writes its images 0644; the dump makes them private).
    for p in [path, *path.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    # Text listing too.
    table = cedana.ok("job", "checkpoints", jid)
    header, row = table.splitlines()
    assert header.split()[0] == "CHECKPOINT" and row.split()[0] == dumped["checkpoint"]
    text = cedana.ok("dump", "job", jid, "--leave-running", "--dir", str(tmp_path / "c"))
    for word in ("path:", "size:", "freeze", "gpu dump", "criu dump", "write", "sync", "commit"):
        assert word in text, text
    assert len(cedana.json("job", "checkpoints", jid)) == 2
    assert cedana.job(jid)["state"] == "running"
    cedana.ok("job", "kill", jid)


# ---- minted handles across a restore ---------------------------------------------------

HANDLES_JOB = Path(__file__).parent / "jobs" / "handles_across_restore.py"


def _handles(line: str) -> dict[str, int]:
    return {k: int(v, 16) for k, v in (w.split("=") for w in line.split()[1:] if "=" in w)}


def test_handles_are_user_space_and_survive_restore(cedana: Cedana, tmp_path: Path) -> None:
    """Handles are user-space pointers (cuda.core and numba-cuda hold them as
    signed pointer-sized integers); a restored job uses the very same values;
    a process that attaches after the restore mints none of them."""
    jid, new = unique_jid("hd"), unique_jid("hdr")
    go = tmp_path / "go"
    cedana.exec_gpu(jid, sys.executable, str(HANDLES_JOB), str(go))
    before_line = cedana.wait_log(jid, r"^before ").splitlines()
    before = _handles(next(ln for ln in before_line if ln.startswith("before ")))
    assert set(before) == {"ctx", "stream", "event", "module", "function", "primary"}
    for name, v in before.items():
        assert 0 < v < 1 << 47 and v % 8 == 0, (name, hex(v))
    dumped = cedana.dump(jid)
    state = json.loads((Path(dumped["path"]) / "gpu" / "state.json").read_text())
    assert state["mint_regions"] >= 1
    assert {c["minted"] for c in state["contexts"]} >= {before["ctx"], before["primary"]}
    assert {s["minted"] for s in state["streams"]} >= {before["stream"]}
    cedana.restore(jid, "--jid", new)
    go.write_text("")
    assert_finished(cedana, new)
    log = without_notes(cedana.log(new))
    after = next(ln for ln in log if ln.startswith("after "))
    assert after.endswith(" ok") and _handles(after) == before, (after, before)
    child = _handles(next(ln for ln in log if ln.startswith("child ")))
    assert set(child) == {"ctx", "stream", "event"}
    assert not set(child.values()) & set(before.values()), (child, before)
    for name, v in child.items():
        assert 0 < v < 1 << 47, (name, hex(v))
    assert_gone(cedana, jid, new)


def test_numba_cuda_job_survives_restore(cedana: Cedana, tmp_path: Path) -> None:
    """numba-cuda (through cuda.core) holds the context handle as an integer and
    device arrays at their addresses; after a restore both still work."""
    jid, new = unique_jid("nb"), unique_jid("nbr")
    go = tmp_path / "go"
    job = HANDLES_JOB.parent / "numba_across_restore.py"
    cedana.exec_gpu(jid, sys.executable, str(job), str(go))
    text = cedana.wait_log(jid, r"^before ctx=")
    before = next(ln for ln in text.splitlines() if ln.startswith("before "))
    cedana.dump(jid)
    cedana.restore(jid, "--jid", new)
    go.write_text("")
    assert_finished(cedana, new)
    log = without_notes(cedana.log(new))
    assert log[-1] == "numba ok", log[-10:]
    assert _handles(next(ln for ln in log if ln.startswith("after "))) == _handles(before)
    assert_gone(cedana, jid, new)


def test_vmm_pool_managed_and_graph_survive_restore(cedana: Cedana, tmp_path: Path) -> None:
    """The job's own VMM mapping, a memory pool (a live block and a cached
    one), managed memory and an instantiated graph are in the checkpoint and
    work after the restore, at the same addresses
    (tests/jobs/state_across_restore.py checks the details)."""
    jid, new = unique_jid("st"), unique_jid("str")
    go = tmp_path / "go"
    job = HANDLES_JOB.parent / "state_across_restore.py"
    cedana.exec_gpu(jid, sys.executable, str(job), str(go))
    before = next(
        ln for ln in cedana.wait_log(jid, r"^before vmm=").splitlines() if ln.startswith("before ")
    )
    dumped = cedana.dump(jid)
    state = json.loads((Path(dumped["path"]) / "gpu" / "state.json").read_text())
    assert len(state["vmm_mappings"]) == 1 and len(state["pools"]) == 1
    assert sorted(b["cached"] for b in state["pool_blocks"]) == [False, True]
    managed = int(before.split("managed=")[1].split()[0], 16)
    assert [p["same_addr"] for p in state["pins"] if p["app_addr"] == managed] == [True]
    cedana.restore(jid, "--jid", new)
    go.write_text("")
    assert_finished(cedana, new)
    log = without_notes(cedana.log(new))
    assert log[-1] == before.replace("before", "after") + " ok", (log[-5:], before)
    assert_gone(cedana, jid, new)
