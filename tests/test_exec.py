"""``cedana exec``, ``cedana ps`` and ``cedana job``, run as a user runs them.

Each test has its own state directory (``CEDANA_STATE_DIR``) and its own job
ids, so tests run in parallel; GPU jobs also get job ids unique across
workers, because their segments share /dev/shm.

The plain-job tests need nothing native. The GPU tests need the interposer
and the dispatcher built and installed (``make setup``), and run the job on
the fake driver.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cr_helpers import (
    Cedana,
    alive,
    assert_one_line_error,
    clean_env,
    exec_gpu_args,
    native_ready,
    unique_jid,
)

from cedana_gpu.controller import shm_layout

REPO = Path(__file__).resolve().parent.parent
CLI_TIMEOUT = 600  # a hang fails the test instead of blocking the run


@pytest.fixture
def cedana(tmp_path: Path) -> Cedana:
    return Cedana(tmp_path / "state")


def wait_gone(pid: int | None, timeout: float = 120) -> bool:
    """Whether ``pid`` ended within ``timeout`` (a bound against hangs, not a timing check)."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---- plain jobs ------------------------------------------------------------------


def test_attach_streams_output_and_returns_exit_code(cedana: Cedana) -> None:
    jid = unique_jid()
    out = cedana(
        "exec", "--jid", jid, "--attach", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert out.returncode == 3, out.stderr
    assert out.stdout.splitlines() == ["out", "err"]
    job = cedana.job(jid)
    assert job["state"] == "exited" and job["exit_code"] == 3
    assert job["status"] == "exited (3)"
    assert job["gpu"] is False
    assert Path(job["log_path"]).read_text() == "out\nerr\n"
    assert not alive(job["controller_pid"])
    assert not Path(job["socket_path"]).exists()


def test_run_process_is_an_alias(cedana: Cedana) -> None:
    jid = unique_jid()
    out = cedana("run", "process", "--jid", jid, "--attach", "--", "sh", "-c", "echo hi; exit 5")
    assert out.returncode == 5, out.stderr
    assert out.stdout == "hi\n"
    assert cedana.job(jid)["status"] == "exited (5)"


def test_generated_ids_are_unique(cedana: Cedana) -> None:
    ids = set()
    for _ in range(3):
        out = cedana("exec", "--", "true")
        assert out.returncode == 0, out.stderr
        ids.add(out.stdout.strip())
    assert len(ids) == 3
    assert set(cedana.ps()) == ids


@pytest.mark.skipif(os.geteuid() != 0, reason="a PID namespace needs root")
def test_job_is_the_init_of_its_own_pid_namespace(cedana: Cedana) -> None:
    jid = unique_jid()
    out = cedana("exec", "--jid", jid, "--attach", "--", "sh", "-c", "echo $$")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "1\n"
    job = cedana.job(jid)
    assert job["pid_namespace"] is True and job["pid"] > 1


def test_detached_job_kill(cedana: Cedana) -> None:
    jid = unique_jid()
    out = cedana("exec", "--jid", jid, "--", "sleep", "600")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{jid}\n"
    job = cedana.job(jid)
    assert job["state"] == "running" and alive(job["pid"]) and alive(job["controller_pid"])

    # stdout and stderr are the log, opened O_APPEND (CRIU restores those even
    # when the file grew meanwhile).
    for fd in (1, 2):
        assert os.readlink(f"/proc/{job['pid']}/fd/{fd}") == job["log_path"]
        flags = Path(f"/proc/{job['pid']}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
        assert int(flags, 8) & os.O_APPEND

    table = cedana("ps")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["JOB", "PID", "STATUS", "GPU", "ENGINE", "LOG"]
    assert [r.split() for r in rows] == [
        [jid, str(job["pid"]), "running", "-", "-", job["log_path"]]
    ]

    info = cedana.inspect(jid)
    assert info["live"]["job_id"] == jid
    assert info["live"]["pids"] == {"controller": job["controller_pid"], "job": job["pid"]}

    kill = cedana("job", "kill", jid)
    assert kill.returncode == 0, kill.stderr
    assert kill.stdout == f"{jid} killed (SIGKILL)\n"
    job = cedana.job(jid)
    assert job["state"] == "killed" and job["signal"] == 9
    assert not alive(job["pid"])
    assert not alive(job["controller_pid"])
    assert cedana.inspect(jid)["live"] is None

    again = cedana("job", "kill", jid)
    assert "is not running" in assert_one_line_error(again)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_attach_kills_the_job(cedana: Cedana) -> None:
    jid = unique_jid()
    cli = subprocess.Popen(
        [sys.executable, "-m", "cedana_gpu", "exec", "--jid", jid, "--attach", "--",
         "sh", "-c", "echo started; sleep 600"],
        env=cedana.env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As from a terminal: a run started in the background of a shell
        # (nohup, '&') inherits SIGINT ignored, and the CLI rightly keeps that.
        preexec_fn=_default_sigint,
    )  # fmt: skip
    assert cli.stdout is not None
    assert cli.stdout.readline() == "started\n"
    cli.send_signal(signal.SIGINT)
    _, err = cli.communicate(timeout=CLI_TIMEOUT)
    assert cli.returncode == 130, err
    job = cedana.job(jid)
    assert job["status"] == "killed (SIGKILL)"
    assert not alive(job["pid"]) and not alive(job["controller_pid"])


def test_sigterm_to_the_controller_kills_the_job(cedana: Cedana) -> None:
    jid = unique_jid()
    assert cedana("exec", "--jid", jid, "--", "sleep", "600").returncode == 0
    job = cedana.job(jid)
    os.kill(job["controller_pid"], 15)
    assert wait_gone(job["controller_pid"])
    job = cedana.job(jid)
    assert job["state"] == "killed" and job["signal"] == 9
    assert not alive(job["pid"])


def test_shutdown_over_the_control_socket(cedana: Cedana) -> None:
    from cedana_gpu.controller import control

    jid = unique_jid()
    assert cedana("exec", "--jid", jid, "--", "sleep", "600").returncode == 0
    job = cedana.job(jid)
    with pytest.raises(control.ControlError, match="unknown op 'nonsense'"):
        control.control_request(jid, {"op": "nonsense"}, state=cedana.state)
    answer = control.control_request(jid, {"op": "shutdown"}, state=cedana.state)
    assert answer == {"ok": True, "stopping": True}
    assert wait_gone(job["controller_pid"])
    assert cedana.job(jid)["state"] == "killed"
    with pytest.raises(control.ControlError, match="no controller"):
        control.control_request(jid, {"op": "info"}, state=cedana.state)


def test_user_errors_are_one_line(cedana: Cedana) -> None:
    jid = unique_jid()
    assert cedana("exec", "--jid", jid, "--", "true").returncode == 0
    assert "exists already" in assert_one_line_error(cedana("exec", "--jid", jid, "--", "true"))
    assert "invalid job id" in assert_one_line_error(cedana("exec", "--jid", "a/b", "--", "true"))
    assert "command not found" in assert_one_line_error(
        cedana("exec", "--", "no-such-command-cedana")
    )
    assert "no command" in assert_one_line_error(cedana("exec", "--attach"))
    assert "no job 'nope'" in assert_one_line_error(cedana("job", "kill", "nope"))
    assert "no job 'nope'" in assert_one_line_error(cedana("job", "inspect", "nope"))
    assert "--gpu-driver needs --gpu" in assert_one_line_error(
        cedana("exec", "--gpu-driver", "fake", "--", "true")
    )


def test_gpu_job_that_cannot_start_is_one_line_and_recorded(cedana: Cedana, tmp_path: Path) -> None:
    empty = tmp_path / "native"
    (empty / "fake").mkdir(parents=True)
    jid = unique_jid()
    out = cedana(
        "exec", "--gpu", "--gpu-driver", "fake", "--jid", jid, "--", "true",
        CEDANA_GPU_NATIVE_DIR=str(empty),
    )  # fmt: skip
    assert "libcuda.so.1 is missing" in assert_one_line_error(out)
    job = cedana.job(jid)
    assert job["state"] == "failed" and "libcuda.so.1 is missing" in job["error"]
    assert not shm_layout.segment_path(jid).exists()


def test_ps_when_there_are_no_jobs(cedana: Cedana) -> None:
    out = cedana("ps")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["JOB", "PID", "STATUS", "GPU", "ENGINE", "LOG"]
    assert cedana.ps() == {}


def test_state_dir_is_private(cedana: Cedana) -> None:
    assert cedana("exec", "--attach", "--", "true").returncode == 0
    for path in (cedana.state, cedana.state / "jobs"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((cedana.state / "jobs.db").stat().st_mode) == 0o600
    (job_dir,) = (cedana.state / "jobs").iterdir()
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    for f in job_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


NOBODY = 65534


def _as_nobody(*args: str) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]


# The probe starts the interpreter again from itself, as the controller is started.
_PROBE = (
    "import subprocess, sys; "
    "subprocess.run([sys.executable, '-c', 'import cedana_gpu'], check=True)"
)


@pytest.fixture
def nobody() -> Iterator[tuple[str, Path]]:
    """(a Python an ordinary user can run cedana with, a state directory of theirs)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    # This environment's own Python may live where an ordinary user cannot go
    # (under /root); plain jobs need nothing but the standard library.
    for python in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(
            _as_nobody(python, "-c", _PROBE),
            env=clean_env(Path("/nonexistent")),
            cwd=REPO,
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            break
    else:
        pytest.skip("no Python here that an ordinary user can run cedana with")
    base = Path(tempfile.mkdtemp(prefix="cedana-nobody-"))
    os.chown(base, NOBODY, NOBODY)
    try:
        yield python, base / "state"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_ordinary_user_runs_without_pid_namespace_and_is_told_once(
    nobody: tuple[str, Path],
) -> None:
    python, state = nobody
    jid = unique_jid()
    run = subprocess.run(
        _as_nobody(
            python,
            "-m",
            "cedana_gpu",
            "exec",
            "--jid",
            jid,
            "--attach",
            "--",
            "sh",
            "-c",
            "echo pid $$; exit 4",
        ),
        env=clean_env(state, HOME=str(state.parent)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert run.returncode == 4, run.stderr
    lines = run.stdout.splitlines()
    notes = [ln for ln in lines if "without a PID namespace" in ln]
    assert len(notes) == 1, run.stdout
    assert "needs root" in notes[0]
    assert any(ln.startswith("pid ") and ln != "pid 1" for ln in lines)
    st = state.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)
    log = state / "jobs" / jid / "job.log"
    assert log.stat().st_uid == NOBODY and stat.S_IMODE(log.stat().st_mode) == 0o600


# ---- GPU jobs (interposer + dispatcher, on the fake driver) ------------------------


@pytest.fixture(scope="module")
def native() -> Path:
    return native_ready()


# Put in front of every GPU job snippet: the driver API as `cu`, and `ok()`.
GPU_PRELUDE = """\
import os, sys, time
from cuda.bindings import driver as cu

def ok(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cu.CUresult.CUDA_SUCCESS:
        raise SystemExit(f"driver call failed: {err!r}")
    return rest[0] if len(rest) == 1 else tuple(rest) if rest else None

ok(cu.cuInit(0))
dev = ok(cu.cuDeviceGet(0))
ctx = ok(cu.cuCtxCreate(None, 0, dev))
buf = ok(cu.cuMemAlloc(1 << 20))
ok(cu.cuMemsetD8(buf, 7, 1 << 20))
ok(cu.cuCtxSynchronize())
print("gpu ready", flush=True)
"""


def gpu_job(code: str) -> list[str]:
    return [sys.executable, "-c", GPU_PRELUDE + textwrap.dedent(code)]


def controller_log(job: dict[str, Any]) -> str:
    path = Path(job["log_path"]).with_name("controller.log")
    return path.read_text(errors="replace") if path.exists() else "(no controller.log)"


def assert_gpu_job_gone(job: dict[str, Any]) -> None:
    jid = job["jid"]
    why = controller_log(job)
    assert not alive(job["controller_pid"]), why
    assert not shm_layout.segment_path(jid).exists(), why
    assert shm_layout.pin_paths(jid) == [], why
    assert not Path(job["socket_path"]).exists(), why


def run_direct(native: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """A sample run directly on the fake driver."""
    return subprocess.run(
        [sys.executable, *args],
        env=clean_env(Path("/nonexistent"), LD_LIBRARY_PATH=str(native / "fake")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("threads", [1, 3])
def test_train_mlp_through_cedana_matches_direct(
    cedana: Cedana, native: Path, threads: int
) -> None:
    args = ["samples/train_mlp.py", "--steps", "20", "--threads", str(threads)]
    direct = run_direct(native, args)
    assert direct.returncode == 0, direct.stderr
    checksum = direct.stdout.splitlines()[-1]
    assert checksum.startswith("checksum: ")

    jid = unique_jid("mlp")
    out = cedana(*exec_gpu_args(jid, sys.executable, *args))
    assert out.returncode == 0, (out.stdout, out.stderr)
    lines = out.stdout.splitlines()
    assert checksum in lines
    # Every line the sample printed directly, in the same order.
    printed = [ln for ln in lines if ln in set(direct.stdout.splitlines())]
    assert printed == direct.stdout.splitlines()

    job = cedana.job(jid)
    assert job["status"] == "exited (0)" and job["gpu"] is True and job["driver"] == "fake"
    assert_gpu_job_gone(job)


def test_gpu_job_exit_code_propagates(cedana: Cedana, native: Path) -> None:
    jid = unique_jid("ex")
    out = cedana(*exec_gpu_args(jid, *gpu_job("ok(cu.cuMemFree(buf)); sys.exit(3)")))
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert "gpu ready" in out.stdout.splitlines()
    job = cedana.job(jid)
    assert job["state"] == "exited" and job["exit_code"] == 3
    assert_gpu_job_gone(job)


def test_gpu_job_detached_inspect_and_kill(cedana: Cedana, native: Path) -> None:
    jid = unique_jid("kl")
    code = """
    stream = ok(cu.cuStreamCreate(0))
    while True:
        ok(cu.cuMemsetD8Async(buf, 1, 1 << 20, stream))
        ok(cu.cuStreamSynchronize(stream))
        time.sleep(0.01)
    """
    out = cedana("exec", "--gpu", "--gpu-driver", "fake", "--jid", jid, "--", *gpu_job(code))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{jid}\n"
    job = cedana.job(jid)
    log = Path(job["log_path"])
    deadline = time.monotonic() + CLI_TIMEOUT
    while "gpu ready" not in log.read_text() and time.monotonic() < deadline:
        assert cedana.job(jid)["state"] == "running", log.read_text()
        time.sleep(0.05)

    segment = shm_layout.segment_path(jid)
    st = segment.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    header = shm_layout.read_header(jid)
    assert header is not None
    assert header.magic == shm_layout.CGS_MAGIC
    assert header.layout_version == shm_layout.CGS_LAYOUT_VERSION
    assert header.job_id.decode() == jid
    assert header.generation == 1
    assert header.state == shm_layout.CgsState.CGS_STATE_RUNNING
    assert header.controller_pid == job["controller_pid"]

    info = cedana.inspect(jid)
    assert info["live"]["job_id"] == jid and info["live"]["gpu"] is True
    assert info["live"]["segment"] == str(segment)
    assert isinstance(info["live"]["dispatcher"], dict)

    kill = cedana("job", "kill", jid)
    assert kill.returncode == 0, kill.stderr
    job = cedana.job(jid)
    assert job["state"] == "killed" and job["signal"] == 9
    assert not alive(job["pid"])
    assert_gpu_job_gone(job)


def test_gpu_job_that_exits_without_cleaning_up(cedana: Cedana, native: Path) -> None:
    """No cuCtxDestroy, no frees, queued work in flight, os._exit: all goes away."""
    jid = unique_jid("ab")
    code = """
    stream = ok(cu.cuStreamCreate(0))
    for _ in range(100):
        ok(cu.cuMemsetD8Async(buf, 3, 1 << 20, stream))
    host = ok(cu.cuMemAllocHost(4096))
    os._exit(0)
    """
    out = cedana(
        "exec", "--gpu", "--gpu-driver", "fake", "--jid", jid, "--attach", "--", *gpu_job(code)
    )
    assert out.returncode == 0, (out.stdout, out.stderr)
    job = cedana.job(jid)
    assert job["status"] == "exited (0)"
    assert_gpu_job_gone(job)


# ---- the control socket ------------------------------------------------------------


def test_control_socket_long_path_and_errors(tmp_path: Path) -> None:
    """Paths longer than sun_path allows still work; bad requests get one-line errors."""
    from cedana_gpu.controller import control

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(str(path)) > 108
    server = control.ControlServer(
        path,
        {
            "echo": lambda req: {"got": req.get("x")},
            "boom": lambda req: {"never": 1 // 0},
        },
    )
    server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert control.request(path, {"op": "echo", "x": [1, "a"]}) == {"ok": True, "got": [1, "a"]}
        with pytest.raises(control.ControlError, match="unknown op 'nope'"):
            control.request(path, {"op": "nope"})
        with pytest.raises(control.ControlError, match="boom failed: ZeroDivisionError"):
            control.request(path, {"op": "boom"})
        assert server.handle(b"\xff not json")["ok"] is False
        assert server.handle(b"[1, 2]") == {"ok": False, "error": "a message must be a JSON object"}
        # The server survives all of that.
        assert control.request(path, {"op": "echo", "x": 2})["got"] == 2
    finally:
        server.close()
    assert not path.exists()
    with pytest.raises(control.ControlError, match="no controller"):
        control.request(path, {"op": "echo"})


def test_ordinary_user_gpu_job(nobody: tuple[str, Path], native: Path) -> None:
    """An ordinary user's GPU job: forwarding works, the segment is theirs alone."""
    python, state = nobody
    vector_add = native / "bin" / "vector_add"
    env = clean_env(state, HOME=str(state.parent), CEDANA_GPU_NATIVE_DIR=str(native))
    if subprocess.run(_as_nobody("test", "-x", str(vector_add)), check=False).returncode != 0:
        pytest.skip(f"{vector_add} cannot be run by an ordinary user")
    jid = unique_jid("nb")
    script = f'stat -c "segment %u %a" /dev/shm/cedana-gpu.$CEDANA_GPU_JOB_ID; exec {vector_add}'
    run = subprocess.run(
        _as_nobody(python, "-m", "cedana_gpu", "exec", "--gpu", "--gpu-driver", "fake",
                   "--jid", jid, "--attach", "--", "sh", "-c", script),
        env=env, cwd=REPO, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout, run.stderr)
    lines = run.stdout.splitlines()
    assert f"segment {NOBODY} 600" in lines
    assert lines[-1] == "result: ok"
    assert not shm_layout.segment_path(jid).exists()


def test_gpu_job_whose_controller_is_killed(cedana: Cedana, native: Path) -> None:
    """The job's calls fail (bounded) instead of hanging; cedana then records the
    job as failed and removes the segment the dead controller left behind."""
    jid = unique_jid("ck")
    code = """
    stream = ok(cu.cuStreamCreate(0))
    while True:
        (err,) = cu.cuStreamSynchronize(stream)
        if err != cu.CUresult.CUDA_SUCCESS:
            print(f"call failed: {err.name}", flush=True)
            sys.exit(9)
        time.sleep(0.01)
    """
    out = cedana(
        "exec", "--gpu", "--gpu-driver", "fake", "--jid", jid, "--", *gpu_job(code),
        CEDANA_GPU_TIMEOUT_MS="1000",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    job = cedana.job(jid)
    log = Path(job["log_path"])
    deadline = time.monotonic() + CLI_TIMEOUT
    while "gpu ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(job["controller_pid"], 9)
    assert wait_gone(job["controller_pid"])
    assert wait_gone(job["pid"]), "the job hangs after its controller died"
    assert "call failed: CUDA_ERROR_" in log.read_text()
    job = cedana.job(jid)
    assert job["state"] == "failed"
    assert not shm_layout.segment_path(jid).exists()
    assert not Path(job["socket_path"]).exists()
