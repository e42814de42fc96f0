"""Shared by the checkpoint/restore tests (test_dump_restore.py, test_cr_*.py).

Each test has its own state directory (``CEDANA_STATE_DIR``), its own job ids
(unique across xdist workers: segments and per-job /dev/shm directories are
machine-wide) and its own checkpoint directories, so the tests spread over
workers. Nothing here measures time: waits are bounded only so that a hang
fails the test instead of blocking the run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CLI_TIMEOUT = 600  # a hang fails the test instead of blocking the run
WAIT = 120.0  # bound on waiting for a job to reach a state

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="checkpoint/restore needs root (CRIU)")


def unique_jid(prefix: str = "cr") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def clean_env(state: Path | None = None, **extra: str) -> dict[str, str]:
    """The caller's environment, minus anything that picks or configures a driver or a
    job's GPU set-up; with ``state``, a state directory of the caller's own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FAKE_CUDA_")
        and k
        not in (
            "LD_LIBRARY_PATH",
            "LD_PRELOAD",
            "CEDANA_GPU_DRIVER",
            "CEDANA_GPU_SHM",
            "CEDANA_PERSISTENT_MOUNTS",
        )
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if state is not None:
        env["CEDANA_STATE_DIR"] = str(state)
    env.update(extra)
    return env


def alive(pid: int | None) -> bool:
    from cedana_gpu.jobs.processes import process_alive

    return process_alive(pid)


def wait_for(pred: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class Cedana:
    """Runs ``cedana`` with one state directory."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(self.state, **extra)

    def __call__(
        self, *args: str, timeout: float = CLI_TIMEOUT, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cedana_gpu", *args],
            env=self.env(**env),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, **env: str) -> str:
        out = self(*args, **env)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.ok(*args, "--output", "json", **env))

    def ps(self) -> dict[str, dict[str, Any]]:
        return {j["jid"]: j for j in self.json("ps")}

    def job(self, jid: str) -> dict[str, Any]:
        return self.ps()[jid]

    def inspect(self, jid: str) -> dict[str, Any]:
        return json.loads(self.ok("job", "inspect", jid))

    def exec_gpu(self, jid: str, *cmd: str, mounts: tuple[str, ...] = (), **env: str) -> None:
        """A GPU job on the fake driver, intercepted (the engine these tests test),
        unless ``CEDANA_GPU_ENGINE`` in ``env`` chooses another (``auto``)."""
        args = ["exec", "--gpu", "--gpu-driver", "fake", "--jid", jid]
        if "CEDANA_GPU_ENGINE" not in env:
            args += ["--gpu-engine", "intercept"]
        for m in mounts:
            args += ["--persistent-mount", m]
        self.ok(*args, "--", *cmd, **env)

    def dump(self, jid: str, *options: str, **env: str) -> dict[str, Any]:
        return self.json("dump", "job", jid, *options, **env)

    def restore(self, *args: str, **env: str) -> dict[str, Any]:
        return self.json("restore", "job", *args, **env)

    def log(self, jid: str) -> str:
        path = self.state / "jobs" / jid / "job.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def controller_log(self, jid: str) -> str:
        path = self.state / "jobs" / jid / "controller.log"
        return path.read_text(errors="replace") if path.exists() else "(no controller.log)"

    def wait_final(self, jid: str, timeout: float = WAIT) -> dict[str, Any]:
        """The job once it has ended (and its controller is gone)."""

        def ended() -> dict[str, Any] | None:
            job = self.job(jid)
            if job["state"] in ("starting", "running"):
                return None
            return job if not alive(job["controller_pid"]) else None

        try:
            return wait_for(ended, f"job {jid} to end", timeout)
        except AssertionError:
            raise AssertionError(
                f"job {jid} did not end: log {self.log(jid)[-2000:]!r} "
                f"controller {self.controller_log(jid)[-2000:]!r}"
            ) from None

    def wait_log(self, jid: str, pattern: str, count: int = 1) -> str:
        """Wait until the job's log has ``count`` lines matching ``pattern``."""
        rx = re.compile(pattern)

        def enough() -> str | None:
            text = self.log(jid)
            if len([ln for ln in text.splitlines() if rx.search(ln)]) >= count:
                return text
            job = self.job(jid)
            if job["state"] not in ("starting", "running"):
                raise AssertionError(
                    f"job {jid} ended ({job['status']}) before its log had {count} lines "
                    f"matching {pattern!r}: {text[-2000:]!r} {self.controller_log(jid)[-2000:]!r}"
                )
            return None

        return wait_for(enough, f"{count} lines matching {pattern!r} in job {jid}'s log")

    def wait_launches(self, jid: str, count: int) -> None:
        """Wait until the job's controller has served ``count`` kernel launches."""

        def enough() -> bool:
            live = self.inspect(jid).get("live") or {}
            return int((live.get("dispatcher") or {}).get("launches", 0)) >= count

        wait_for(enough, f"job {jid} to launch {count} kernels")

    def kill_all(self) -> None:
        """Kill every job still running in this state directory (test clean-up)."""
        with contextlib.suppress(Exception):
            for jid, job in self.ps().items():
                if job["state"] in ("starting", "running"):
                    self("job", "kill", jid, timeout=60)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cedana: error: ")
    return lines[0]


def fake_libdir() -> Path:
    from cedana_gpu import paths

    return paths.fake_libdir()


@functools.cache
def run_direct(*args: str) -> tuple[str, ...]:
    """The output lines of a sample run directly on the fake driver (no cedana), cached."""
    out = subprocess.run(
        [sys.executable, *args],
        env=clean_env(Path("/nonexistent"), LD_LIBRARY_PATH=str(fake_libdir())),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return tuple(out.stdout.splitlines())


def without_notes(text: str) -> list[str]:
    """Log lines, minus cedana's own notes."""
    return [ln for ln in text.splitlines() if not ln.startswith(("cedana:", "cedana-gpu:"))]


def checksum_line(lines: list[str] | tuple[str, ...]) -> str:
    found = [ln for ln in lines if ln.startswith("checksum: ")]
    assert found, lines[-20:]
    return found[-1]


def segment_leftovers(*jids: str) -> list[Path]:
    """Segments, pinned files and per-job /dev/shm directories of these jobs that exist."""
    shm = Path("/dev/shm")
    found: list[Path] = []
    for jid in jids:
        found += list(shm.glob(f"cedana-gpu.{jid}*"))
        per_job = shm / "cedana-gpu.d" / jid
        if per_job.exists():
            found.append(per_job)
    return found


def native_ready() -> Path:
    """The native directory; fail (not skip) when its parts are missing: the suite needs them."""
    from cedana_gpu import paths
    from cedana_gpu.controller import native

    try:
        d = paths.native_dir()
    except paths.NativeNotBuilt as e:
        pytest.fail(str(e))
    for f in (
        d / "controller" / "libcedana-gpu-controller.so",
        d / "intercept" / "libcedana-gpu.so",
        d / "intercept" / "shim" / "libcuda.so.1",
        d / "fake" / "libcuda.so.1",
    ):
        if not f.exists():
            pytest.fail(f"{f} does not exist: build and install the native parts first")
    lib = native.load_library()
    for name in ("cgc_checksum", "cgc_regions", "cgc_read_device", "cgc_export_state"):
        if not hasattr(lib, name):
            pytest.fail(f"the dispatcher has no {name}: rebuild with 'make setup'")
    return d


def exec_gpu_args(jid: str, *cmd: str) -> list[str]:
    """``cedana exec`` of ``cmd`` as GPU job ``jid`` on the fake driver, attached."""
    return ["exec", "--gpu", "--gpu-driver", "fake", "--jid", jid, "--attach", "--", *cmd]


def kill_pid(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def copy_tree(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


# Runs the real CRIU; once a dump has seized the job (or a restore has
# started forking it), SIGKILLs the process named by $CEDANA_TEST_KILL:
# "criu" (CRIU itself) or "client" (the process that started this script,
# its parent: 'cedana dump', or the restoring controller; CRIU then goes on alone).
CRIU_KILLER = """\
#!/bin/sh
real="$CEDANA_TEST_REAL_CRIU"
case "$1" in
    dump) mark="Seized task" ;;
    restore) mark="Forking task" ;;
    *) exec "$real" "$@" ;;
esac
log=""
prev=""
for a in "$@"; do
    [ "$prev" = "--log-file" ] && log="$a"
    prev="$a"
done
"$real" "$@" -v4 &
pid=$!
victim=$pid
[ "$CEDANA_TEST_KILL" = client ] && victim=$PPID
while kill -0 "$pid" 2>/dev/null; do
    if grep -q "$mark" "$log" 2>/dev/null; then
        kill -9 "$victim"
        break
    fi
done
wait "$pid"
"""


def criu_killer(tmp_path: Path, victim: str) -> dict[str, str]:
    """The environment of a 'cedana dump' (or restore) whose CRIU kills ``victim`` midway."""
    from cedana_gpu.cr.criu import criu_path

    wrapper = tmp_path / "criu"
    wrapper.write_text(CRIU_KILLER)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return {
        "CEDANA_CRIU": str(wrapper),
        "CEDANA_TEST_REAL_CRIU": str(criu_path()),
        "CEDANA_TEST_KILL": victim,
    }
