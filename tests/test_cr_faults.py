"""Checkpoint/restore when things go wrong: each fault has a documented outcome.

- CRIU killed mid-dump, the controller killed mid-dump: the dump fails with
  one line, no checkpoint is listed or left half-written; with CRIU killed the
  job runs on and finishes right; with its controller killed the job cannot
  go on and is recorded as failed, its segment removed.
- A flipped byte in a shard: the restoring controller finds the checksum
  mismatch before CRIU starts any process; the restore fails with one line,
  leaving no process, no controller, no segment.
- A missing shard, a truncated archive, a flipped byte in a CRIU image, a
  manifest of a newer format: refused by the CLI's check before any process
  starts (no job is even created).
- A job busy too long to freeze: a clear error, and the job runs on.
- Not root: one line saying checkpoint and restore need root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cr_helpers import (
    REPO,
    Cedana,
    alive,
    assert_one_line_error,
    clean_env,
    criu_killer,
    needs_root,
    run_direct,
    segment_leftovers,
    unique_jid,
    wait_for,
    without_notes,
)

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

TRAIN = ("samples/train_mlp.py", "--steps", "24", "--print-every", "1")
SLEEP = ("--sleep-per-step", "0.05")


@dataclass
class Checkpoints:
    directory: Path  # --compression none --stream 2
    archive: Path  # --compression tar


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkpoints]:
    """Two checkpoints of one training job (a directory and an archive), made once."""
    base = tmp_path_factory.mktemp("faults")
    c = Cedana(base / "state")
    jid = unique_jid("fx")
    try:
        # Steps enough (20 s) that a loaded machine cannot end the job before
        # the second dump; that dump ends it anyway.
        c.exec_gpu(jid, sys.executable, *TRAIN, *SLEEP, "--device-mib", "1", "--steps", "400")
        c.wait_log(jid, r"^step \d+ loss", 3)
        d = c.dump(jid, "--dir", str(base / "c"), "--stream", "2", "--leave-running")
        a = c.dump(jid, "--dir", str(base / "c"), "--compression", "tar")
        yield Checkpoints(Path(d["path"]), Path(a["path"]))
    finally:
        c.kill_all()


def copy_of(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy" / src.name
    dst.parent.mkdir()
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


def assert_refused_before_start(c: Cedana, proc: subprocess.CompletedProcess[str]) -> str:
    line = assert_one_line_error(proc)
    assert c.ps() == {}, "a job was created for a checkpoint that was refused"
    return line


def test_missing_shard_is_refused(cedana: Cedana, tmp_path: Path, checkpoints: Checkpoints) -> None:
    ckpt = copy_of(checkpoints.directory, tmp_path)
    (ckpt / "gpu" / "img-1").unlink()
    line = assert_refused_before_start(cedana, cedana("restore", "job", "--path", str(ckpt)))
    assert "img-1" in line and "missing" in line


def test_truncated_archive_is_refused(
    cedana: Cedana, tmp_path: Path, checkpoints: Checkpoints
) -> None:
    ckpt = copy_of(checkpoints.archive, tmp_path)
    with open(ckpt, "r+b") as f:
        f.truncate(ckpt.stat().st_size * 2 // 3)
    line = assert_refused_before_start(cedana, cedana("restore", "job", "--path", str(ckpt)))
    assert "truncated" in line
    assert list((cedana.state / "restore").iterdir()) == []  # scratch space cleaned


def test_newer_format_is_refused(cedana: Cedana, tmp_path: Path, checkpoints: Checkpoints) -> None:
    ckpt = copy_of(checkpoints.directory, tmp_path)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["format_version"] = 99
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    line = assert_refused_before_start(cedana, cedana("restore", "job", "--path", str(ckpt)))
    assert "newer" in line and "upgrade" in line


def test_flipped_byte_in_a_criu_image_is_refused(
    cedana: Cedana, tmp_path: Path, checkpoints: Checkpoints
) -> None:
    ckpt = copy_of(checkpoints.directory, tmp_path)
    pages = max((ckpt / "criu").glob("pages-*.img"), key=lambda p: p.stat().st_size)
    flip(pages, pages.stat().st_size // 2)
    line = assert_refused_before_start(cedana, cedana("restore", "job", "--path", str(ckpt)))
    assert pages.name in line and "checksum" in line


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def test_flipped_byte_in_a_shard_fails_the_restore_before_any_process(
    cedana: Cedana, tmp_path: Path, checkpoints: Checkpoints
) -> None:
    ckpt = copy_of(checkpoints.directory, tmp_path)
    shard = max((ckpt / "gpu").glob("img-*"), key=lambda p: p.stat().st_size)
    flip(shard, shard.stat().st_size // 2)
    new = unique_jid("fb")
    line = assert_one_line_error(cedana("restore", "job", "--path", str(ckpt), "--jid", new))
    assert "checksum mismatch" in line and shard.name in line
    job = cedana.job(new)
    assert job["state"] == "failed" and "checksum mismatch" in job["error"]
    assert job["pid"] is None  # CRIU never ran
    assert not alive(job["controller_pid"])
    assert segment_leftovers(new) == []
    manifest = json.loads((ckpt / "manifest.json").read_text())
    old_segment = Path("/dev/shm/cedana-gpu.d") / new / manifest["job"]["segment_name"]
    assert not old_segment.exists()


def test_device_too_small_is_refused_before_any_process(
    cedana: Cedana, checkpoints: Checkpoints
) -> None:
    new = unique_jid("sm")
    out = cedana(
        "restore", "job", "--path", str(checkpoints.directory), "--jid", new,
        FAKE_CUDA_DEVICE_MEMORY_MIB="4",
    )  # fmt: skip
    line = assert_one_line_error(out)
    assert "has 4.0 MiB, the checkpoint needs" in line
    job = cedana.job(new)
    assert job["state"] == "failed" and job["pid"] is None
    assert not alive(job["controller_pid"])
    assert segment_leftovers(new) == []
    # The same checkpoint restores where it fits.
    again = unique_jid("sm")
    cedana.restore("--path", str(checkpoints.directory), "--jid", again)
    assert cedana.wait_final(again)["status"] == "exited (0)", cedana.log(again)


# ---- faults during a dump ---------------------------------------------------------------


def test_criu_killed_mid_dump(cedana: Cedana, tmp_path: Path) -> None:
    expected = list(run_direct(*TRAIN))
    killer = criu_killer(tmp_path, "criu")
    jid = unique_jid("kc")
    cedana.exec_gpu(jid, sys.executable, *TRAIN, *SLEEP)
    cedana.wait_log(jid, r"^step \d+ loss", 3)
    ckdir = tmp_path / "c"
    out = cedana("dump", "job", jid, "--dir", str(ckdir), **killer)
    line = assert_one_line_error(out)
    assert "CRIU could not dump" in line
    assert cedana.json("job", "checkpoints", jid) == []
    assert not ckdir.exists() or list(ckdir.iterdir()) == []
    # The job was unfrozen and continued: it finishes as if nothing happened.
    job = cedana.wait_final(jid)
    assert job["status"] == "exited (0)", (cedana.log(jid), cedana.controller_log(jid))
    assert without_notes(cedana.log(jid)) == expected
    assert segment_leftovers(jid) == []


def test_client_killed_while_criu_dumps_leaves_the_job_running(
    cedana: Cedana, tmp_path: Path
) -> None:
    """SIGKILL to 'cedana dump' while its CRIU holds the job: CRIU finishes
    alone and leaves the tree stopped (--leave-stopped); the job's controller
    sees its client gone, unfreezes the GPU side and, once CRIU has let go,
    continues the tree. The job finishes as if nothing happened."""
    expected = list(run_direct(*TRAIN))
    killer = criu_killer(tmp_path, "client")
    jid = unique_jid("kl")
    cedana.exec_gpu(jid, sys.executable, *TRAIN, *SLEEP)
    cedana.wait_log(jid, r"^step \d+ loss", 3)
    out = cedana("dump", "job", jid, "--dir", str(tmp_path / "c"), **killer)
    assert out.returncode == -signal.SIGKILL, (out.stdout, out.stderr)
    job = cedana.wait_final(jid)
    assert job["status"] == "exited (0)", (cedana.log(jid), cedana.controller_log(jid))
    assert without_notes(cedana.log(jid)) == expected
    assert "continued: its dumping client went away" in cedana.controller_log(jid)
    assert segment_leftovers(jid) == []


def test_client_killed_while_criu_dumps_a_plain_job_leaves_it_running(
    cedana: Cedana, tmp_path: Path
) -> None:
    """The same for a job without GPU: the dump holds it through its controller
    ('hold'), which continues it when the client dies during CRIU."""
    # A counter that forks nothing (CRIU races short-lived children).
    code = "import time\nfor i in range(60):\n    print(i, flush=True)\n    time.sleep(0.05)\n"
    killer = criu_killer(tmp_path, "client")
    jid = unique_jid("kp")
    cedana.ok("exec", "--jid", jid, "--", sys.executable, "-c", code)
    cedana.wait_log(jid, r"^\d+$", 3)
    out = cedana("dump", "job", jid, "--dir", str(tmp_path / "c"), **killer)
    assert out.returncode == -signal.SIGKILL, (out.stdout, out.stderr)
    job = cedana.wait_final(jid)
    assert job["status"] == "exited (0)", (cedana.log(jid), cedana.controller_log(jid))
    assert without_notes(cedana.log(jid)) == [str(i) for i in range(60)]
    assert "continued: its dumping client went away" in cedana.controller_log(jid)


def test_controller_killed_mid_dump(cedana: Cedana, tmp_path: Path) -> None:
    jid = unique_jid("kk")
    cedana.exec_gpu(
        jid, sys.executable, *TRAIN, *SLEEP, "--device-mib", "512", CEDANA_GPU_TIMEOUT_MS="1000"
    )
    cedana.wait_log(jid, r"^step \d+ loss", 2)
    controller = cedana.job(jid)["controller_pid"]
    ckdir = tmp_path / "c"
    dump = subprocess.Popen(
        [sys.executable, "-m", "cedana_gpu", "dump", "job", jid, "--dir", str(ckdir),
         "--compression", "gzip"],
        env=cedana.env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Kill it as soon as it writes the GPU state.
        wait_for(lambda: any(ckdir.glob(".*.partial/gpu")), "the GPU dump to start", 300)
        os.kill(controller, signal.SIGKILL)
        _out, err = dump.communicate(timeout=600)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    assert dump.returncode == 1, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "controller" in err
    assert cedana.json("job", "checkpoints", jid) == []
    assert list(ckdir.iterdir()) == []
    # Without its controller the job cannot go on: it ends, recorded as failed.
    job = cedana.wait_final(jid)
    assert job["state"] == "failed"
    assert segment_leftovers(jid) == []


def test_sigterm_mid_dump_undoes_it(cedana: Cedana, tmp_path: Path) -> None:
    """SIGTERM to 'cedana dump' while the GPU state is written: the dump's
    undos run (the job is unfrozen and runs on, the partial checkpoint goes)
    and it exits as the signal would, 143."""
    big = ("--device-mib", "512")  # a GPU dump long enough to be interrupted
    expected = list(run_direct(*TRAIN, *big))
    jid = unique_jid("st")
    cedana.exec_gpu(jid, sys.executable, *TRAIN, *SLEEP, *big)
    cedana.wait_log(jid, r"^step \d+ loss", 2)
    ckdir = tmp_path / "c"
    dump = subprocess.Popen(
        [sys.executable, "-m", "cedana_gpu", "dump", "job", jid, "--dir", str(ckdir),
         "--compression", "gzip"],
        env=cedana.env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: any(ckdir.glob(".*.partial/gpu")), "the GPU dump to start", 300)
        dump.send_signal(signal.SIGTERM)
        _out, err = dump.communicate(timeout=600)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    assert dump.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    assert cedana.json("job", "checkpoints", jid) == []
    assert list(ckdir.iterdir()) == []
    job = cedana.wait_final(jid)
    assert job["status"] == "exited (0)", (cedana.log(jid), cedana.controller_log(jid))
    assert without_notes(cedana.log(jid)) == expected
    assert segment_leftovers(jid) == []


HOST_FN_JOB = """\
import ctypes, sys, time
from cuda.bindings import driver as cu

def ok(r):
    err, *rest = r if isinstance(r, tuple) else (r,)
    assert err == cu.CUresult.CUDA_SUCCESS, err
    return rest[0] if len(rest) == 1 else None

ok(cu.cuInit(0))
ctx = ok(cu.cuCtxCreate(None, 0, ok(cu.cuDeviceGet(0))))
stream = ok(cu.cuStreamCreate(0))

@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def busy(_):
    time.sleep(float(sys.argv[1]))

ok(cu.cuLaunchHostFunc(stream, cu.CUhostFn(ctypes.cast(busy, ctypes.c_void_p).value), 0))
print("busy", flush=True)
ok(cu.cuStreamSynchronize(stream))
print("done", flush=True)
"""


def test_freeze_of_a_busy_job_times_out_with_a_clear_error(cedana: Cedana, tmp_path: Path) -> None:
    script = tmp_path / "busy.py"
    script.write_text(HOST_FN_JOB)
    jid = unique_jid("fz")
    cedana.exec_gpu(jid, sys.executable, str(script), "4")
    cedana.wait_log(jid, r"^busy$")
    ckdir = tmp_path / "c"
    out = cedana("dump", "job", jid, "--dir", str(ckdir), CEDANA_FREEZE_TIMEOUT_MS="300")
    line = assert_one_line_error(out)
    assert "cannot freeze" in line
    assert list(ckdir.iterdir()) == []
    job = cedana.wait_final(jid)
    assert job["status"] == "exited (0)", cedana.log(jid)
    assert without_notes(cedana.log(jid)) == ["busy", "done"]


# ---- not root ---------------------------------------------------------------------------

NOBODY = 65534


def test_not_root_is_one_line(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to run as another user")
    state = tmp_path / "nobody-state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    tmp_path.chmod(0o755)
    probe = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", "import cedana_gpu"],
        env=clean_env(state), cwd=REPO, capture_output=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("no Python here that an ordinary user can run cedana with")
    for args in (("dump", "job", "x"), ("restore", "job", "x"), ("dump", "process", "1")):
        out = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-m", "cedana_gpu", *args],
            env=clean_env(state, HOME=str(state)), cwd=REPO, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert "need root" in assert_one_line_error(out)


def test_dump_errors_are_one_line(cedana: Cedana) -> None:
    assert "no job 'nope'" in assert_one_line_error(cedana("dump", "job", "nope"))
    assert "no running cedana job has pid" in assert_one_line_error(
        cedana("dump", "process", "999999999")
    )
    assert "has no checkpoints" in assert_one_line_error(_exec_then_restore(cedana))
    assert "no such checkpoint" in assert_one_line_error(
        cedana("restore", "job", "--path", "/nonexistent/ckpt")
    )


def _exec_then_restore(c: Cedana) -> subprocess.CompletedProcess[str]:
    jid = unique_jid("nc")
    c.ok("exec", "--jid", jid, "--attach", "--", "true")
    return c("restore", "job", jid)
